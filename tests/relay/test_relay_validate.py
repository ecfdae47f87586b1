"""The checks on a node's image: size cap, real decode, format, dimensions; previews."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from talos_gateway.relay.fairqueue import FairQueue
from talos_gateway.relay.pngcheck import SIGNATURE, BrokenPng, check_plain_png
from talos_gateway.relay.validate import InvalidResult, check_image, check_preview

CAP = 24 * 1024 * 1024
PIXELS = 1216 * 1216


def encode(width: int, height: int, fmt: str, frames: int = 1) -> bytes:
    buf = io.BytesIO()
    images = [Image.new("RGB", (width, height), (i * 40, 80, 120)) for i in range(frames)]
    if frames > 1:
        images[0].save(buf, format=fmt, save_all=True, append_images=images[1:])
    else:
        images[0].save(buf, format=fmt)
    return buf.getvalue()


def reason(data: bytes, fmt: str = "png", width: int = 64, height: int = 64, **kw: int) -> str:
    with pytest.raises(InvalidResult) as bad:
        check_image(data, fmt, width, height, max_bytes=kw.get("max_bytes", CAP), max_pixels=PIXELS)
    return bad.value.reason


@pytest.mark.parametrize("fmt", ["png", "webp", "jpeg"])
def test_a_whole_image_of_the_right_kind_passes(fmt: str) -> None:
    check_image(encode(832, 1216, fmt.upper()), fmt, 832, 1216, max_bytes=CAP, max_pixels=PIXELS)


def test_wrong_size_format_and_garbage_fail() -> None:
    assert reason(encode(64, 32, "PNG")) == "size"
    assert reason(encode(64, 64, "JPEG"), "png") in ("format", "undecodable")
    assert reason(b"\x89PNG\r\n\x1a\n" + b"\0" * 100) == "undecodable"
    assert reason(b"") == "empty"
    assert reason(encode(64, 64, "PNG"), "gif") == "format"


def test_a_truncated_image_fails_on_decode_not_on_its_header() -> None:
    noisy = Image.frombytes("RGB", (256, 256), bytes(range(256)) * 768)
    buf = io.BytesIO()
    noisy.save(buf, format="PNG")
    data = buf.getvalue()
    assert reason(data[: len(data) // 2], width=256, height=256) == "undecodable"


def test_over_the_byte_cap_is_refused_before_decoding() -> None:
    assert reason(encode(64, 64, "PNG"), max_bytes=10) == "too_large"


def test_a_pixel_bomb_is_refused_from_its_header() -> None:
    # A PNG header claiming 60000x60000 with almost no data: never expanded.
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )
    assert reason(bomb, width=1024, height=1024) in ("size", "undecodable")
    # And a requested size over the pixel cap is refused outright.
    assert reason(bomb, width=60000, height=60000) == "too_many_pixels"


def test_an_animated_image_is_refused() -> None:
    assert reason(encode(64, 64, "WEBP", frames=3), "webp") == "animated"


def test_previews_must_be_small_jpegs() -> None:
    small = encode(32, 32, "JPEG")
    assert check_preview(small, max_bytes=100_000)
    assert not check_preview(small, max_bytes=10)
    assert not check_preview(encode(32, 32, "PNG"), max_bytes=100_000)
    assert not check_preview(encode(1024, 1024, "JPEG"), max_bytes=10_000_000)
    assert not check_preview(b"\xff\xd8\xff" + b"junk", max_bytes=100_000)


class Item:
    def __init__(self, account_id: str, name: str) -> None:
        self.account_id = account_id
        self.name = name


def test_the_fair_queue_serves_accounts_in_turn() -> None:
    queue: FairQueue[Item] = FairQueue()
    for i in range(4):
        queue.push(Item("a", f"a{i}"))
    queue.push(Item("b", "b0"))
    queue.push(Item("c", "c0"))
    queue.push(Item("b", "b1"))
    assert [i.name for i in queue.in_order()] == ["a0", "b0", "c0", "a1", "b1", "a2", "a3"]
    served: list[str] = []
    queue.dispatch(lambda item: served.append(item.name) or True, lambda: len(served) < 5)
    assert served == ["a0", "b0", "c0", "a1", "b1"]
    assert len(queue) == 2 and queue.count("a") == 2 and queue.count("b") == 0
    # A retried job goes to the front of its own account's line.
    retried = Item("a", "again")
    queue.push(retried, front=True)
    assert [i.name for i in queue.in_order()] == ["again", "a2", "a3"]
    assert queue.remove(retried) and not queue.remove(retried)
    # An account whose head cannot be placed does not block the others.
    queue.push(Item("d", "d0"))
    placed: list[str] = []
    queue.dispatch(lambda item: item.account_id == "d" and not placed.append(item.name), lambda: True)
    assert placed == ["d0"] and [i.name for i in queue.in_order()] == ["a2", "a3"]


# -- the plain-PNG check: as strict as a full decode, never laxer ---------------------------
def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(width: int, height: int, rows: bytes) -> bytes:
    """An 8-bit RGB PNG assembled by hand from raw rows (filter byte + pixels)."""
    return _png_of_stream(width, height, zlib.compress(rows))


def _png_of_stream(width: int, height: int, stream: bytes) -> bytes:
    return (
        SIGNATURE
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + _chunk(b"IDAT", stream)
        + _chunk(b"IEND", b"")
    )


def _rows(width: int, height: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, 3 * width), dtype=np.uint8)
    filters = rng.integers(0, 5, (height, 1), dtype=np.uint8)
    return np.hstack([filters, pixels]).tobytes()


def _pillow_accepts(data: bytes, width: int, height: int) -> bool:
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            image.load()
            return image.size == (width, height) and image.mode == "RGB"
    except Exception:
        return False


def test_a_node_png_is_checked_without_decoding_and_other_kinds_go_to_pillow() -> None:
    noisy = np.random.default_rng(1).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy, "RGB").save(buf, format="PNG")
    assert check_plain_png(buf.getvalue(), 1024, 1024)
    assert check_plain_png(_png(7, 5, _rows(7, 5)), 7, 5)
    assert not check_plain_png(_png(7, 5, _rows(7, 5)), 5, 7)  # wrong size: Pillow names it
    for mode in ("RGBA", "L", "P", "I;16"):
        other = encode_mode(mode)
        assert not check_plain_png(other, 16, 16)
        check_image(other, "png", 16, 16, max_bytes=CAP, max_pixels=PIXELS)
    assert not check_plain_png(encode(16, 16, "PNG", frames=2), 16, 16)
    assert reason(encode(16, 16, "PNG", frames=2), width=16, height=16) == "animated"


def encode_mode(mode: str) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (16, 16)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("label", "build"),
    [
        ("bad filter byte", lambda rows: _png(7, 5, b"\x07" + rows[1:])),
        ("a row short", lambda rows: _png(7, 5, rows[:-1])),
        ("a byte too many", lambda rows: _png(7, 5, rows + b"\0")),
        ("zlib stream cut", lambda rows: _png_of_stream(7, 5, zlib.compress(rows)[:-6])),
        ("garbage after the stream", lambda rows: _png_of_stream(7, 5, zlib.compress(rows) + b"junk")),
        ("not zlib at all", lambda rows: _png_of_stream(7, 5, rows)),
        ("no IEND", lambda rows: _png(7, 5, rows)[:-12]),
        (
            "a second IHDR",
            lambda rows: _png(7, 5, rows)[:33] + _png(5, 7, rows)[8:33] + _png(7, 5, rows)[33:],
        ),
    ],
)
def test_broken_plain_pngs_fail_as_undecodable(label: str, build: Callable[[bytes], bytes]) -> None:
    assert reason(build(_rows(7, 5)), width=7, height=5) == "undecodable", label


def test_a_flipped_bit_anywhere_is_refused() -> None:
    good = _png(7, 5, _rows(7, 5))
    check_image(good, "png", 7, 5, max_bytes=CAP, max_pixels=PIXELS)
    for at in range(8, len(good)):
        bad = bytearray(good)
        bad[at] ^= 0x10
        assert reason(bytes(bad), width=7, height=5) in ("undecodable", "size", "format"), at


@settings(max_examples=300, deadline=None)
@given(
    width=st.integers(1, 12),
    height=st.integers(1, 12),
    seed=st.integers(0, 2**16),
    cuts=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=3),
    fix_crc=st.booleans(),
)
def test_the_plain_png_check_is_never_laxer_than_a_full_decode(
    width: int, height: int, seed: int, cuts: list[tuple[int, int]], fix_crc: bool
) -> None:
    rows = bytearray(_rows(width, height, seed))
    compressed = bytearray(zlib.compress(bytes(rows)))
    for at, value in cuts:  # damage the image data itself, then (maybe) give it a valid CRC
        compressed[at % len(compressed)] = value
    data = _png_of_stream(width, height, bytes(compressed))
    if cuts and not fix_crc:  # zero the IDAT chunk's CRC (IEND's 12 bytes follow it)
        data = data[:-16] + bytes(4) + data[-12:]
    try:
        accepted = check_plain_png(data, width, height)
    except BrokenPng:
        accepted = False
    if accepted:
        assert _pillow_accepts(data, width, height)
    if not cuts:
        assert accepted
