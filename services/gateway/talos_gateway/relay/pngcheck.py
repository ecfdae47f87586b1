"""A complete check of a plain PNG without turning it into pixels.

Render nodes send 8-bit RGB, non-interlaced PNGs. For that kind, decoding can fail in exactly
these ways: a broken chunk (length, CRC, order), a zlib stream that is corrupt, ends early or
carries the wrong amount of data, or a row whose filter type is not 0-4. Unfiltering itself
cannot fail: every byte value is a valid pixel. So checking those things is as strict as a full
decode (stricter: Pillow skips the CRCs of IDAT chunks) at a third of its cost, because the
inflate (ISA-L) is the only work done per byte and no pixel array is built.

Any other kind of PNG (palette, alpha, 16-bit, interlaced, animated, unknown critical chunks)
is not this module's business: :func:`check_plain_png` answers False and the caller decodes it
in full.
"""

from __future__ import annotations

import zlib

import numpy as np
from isal import isal_zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_RGB8 = (8, 2, 0, 0, 0)  # bit depth, colour type (truecolour), compression, filter, interlace
_ANIMATION = (b"acTL", b"fcTL", b"fdAT")
_MAX_CHUNK = 2**31 - 1


class BrokenPng(ValueError):
    """The bytes claim to be a plain PNG and are not a whole, valid one."""


def _be32(data: memoryview, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "big")


def check_plain_png(data: bytes, width: int, height: int) -> bool:
    """True when ``data`` is a whole, valid 8-bit RGB non-interlaced PNG of ``width`` x ``height``
    (the caller checked the size against its pixel cap first); False when it is a PNG of
    another kind or size, for the caller's full decode to judge; raises :class:`BrokenPng`."""
    view = memoryview(data)
    if bytes(view[:8]) != SIGNATURE or len(view) < 8 + 25:
        return False
    if _be32(view, 8) != 13 or bytes(view[12:16]) != b"IHDR":
        return False
    header = view[16:29]
    if (_be32(header, 0), _be32(header, 4)) != (width, height) or tuple(header[8:13]) != _RGB8:
        return False
    idat: list[memoryview] = []
    pos, last = 8, b""
    while True:
        if pos + 12 > len(view):
            raise BrokenPng("truncated chunk")
        length = _be32(view, pos)
        kind = bytes(view[pos + 4 : pos + 8])
        end = pos + 12 + length
        if length > _MAX_CHUNK or end > len(view):
            raise BrokenPng("truncated chunk")
        if zlib.crc32(view[pos + 4 : pos + 8 + length]) != _be32(view, pos + 8 + length):
            raise BrokenPng("chunk CRC mismatch")
        if kind in _ANIMATION or (kind[0] < 0x61 and kind not in (b"IHDR", b"IDAT", b"IEND", b"PLTE")):
            return False  # animated, or a critical chunk we do not know: the full decoder judges
        if kind == b"IHDR" and pos != 8:
            raise BrokenPng("a second IHDR")
        if kind == b"IDAT":
            if idat and last != b"IDAT":
                raise BrokenPng("IDAT chunks are not consecutive")
            idat.append(view[pos + 8 : pos + 8 + length])
        last, pos = kind, end
        if kind == b"IEND":
            break
    if not idat:
        raise BrokenPng("no image data")
    row = 1 + 3 * width
    expected = row * height
    inflater = isal_zlib.decompressobj()
    try:
        # One byte more than a whole image may hold: anything longer is refused unexpanded.
        raw = inflater.decompress(b"".join(idat), expected + 1)
    except Exception:  # isal_zlib.error, which its type stubs declare as an instance
        raise BrokenPng("corrupt image data") from None
    if len(raw) != expected or not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
        raise BrokenPng("image data of the wrong length")
    if np.frombuffer(raw, dtype=np.uint8)[::row].max() > 4:
        raise BrokenPng("unknown row filter")
    return True
