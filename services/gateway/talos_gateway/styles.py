"""Style presets, sizes, and the validation of a generation request (HTTP JSON and gRPC alike).

The gateway expands the style into the final prompt and negative prompt before anything is
checked or rendered: every preset is a template with a ``{prompt}`` slot plus its own negative
prompt, and every preset's negative prompt ends with one baseline anti-artifact negative. The
user's negative prompt is appended to the preset's. ``photo`` is the default and is tuned for a
real-photo look (plain camera language, lower guidance) rather than the over-processed look.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from talos_common.errors import TalosError
from talos_gateway.relay.contract import RenderSpec

PRICE_PER_IMAGE = 18
MODEL_ID = "aperture-hd"

PROMPT_MAX_CHARS = 2000
NEGATIVE_MAX_CHARS = 2000
STEPS_MIN, STEPS_MAX, STEPS_DEFAULT = 1, 60, 30
GUIDANCE_MIN, GUIDANCE_MAX = 1.0, 20.0
SEED_MIN, SEED_MAX = 0, 4_294_967_295
IDEMPOTENCY_KEY_MAX_CHARS = 255
OUTPUT_FORMATS = ("png", "webp", "jpeg")

# Kept free of words that a prompt check could read as a minor or a nudity context, also by
# the negative-prompt inversion ("adult", "mature", "old", "clothes", "dressed" are avoided).
BASELINE_NEGATIVE = (
    "lowres, blurry, out of focus, jpeg artifacts, compression artifacts, noise, watermark, "
    "signature, text, logo, frame, border, cropped, out of frame, duplicate, deformed, "
    "disfigured, bad anatomy, bad proportions, extra limbs, extra fingers, fused fingers, "
    "missing fingers, malformed hands, poorly drawn face, asymmetric eyes"
)


@dataclass(frozen=True)
class Style:
    id: str
    name: str
    prompt_template: str
    own_negative: str
    default_guidance: float

    @property
    def negative_prompt(self) -> str:
        """The preset's full negative prompt, baseline included."""
        return f"{self.own_negative}, {BASELINE_NEGATIVE}"

    def final_prompt(self, prompt: str) -> str:
        return self.prompt_template.replace("{prompt}", prompt)

    def final_negative(self, user_negative: str) -> str:
        if user_negative:
            return f"{self.negative_prompt}, {user_negative}"
        return self.negative_prompt


STYLES: dict[str, Style] = {
    style.id: style
    for style in (
        Style(
            id="photo",
            name="Photo",
            # Camera and light words a photographer would write; no "masterpiece, 8k, ultra
            # detailed" stacking, which pushes SDXL models to the glossy over-processed look.
            prompt_template=(
                "candid photograph of {prompt}, natural light, shot on a 35mm lens, "
                "realistic textures, true-to-life colors, subtle film grain, sharp focus"
            ),
            own_negative=(
                "illustration, painting, drawing, sketch, cartoon, anime, cgi, 3d render, "
                "plastic look, airbrushed, waxy, oversaturated, over-sharpened, hdr, overprocessed, "
                "oversmoothed, glossy, artificial lighting"
            ),
            # Lower guidance keeps contrast and saturation natural on SDXL-class models.
            default_guidance=5.0,
        ),
        Style(
            id="cinematic",
            name="Cinematic",
            prompt_template=(
                "cinematic film still of {prompt}, anamorphic lens, shallow depth of field, "
                "dramatic lighting, color graded, widescreen composition, film grain"
            ),
            own_negative="flat lighting, snapshot, amateur, cartoon, anime, illustration, oversaturated",
            default_guidance=6.0,
        ),
        Style(
            id="anime",
            name="Anime",
            prompt_template=(
                "anime illustration of {prompt}, clean line art, cel shading, vibrant colors, "
                "detailed background, key visual"
            ),
            own_negative="photo, photorealistic, realistic, 3d render, muddy colors, sketchy lines",
            default_guidance=7.0,
        ),
        Style(
            id="digital-art",
            name="Digital art",
            prompt_template=(
                "digital painting of {prompt}, concept art, painterly brushwork, rich colors, "
                "dramatic composition, highly detailed"
            ),
            own_negative="photo, photorealistic, flat colors, amateur, muddy colors",
            default_guidance=7.0,
        ),
        Style(
            id="3d",
            name="3D render",
            prompt_template=(
                "3d render of {prompt}, octane render, global illumination, soft shadows, "
                "physically based materials, studio lighting, high detail"
            ),
            own_negative="photo, painting, drawing, sketch, flat shading, low poly, grainy",
            default_guidance=6.5,
        ),
    )
}
DEFAULT_STYLE = "photo"


@dataclass(frozen=True)
class Size:
    id: str
    width: int
    height: int
    aspect_ratio: str


SIZES: dict[str, Size] = {
    size.id: size
    for size in (
        Size("1024x1024", 1024, 1024, "square"),
        Size("832x1216", 832, 1216, "portrait"),
        Size("1216x832", 1216, 832, "landscape"),
    )
}
DEFAULT_SIZE = "1024x1024"
ASPECT_RATIOS: dict[str, str] = {size.aspect_ratio: size.id for size in SIZES.values()}

# Every field the HTTP body may carry; anything else is refused by name.
TALOS_FIELDS = (
    "prompt",
    "negative_prompt",
    "style",
    "size",
    "aspect_ratio",
    "steps",
    "guidance",
    "seed",
    "nsfw",
    "output_format",
    "stream",
)
OPENAI_FIELDS = ("model", "n", "response_format", "user")
ALLOWED_FIELDS = frozenset(TALOS_FIELDS + OPENAI_FIELDS)


@dataclass(frozen=True)
class GenerationRequest:
    """A validated request, before the seed is drawn (so its hash identifies the body)."""

    prompt: str
    negative_prompt: str
    style: str
    size: str
    steps: int
    guidance: float
    seed: int | None
    nsfw: bool
    output_format: str

    @property
    def width(self) -> int:
        return SIZES[self.size].width

    @property
    def height(self) -> int:
        return SIZES[self.size].height

    def body_hash(self) -> str:
        """Identifies the request for Idempotency-Key checks; the only thing kept of it."""
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def spec(self, seed: int) -> RenderSpec:
        style = STYLES[self.style]
        return RenderSpec(
            prompt=style.final_prompt(self.prompt),
            negative_prompt=style.final_negative(self.negative_prompt),
            width=self.width,
            height=self.height,
            steps=self.steps,
            guidance=self.guidance,
            seed=seed,
            output_format=self.output_format,
        )


def random_seed() -> int:
    return secrets.randbelow(SEED_MAX + 1)


def _invalid(field: str, message: str) -> TalosError:
    return TalosError("invalid_request", message, field=field)


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    # JSON Schema counts 30.0 as an integer; so do we.
    return isinstance(value, float) and math.isfinite(value) and value.is_integer()


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _string(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _invalid(field, f"'{field}' must be a string")
    return value


def _choice(field: str, value: str, allowed: Mapping[str, Any] | tuple[str, ...]) -> str:
    if value not in allowed:
        options = ", ".join(allowed)
        raise _invalid(field, f"'{field}' must be one of: {options}")
    return value


def check_prompt_text(prompt: str, negative_prompt: str) -> tuple[str, str]:
    trimmed = prompt.strip()
    if not trimmed:
        raise _invalid("prompt", "'prompt' must not be empty")
    if len(trimmed) > PROMPT_MAX_CHARS:
        raise _invalid("prompt", f"'prompt' must be at most {PROMPT_MAX_CHARS} characters")
    negative = negative_prompt.strip()
    if len(negative) > NEGATIVE_MAX_CHARS:
        raise _invalid(
            "negative_prompt", f"'negative_prompt' must be at most {NEGATIVE_MAX_CHARS} characters"
        )
    return trimmed, negative


def resolve_size(size: str | None, aspect_ratio: str | None) -> str:
    if size is not None:
        _choice("size", size, SIZES)
    if aspect_ratio is not None:
        _choice("aspect_ratio", aspect_ratio, ASPECT_RATIOS)
    if size is not None and aspect_ratio is not None and SIZES[size].aspect_ratio != aspect_ratio:
        raise _invalid("aspect_ratio", f"'aspect_ratio' {aspect_ratio} disagrees with 'size' {size}")
    if size is not None:
        return size
    if aspect_ratio is not None:
        return ASPECT_RATIOS[aspect_ratio]
    return DEFAULT_SIZE


def check_steps(steps: int) -> int:
    if not STEPS_MIN <= steps <= STEPS_MAX:
        raise _invalid("steps", f"'steps' must be between {STEPS_MIN} and {STEPS_MAX}")
    return steps


def check_guidance(guidance: float) -> float:
    if not (math.isfinite(guidance) and GUIDANCE_MIN <= guidance <= GUIDANCE_MAX):
        raise _invalid("guidance", f"'guidance' must be between {GUIDANCE_MIN:g} and {GUIDANCE_MAX:g}")
    return float(guidance)


def check_seed(seed: int) -> int:
    if not SEED_MIN <= seed <= SEED_MAX:
        raise _invalid("seed", f"'seed' must be between {SEED_MIN} and {SEED_MAX}")
    return seed


def parse_json_request(body: Any) -> tuple[GenerationRequest, bool]:
    """Validates an HTTP JSON body; returns the request and its ``stream`` flag.

    Optional fields may be absent or null (meaning: use the default). Every violation is a
    ``TalosError('invalid_request')`` naming the field.
    """
    if not isinstance(body, dict):
        raise _invalid("body", "the request body must be a JSON object")
    for key in body:
        if key not in ALLOWED_FIELDS:
            raise _invalid(str(key), f"unknown field '{key}'")

    def get(field: str) -> Any:
        return body.get(field)

    if "prompt" not in body or body["prompt"] is None:
        raise _invalid("prompt", "'prompt' is required")
    prompt = _string("prompt", body["prompt"])
    negative = (
        _string("negative_prompt", get("negative_prompt")) if get("negative_prompt") is not None else ""
    )
    prompt, negative = check_prompt_text(prompt, negative)

    style = DEFAULT_STYLE
    if get("style") is not None:
        style = _choice("style", _string("style", get("style")), STYLES)

    size_value = _string("size", get("size")) if get("size") is not None else None
    aspect_value = _string("aspect_ratio", get("aspect_ratio")) if get("aspect_ratio") is not None else None
    size = resolve_size(size_value, aspect_value)

    steps = STEPS_DEFAULT
    if get("steps") is not None:
        if not _is_int(get("steps")):
            raise _invalid("steps", "'steps' must be an integer")
        steps = check_steps(int(get("steps")))

    guidance = STYLES[style].default_guidance
    if get("guidance") is not None:
        if not _is_number(get("guidance")):
            raise _invalid("guidance", "'guidance' must be a number")
        guidance = check_guidance(float(get("guidance")))

    seed: int | None = None
    if get("seed") is not None:
        if not _is_int(get("seed")):
            raise _invalid("seed", "'seed' must be an integer")
        seed = check_seed(int(get("seed")))

    nsfw = _bool("nsfw", get("nsfw"))
    stream = _bool("stream", get("stream"))

    output_format = "png"
    if get("output_format") is not None:
        output_format = _choice(
            "output_format", _string("output_format", get("output_format")), OUTPUT_FORMATS
        )

    # OpenAI compatibility fields.
    if get("model") is not None and _string("model", get("model")) != MODEL_ID:
        raise _invalid("model", f"'model' must be {MODEL_ID} (or absent)")
    if get("n") is not None and not (_is_int(get("n")) and int(get("n")) == 1):
        raise _invalid("n", "'n' must be 1: one image per request")
    if (
        get("response_format") is not None
        and _string("response_format", get("response_format")) != "b64_json"
    ):
        raise _invalid(
            "response_format", "'response_format' must be b64_json: nothing is stored, so there are no URLs"
        )
    if get("user") is not None:
        _string("user", get("user"))  # accepted for compatibility, never stored or logged

    request = GenerationRequest(
        prompt=prompt,
        negative_prompt=negative,
        style=style,
        size=size,
        steps=steps,
        guidance=guidance,
        seed=seed,
        nsfw=nsfw,
        output_format=output_format,
    )
    return request, stream


def _bool(field: str, value: Any) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _invalid(field, f"'{field}' must be a boolean")
    return value


def parse_grpc_request(message: Any) -> GenerationRequest:
    """Validates a ``talos.api.v1.GenerateRequest``; empty strings and unset optionals are absent."""
    prompt, negative = check_prompt_text(message.prompt, message.negative_prompt)
    style = _choice("style", message.style, STYLES) if message.style else DEFAULT_STYLE
    size = resolve_size(message.size or None, message.aspect_ratio or None)
    steps = check_steps(int(message.steps)) if message.HasField("steps") else STEPS_DEFAULT
    guidance = (
        check_guidance(float(message.guidance))
        if message.HasField("guidance")
        else STYLES[style].default_guidance
    )
    seed = check_seed(int(message.seed)) if message.HasField("seed") else None
    output_format = (
        _choice("output_format", message.output_format, OUTPUT_FORMATS) if message.output_format else "png"
    )
    return GenerationRequest(
        prompt=prompt,
        negative_prompt=negative,
        style=style,
        size=size,
        steps=steps,
        guidance=guidance,
        seed=seed,
        nsfw=bool(message.nsfw),
        output_format=output_format,
    )


def check_idempotency_key(key: str | None, field: str = "Idempotency-Key") -> str | None:
    if key is None or key == "":
        return None
    if len(key) > IDEMPOTENCY_KEY_MAX_CHARS:
        raise _invalid(field, f"'{field}' must be at most {IDEMPOTENCY_KEY_MAX_CHARS} characters")
    return key


def options() -> dict[str, Any]:
    """What ``GET /v1/options`` answers: the exact text every preset applies."""
    return {
        "styles": [
            {
                "id": style.id,
                "name": style.name,
                "prompt_template": style.prompt_template,
                "negative_prompt": style.negative_prompt,
                "default_guidance": style.default_guidance,
            }
            for style in STYLES.values()
        ],
        "default_style": DEFAULT_STYLE,
        "sizes": [
            {"id": s.id, "width": s.width, "height": s.height, "aspect_ratio": s.aspect_ratio}
            for s in SIZES.values()
        ],
        "default_size": DEFAULT_SIZE,
        "steps": {"min": STEPS_MIN, "max": STEPS_MAX, "default": STEPS_DEFAULT},
        "guidance": {
            "min": GUIDANCE_MIN,
            "max": GUIDANCE_MAX,
            "default": STYLES[DEFAULT_STYLE].default_guidance,
        },
        "seed": {"min": SEED_MIN, "max": SEED_MAX},
        "output_formats": list(OUTPUT_FORMATS),
        "price_per_image": PRICE_PER_IMAGE,
        "model": MODEL_ID,
    }
