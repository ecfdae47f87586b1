"""Checks an image a render node sent back before anyone sees it.

A node is run by a stranger, so its result is untrusted input: the bytes must be under a size
cap, must be the requested format, must declare exactly the requested width and height, and
must really decode (the whole image, not just its header). The decode runs in a thread (it
takes milliseconds per megapixel) and the pixel count is checked from the header before any
pixel is decoded, so a decompression bomb is refused without being expanded. The plain RGB PNGs
nodes send are checked by :mod:`talos_gateway.relay.pngcheck` (every chunk, CRC, byte of image
data and row filter, without building pixels); every other image is decoded in full by Pillow.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image

from talos_gateway.relay.pngcheck import BrokenPng, check_plain_png

# The names Pillow gives the formats a node may return.
PIL_FORMATS = {"png": "PNG", "webp": "WEBP", "jpeg": "JPEG"}
# JPEG starts with SOI and a marker; previews must at least look like one.
JPEG_MAGIC = b"\xff\xd8\xff"


class InvalidResult(ValueError):
    """The node's result is not the image that was asked for; ``reason`` is a short tag."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def check_image(
    data: bytes,
    output_format: str,
    width: int,
    height: int,
    *,
    max_bytes: int,
    max_pixels: int,
) -> None:
    """Raises :class:`InvalidResult` unless ``data`` is a whole image of that format and size.

    Blocking (it decodes every pixel): call it from a worker thread.
    """
    if len(data) == 0:
        raise InvalidResult("empty", "no image bytes")
    if len(data) > max_bytes:
        raise InvalidResult("too_large", f"{len(data)} bytes over the cap of {max_bytes}")
    expected = PIL_FORMATS.get(output_format)
    if expected is None:
        raise InvalidResult("format", f"unknown output format {output_format!r}")
    if width * height > max_pixels:
        raise InvalidResult("too_many_pixels", f"{width}x{height} is over the pixel cap")
    if expected == "PNG":
        try:
            if check_plain_png(data, width, height):
                return
        except BrokenPng as exc:
            raise InvalidResult("undecodable", str(exc)) from None
    try:
        with warnings.catch_warnings():
            # Pillow warns (then raises) on huge images; our own cap below is stricter.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[expected]) as image:
                if image.format != expected:
                    raise InvalidResult("format", f"got {image.format}, wanted {expected}")
                if image.size != (width, height):
                    raise InvalidResult(
                        "size", f"got {image.size[0]}x{image.size[1]}, wanted {width}x{height}"
                    )
                if getattr(image, "n_frames", 1) != 1:
                    raise InvalidResult("animated", "more than one frame")
                # The header passed: now decode every pixel (truncated or corrupt data fails here).
                image.load()
    except InvalidResult:
        raise
    except (
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        # UnidentifiedImageError is an OSError; truncated data and bad CRCs too.
        raise InvalidResult("undecodable", type(exc).__name__) from None
    except Exception as exc:
        raise InvalidResult("undecodable", type(exc).__name__) from None


def looks_like_jpeg(data: bytes) -> bool:
    """A cheap check for previews (they are shown as-is to the person who asked)."""
    return data.startswith(JPEG_MAGIC)


def check_preview(data: bytes, *, max_bytes: int, max_side: int = 512) -> bool:
    """True for a small JPEG (its header read, not its pixels: previews must stay cheap)."""
    if not data or len(data) > max_bytes or not looks_like_jpeg(data):
        return False
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as image:
            w, h = image.size
    except Exception:
        return False
    return 0 < w <= max_side and 0 < h <= max_side
