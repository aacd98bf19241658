"""glibc malloc settings for a long-running daemon whose big buffers come and go.

Each scrape builds a few MiB of exposition text on an HTTP thread, and redis-py's read
buffer grows and shrinks during floods. glibc gives every new thread a malloc arena of its
own (up to 8 per core) and, after the first big block is freed, raises its mmap threshold
so that later big blocks come from those arenas, where freed memory mostly stays in RSS.
bench/memory.py saw RSS climb by about 12 MiB from one scrape of 40,000 series to the next
for that reason alone. A fixed mmap threshold (blocks from 256 KiB up are mapped and
unmapped, returned to the system when freed) and two arenas keep RSS at what is in use.

Elsewhere (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 256 * 1024
ARENAS = 2


def tune_malloc() -> bool:
    """Apply the settings; True when glibc accepted them."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    accepted = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_ARENA_MAX, ARENAS)
    )
    log.debug("malloc tuning %s", "applied" if accepted else "not available")
    return accepted
