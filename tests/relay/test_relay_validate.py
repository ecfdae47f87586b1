"""The checks on a node's image: size cap, real decode, format, dimensions; previews."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from talos_gateway.relay.fairqueue import FairQueue
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
