"""Run the exporter daemon with memory probes (bench/drift.py starts it; never in production).

``python bench/drift_probe.py OUTDIR INTERVAL [--tracemalloc FRAMES] -- EXPORTER ARGS...``:
starts tracemalloc (when asked) before the exporter is imported, then every INTERVAL seconds
writes OUTDIR/probe-N.json (RSS, tracemalloc's traced bytes and its own overhead, glibc's
``mallinfo2``, CPython's pymalloc arenas from ``sys._debugmallocstats``, object counts by
type) and, with tracemalloc, OUTDIR/snap-N.pickle; then runs the exporter's own ``main``.
"""

from __future__ import annotations

import collections
import ctypes
import gc
import json
import os
import re
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",  # non-mmapped bytes obtained from the system (brk heap + arenas)
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",  # mmapped bytes (blocks over the mmap threshold)
            "usmblks",
            "fsmblks",
            "uordblks",  # bytes in use (non-mmapped)
            "fordblks",  # bytes free inside the heap (fragmentation when it grows)
            "keepcost",
        )
    ]


def mallinfo() -> dict[str, int]:
    libc = ctypes.CDLL(None)
    fn = libc.mallinfo2
    fn.restype = MallInfo2
    info = fn()
    return {field[0]: int(getattr(info, field[0])) for field in MallInfo2._fields_}


_STAT = re.compile(
    r"^(# arenas allocated current|# arenas highwater mark|# bytes in allocated blocks"
    r"|# bytes in available blocks|# bytes lost to pool headers"
    r"|# bytes lost to quantization|# bytes lost to arena alignment)\s*=\s*([\d,]+)"
)


def pymalloc() -> dict[str, int]:
    """sys._debugmallocstats (written to fd 2) as numbers."""
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = _STAT.match(line)
        if m:
            out[m.group(1).lstrip("# ")] = int(m.group(2).replace(",", ""))
    return out


def status_kib() -> dict[str, int]:
    """VmRSS and its parts: RssAnon (the heap, arenas, stacks), RssFile (mapped files:
    libraries, which fault in as code paths are first used), RssShmem."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM", "Threads"):
                out[key] = int(line.split()[1])
    return out


def probe_loop(outdir: Path, interval: float, tracing: bool) -> None:
    n = 0
    started = time.monotonic()
    while True:
        time.sleep(interval)
        n += 1
        record: dict[str, object] = {"n": n, "seconds": time.monotonic() - started}
        status = status_kib()
        record["rss_kib"] = status["VmRSS"]
        record["status_kib"] = status
        record["mallinfo2"] = mallinfo()
        record["pymalloc"] = pymalloc()
        objects = gc.get_objects()
        counts = collections.Counter(type(o).__name__ for o in objects)
        # Native histograms' bucket runs widen as rarer values arrive (up to max_buckets).
        runs = [o for o in objects if type(o).__name__ == "BucketRun"]
        record["bucket_runs"] = len(runs)
        record["bucket_run_slots"] = sum(len(r.counts) for r in runs)
        record["bucket_run_bytes"] = sum(sys.getsizeof(r.counts) for r in runs)
        del objects, runs
        record["gc_objects"] = sum(counts.values())
        record["top_types"] = dict(counts)
        if tracing:
            current, _ = tracemalloc.get_traced_memory()
            record["traced"] = current
            record["tracemalloc_overhead"] = tracemalloc.get_tracemalloc_memory()
            tracemalloc.take_snapshot().dump(str(outdir / f"snap-{n}.pickle"))
        (outdir / f"probe-{n}.json").write_text(json.dumps(record))


def main() -> None:
    args = sys.argv[1:]
    split = args.index("--")
    own, rest = args[:split], args[split + 1 :]
    outdir, interval = Path(own[0]), float(own[1])
    frames = int(own[own.index("--tracemalloc") + 1]) if "--tracemalloc" in own else 0
    if frames:
        tracemalloc.start(frames)
    outdir.mkdir(parents=True, exist_ok=True)
    threading.Thread(
        target=probe_loop, args=(outdir, interval, bool(frames)), daemon=True, name="probe"
    ).start()
    other = os.environ.get("DRIFT_EXPORTER_PATH")
    if other:  # another checkout's exporter/ (an older commit, to compare), not the venv's
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f)]
        sys.path.insert(0, other)
    from exporter.cli import main as exporter_main

    print(f"exporter from {sys.modules['exporter.cli'].__file__}", file=sys.stderr)

    sys.argv = ["celery-metrics-exporter", *rest]
    exporter_main()


if __name__ == "__main__":
    main()
