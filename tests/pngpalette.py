"""A PNG screenshot made small, with the standard library only (no pngquant,
optipng nor Pillow here): its pixels mapped to a palette of at most 256 colours
(the most frequent; every other colour to the nearest of them: a page of flat
colours loses only some anti-aliasing), written 8-bit indexed with zlib level 9.

    python3 tests/pngpalette.py IN.png OUT.png

Used by tests/browser.py for the screenshots the README shows.
"""

from __future__ import annotations

import struct
import sys
import zlib
from collections import Counter
from typing import List, Tuple

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunks(data: bytes):
    assert data[:8] == SIGNATURE, "not a PNG"
    at = 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        yield kind, data[at + 8:at + 8 + length]
        at += 12 + length


def read_rgb(data: bytes) -> Tuple[int, int, List[bytes]]:
    """(width, height, rows of RGB bytes) of an 8-bit RGB or RGBA, non-interlaced PNG."""
    idat = b""
    for kind, body in _chunks(data):
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, "only 8-bit RGB(A), not interlaced"
        elif kind == b"IDAT":
            idat += body
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * channels
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + ((left + up) >> 1)) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        previous = line
        rows.append(bytes(line) if channels == 3 else bytes(b for j in range(0, stride, 4) for b in line[j:j + 3]))
    return width, height, rows


def write_indexed(width: int, height: int, rows: List[bytes]) -> bytes:
    counts = Counter(row[i:i + 3] for row in rows for i in range(0, len(row), 3))
    palette = [colour for colour, _ in counts.most_common(256)]
    index = {colour: i for i, colour in enumerate(palette)}

    def nearest(colour: bytes) -> int:
        return min(range(len(palette)), key=lambda i: sum((a - b) ** 2 for a, b in zip(colour, palette[i])))

    for colour in counts:
        if colour not in index:
            index[colour] = nearest(colour)
    raw = b"".join(b"\x00" + bytes(index[row[i:i + 3]] for i in range(0, len(row), 3)) for row in rows)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0))
            + chunk(b"PLTE", b"".join(palette)) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def shrink(source: str, target: str) -> None:
    with open(source, "rb") as image:
        width, height, rows = read_rgb(image.read())
    with open(target, "wb") as out:
        out.write(write_indexed(width, height, rows))


if __name__ == "__main__":
    shrink(sys.argv[1], sys.argv[2])
