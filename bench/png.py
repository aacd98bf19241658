"""A line chart as a PNG, in pure Python (zlib only): the soak's RSS curve, no plotting
library needed by the bench.

Digits only for the tick labels (a 3x5 pixel font, drawn at 2x); the caption in
bench/RESULTS.md says what the axes are.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

Color = tuple[int, int, int]

_FONT = {  # 3x5 glyphs, one string of 15 pixels per character, row by row
    "0": "111101101101111",
    "1": "010110010010111",
    "2": "111001111100111",
    "3": "111001111001111",
    "4": "101101111001001",
    "5": "111100111001111",
    "6": "111100111101111",
    "7": "111001001001001",
    "8": "111101111101111",
    "9": "111101111001111",
    ".": "000000000000010",
    "-": "000000111000000",
    "+": "000010111010000",
    " ": "000000000000000",
}


class Canvas:
    def __init__(self, width: int, height: int, background: Color = (255, 255, 255)) -> None:
        self.width = width
        self.height = height
        self.pixels = bytearray(bytes(background) * (width * height))

    def dot(self, x: int, y: int, color: Color) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = 3 * (y * self.width + x)
            self.pixels[i : i + 3] = bytes(color)

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        for y in range(max(0, min(y0, y1)), min(self.height, max(y0, y1) + 1)):
            for x in range(max(0, min(x0, x1)), min(self.width, max(x0, x1) + 1)):
                self.dot(x, y, color)

    def line(self, x0: int, y0: int, x1: int, y1: int, color: Color, thick: int = 1) -> None:
        steps = max(abs(x1 - x0), abs(y1 - y0), 1)
        for s in range(steps + 1):
            x = round(x0 + (x1 - x0) * s / steps)
            y = round(y0 + (y1 - y0) * s / steps)
            for d in range(thick):
                self.dot(x, y + d, color)

    def text(self, x: int, y: int, text: str, color: Color, scale: int = 2) -> None:
        for k, ch in enumerate(text):
            glyph = _FONT.get(ch, _FONT[" "])
            for i, bit in enumerate(glyph):
                if bit == "1":
                    gx, gy = x + (k * 4 + i % 3) * scale, y + (i // 3) * scale
                    self.rect(gx, gy, gx + scale - 1, gy + scale - 1, color)

    def png(self) -> bytes:
        raw = b"".join(
            b"\x00" + bytes(self.pixels[3 * self.width * y : 3 * self.width * (y + 1)])
            for y in range(self.height)
        )

        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b"")
        )


def _ticks(lo: float, hi: float, count: int) -> list[float]:
    span = max(hi - lo, 1e-9)
    raw = span / count
    step = min(m * 10**e for e in range(-3, 7) for m in (1, 2, 5) if m * 10**e >= raw)
    first = (lo // step + 1) * step if lo % step else lo
    out = []
    v = first
    while v <= hi + 1e-9:
        out.append(round(v, 6))
        v += step
    return out


def line_chart(
    path: Path,
    points: Sequence[tuple[float, float]],
    shade_until: float | None = None,
    band: tuple[float, float] | None = None,
    width: int = 900,
    height: int = 420,
) -> None:
    """Write ``points`` (x, y) as a line chart: ``shade_until`` greys the x range before it
    (the warm-up), ``band`` (y0, y1) marks a horizontal band (the allowed RSS range)."""
    left, right, top, bottom = 70, 20, 20, 40
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    y_lo, y_hi = min(ys), max(ys)
    if band is not None:
        y_lo, y_hi = min(y_lo, band[0]), max(y_hi, band[1])
    pad = max((y_hi - y_lo) * 0.1, 0.5)
    y_lo, y_hi = y_lo - pad, y_hi + pad
    x_lo, x_hi = 0.0, max(xs[-1], 1e-9)
    canvas = Canvas(width, height)
    pw, ph = width - left - right, height - top - bottom

    def px(x: float) -> int:
        return left + round((x - x_lo) / (x_hi - x_lo) * pw)

    def py(y: float) -> int:
        return top + ph - round((y - y_lo) / (y_hi - y_lo) * ph)

    if shade_until is not None:
        canvas.rect(px(x_lo), top, px(min(shade_until, x_hi)), top + ph, (235, 235, 235))
    if band is not None:
        canvas.rect(left, py(band[1]), left + pw, py(band[0]), (214, 240, 214))
    grid, ink = (200, 200, 200), (60, 60, 60)
    for y in _ticks(y_lo, y_hi, 6):
        canvas.line(left, py(y), left + pw, py(y), grid)
        label = f"{y:g}"
        canvas.text(left - 8 - 8 * len(label), py(y) - 5, label, ink)
    for x in _ticks(x_lo, x_hi, 10):
        canvas.line(px(x), top, px(x), top + ph, grid)
        label = f"{x:g}"
        canvas.text(px(x) - 4 * len(label), top + ph + 8, label, ink)
    canvas.line(left, top, left, top + ph, ink)
    canvas.line(left, top + ph, left + pw, top + ph, ink)
    blue = (31, 90, 180)
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        canvas.line(px(x0), py(y0), px(x1), py(y1), blue, thick=2)
    path.write_bytes(canvas.png())
