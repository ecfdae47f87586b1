"""Untrusted image bytes to 8-bit RGB, with every size cap checked before pixels are decoded.

Only PNG, JPEG and WebP are opened (no other Pillow decoder is ever reached). The header's
width and height are checked against the pixel cap before ``load()``, so a decompression
bomb is refused without inflating it. Truncated or corrupt files, animations, and anything
Pillow cannot read end as :class:`ImageRejected`, never as an exception that escapes or as an
unchecked pass. 16-bit images are scaled to 8 bits (not clipped). An image with transparency
is returned twice, composited over white and over black, because a viewer shows one of them
and colour hidden under a transparent pixel must not decide the verdict.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import pyspng
from PIL import Image, ImageOps, UnidentifiedImageError

UNDECODABLE = "undecodable"
TOO_LARGE = "too_large"
FORMATS = ("PNG", "JPEG", "WEBP")

# Our own cap (checked from the header) is the authority; Pillow's warning would only repeat it.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


class ImageRejected(Exception):
    """The bytes are not an image this service will classify."""

    def __init__(self, category: str, reason: str) -> None:
        super().__init__(f"{category}: {reason}")
        self.category = category
        self.reason = reason


@dataclass(frozen=True)
class Decoded:
    """The image as a viewer could see it: one RGB view, or two for a translucent image."""

    views: tuple[Image.Image, ...]
    width: int
    height: int
    format: str


def set_pixel_cap(max_pixels: int) -> None:
    """Pillow's own bomb check, as a second line behind ours (process-wide)."""
    Image.MAX_IMAGE_PIXELS = max_pixels


def decode(data: bytes, *, max_pixels: int, max_bytes: int) -> Decoded:
    if not data:
        raise ImageRejected(UNDECODABLE, "empty")
    if len(data) > max_bytes:
        raise ImageRejected(TOO_LARGE, "too_many_bytes")
    try:
        # No context manager: closing would free the decoded pixels we return.
        img = Image.open(io.BytesIO(data), formats=FORMATS)
        width, height = img.size
        if width < 1 or height < 1:
            raise ImageRejected(UNDECODABLE, "empty")
        if width * height > max_pixels:
            raise ImageRejected(TOO_LARGE, "too_many_pixels")
        if getattr(img, "n_frames", 1) != 1:
            raise ImageRejected(UNDECODABLE, "animated")
        fmt = img.format or "unknown"
        fast = _plain_png(data, img)
        if fast is not None:
            views: tuple[Image.Image, ...] = (fast,)
        else:
            img.load()
            views = _to_rgb(img)
    except ImageRejected:
        raise
    except Image.DecompressionBombError:
        raise ImageRejected(TOO_LARGE, "too_many_pixels") from None
    except UnidentifiedImageError:
        raise ImageRejected(UNDECODABLE, "not_an_image") from None
    except (OSError, EOFError):
        raise ImageRejected(UNDECODABLE, "truncated_or_corrupt") from None
    except MemoryError:
        raise ImageRejected(TOO_LARGE, "out_of_memory") from None
    except Exception:
        raise ImageRejected(UNDECODABLE, "corrupt") from None
    return Decoded(views, width, height, fmt)


def _plain_png(data: bytes, header: Image.Image) -> Image.Image | None:
    """An 8-bit RGB PNG (what render nodes send) decoded by libspng, about twice as fast as
    Pillow's decoder; None for any other kind, which Pillow decodes. Only called once the
    header passed the pixel cap. libspng checks every CRC and fails on truncated data."""
    if header.format != "PNG" or header.mode != "RGB":
        return None
    try:
        pixels = pyspng.load(data)
    except Exception:
        raise ImageRejected(UNDECODABLE, "truncated_or_corrupt") from None
    if pixels.dtype != np.uint8 or pixels.shape != (header.height, header.width, 3):
        return None
    return Image.fromarray(pixels, mode="RGB")


def _to_rgb(img: Image.Image) -> tuple[Image.Image, ...]:
    if img.format in ("JPEG", "WEBP") and img.getexif().get(0x0112, 1) != 1:
        img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode == "RGB":
        return (img,)
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return (_wide_to_rgb(img),)
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _composites(img.convert("RGBA"))
    return (img.convert("RGB"),)


def _wide_to_rgb(img: Image.Image) -> Image.Image:
    """16-bit (or 32-bit integer) grey scaled to 8 bits; float grey read as 0..1."""
    arr = np.asarray(img)
    if img.mode == "F":
        scaled = np.clip(np.nan_to_num(arr) * 255.0, 0, 255)
    else:
        scaled = np.clip(arr.astype(np.int64), 0, 65535) >> 8
    grey = Image.fromarray(scaled.astype(np.uint8), mode="L")
    return grey.convert("RGB")


def _composites(rgba: Image.Image) -> tuple[Image.Image, ...]:
    alpha = rgba.getchannel("A")
    low, _ = alpha.getextrema()
    if low == 255:
        return (rgba.convert("RGB"),)
    views = []
    for background in ((255, 255, 255), (0, 0, 0)):
        canvas = Image.new("RGB", rgba.size, background)
        canvas.paste(rgba, mask=alpha)
        views.append(canvas)
    return tuple(views)
