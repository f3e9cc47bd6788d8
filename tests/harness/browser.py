"""Headless Chromium screenshots, and a small PNG decoder to look at them.

`screenshot(url)` renders a page the way a person's browser would (Debian's
`chromium`, no network but loopback, a fresh profile per call);
`decode_png()` gives the pixels, so a test can tell an empty or unstyled page
from a rendered one without an imaging library.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser")


def chromium_path() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(url: str, out: str | Path, width: int = 1280, height: int = 900,
               timeout: float = 60) -> Path:
    """Render `url` in headless Chromium and write a PNG screenshot to `out`."""
    binary = chromium_path()
    if binary is None:
        raise FileNotFoundError("chromium is not installed (apt-get install chromium)")
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        argv = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                f"--user-data-dir={profile}", f"--window-size={width},{height}",
                f"--screenshot={out}", url]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
    if p.returncode != 0 or not out.exists():
        raise RuntimeError(f"chromium screenshot of {url} failed (rc={p.returncode}):\n"
                           f"{p.stderr[-2000:]}")
    return out


@dataclass
class Image:
    width: int
    height: int
    pixels: list[tuple[int, int, int]]  # RGB, row by row

    def colors(self) -> dict[tuple[int, int, int], int]:
        counts: dict[tuple[int, int, int], int] = {}
        for px in self.pixels:
            counts[px] = counts.get(px, 0) + 1
        return counts

    def count_near(self, rgb: tuple[int, int, int], tolerance: int = 24) -> int:
        r0, g0, b0 = rgb
        return sum(1 for r, g, b in self.pixels
                   if abs(r - r0) <= tolerance and abs(g - g0) <= tolerance
                   and abs(b - b0) <= tolerance)

    def variance(self) -> float:
        lum = [(r * 299 + g * 587 + b * 114) / 1000 for r, g, b in self.pixels]
        mean = sum(lum) / len(lum)
        return sum((v - mean) ** 2 for v in lum) / len(lum)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def decode_png(path: str | Path) -> Image:
    """8-bit RGB/RGBA, non-interlaced PNGs (what Chromium writes)."""
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG")
    pos, idat = 8, []
    width = height = depth = ctype = interlace = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat.append(chunk)
        elif kind == b"IEND":
            break
    if depth != 8 or ctype not in (2, 6) or interlace:
        raise ValueError(f"{path}: unsupported PNG (depth {depth}, color type {ctype})")
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    prev = bytearray(stride)
    pixels: list[tuple[int, int, int]] = []
    i = 0
    for _ in range(height):
        ftype = raw[i]
        line = bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        if ftype == 1:
            for x in range(bpp, stride):
                line[x] = (line[x] + line[x - bpp]) & 0xFF
        elif ftype == 2:
            for x in range(stride):
                line[x] = (line[x] + prev[x]) & 0xFF
        elif ftype == 3:
            for x in range(stride):
                left = line[x - bpp] if x >= bpp else 0
                line[x] = (line[x] + ((left + prev[x]) >> 1)) & 0xFF
        elif ftype == 4:
            for x in range(stride):
                left = line[x - bpp] if x >= bpp else 0
                upleft = prev[x - bpp] if x >= bpp else 0
                line[x] = (line[x] + _paeth(left, prev[x], upleft)) & 0xFF
        pixels.extend(zip(line[0::bpp], line[1::bpp], line[2::bpp]))
        prev = line
    return Image(width, height, pixels)
