"""What a request may ask for: sizes, styles, output formats, quality levels, the price."""

from __future__ import annotations

from dataclasses import dataclass

PRICE_PER_IMAGE = 18
MODEL_ID = "aperture-hd"
IDEMPOTENCY_KEY_MAX_CHARS = 255
SEED_MAX = 4_294_967_295


# -- what a request may ask for ---------------------------------------------------------------


@dataclass(frozen=True)
class Size:
    id: str
    width: int
    height: int
    aspect_ratio: str


SIZES: tuple[Size, ...] = (
    Size("1024x1024", 1024, 1024, "square"),
    Size("832x1216", 832, 1216, "portrait"),
    Size("1216x832", 1216, 832, "landscape"),
)
SIZE_BY_ID: dict[str, Size] = {size.id: size for size in SIZES}
SIZE_BY_ASPECT: dict[str, Size] = {size.aspect_ratio: size for size in SIZES}
DEFAULT_SIZE = "1024x1024"
# The largest image a node may return, for caps that scale with it (relay, classifier).
MAX_PIXELS = max(size.width * size.height for size in SIZES)


@dataclass(frozen=True)
class Style:
    """A style preset as the public API names it; the gateway holds its prompt templates."""

    id: str
    name: str
    default_guidance: float


STYLES: tuple[Style, ...] = (
    # A lower guidance keeps contrast and saturation natural on SDXL-class models.
    Style("photo", "Photo", 5.0),
    Style("cinematic", "Cinematic", 6.0),
    Style("anime", "Anime", 7.0),
    Style("digital-art", "Digital art", 7.0),
    Style("3d", "3D render", 6.5),
)
STYLE_BY_ID: dict[str, Style] = {style.id: style for style in STYLES}
DEFAULT_STYLE = "photo"
# OpenAI's `style` values, mapped to the preset with the same intent.
STYLE_ALIASES: dict[str, str] = {"natural": "photo", "vivid": "cinematic"}

OUTPUT_FORMATS: tuple[str, ...] = ("png", "webp", "jpeg")
LOSSY_FORMATS: tuple[str, ...] = ("webp", "jpeg")

# OpenAI's `quality` levels as denoising steps; `auto` is the default step count.
QUALITY_STEPS: dict[str, int] = {
    "low": 15,
    "medium": 25,
    "auto": 30,
    "standard": 30,
    "high": 40,
    "hd": 40,
    "xhigh": 50,
    "max": 60,
}
