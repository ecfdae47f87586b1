"""The request fields: each one's type, bounds, default, description and transports."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypedDict

from talos.api.v1.contract.choices import (
    DEFAULT_SIZE,
    DEFAULT_STYLE,
    IDEMPOTENCY_KEY_MAX_CHARS,
    MODEL_ID,
    OUTPUT_FORMATS,
    PRICE_PER_IMAGE,
    QUALITY_STEPS,
    SEED_MAX,
    SIZE_BY_ID,
    SIZES,
    STYLE_ALIASES,
    STYLE_BY_ID,
    STYLES,
)

# -- the request fields ------------------------------------------------------------------------

Kind = Literal["string", "integer", "number", "boolean"]


@dataclass(frozen=True)
class Field:
    """One request field: its type, bounds, default and where it is accepted.

    ``grpc`` fields are also carried by ``talos.api.v1.GenerateRequest`` (same name); the
    others exist on the HTTP API only (OpenAI compatibility and streaming switches).
    """

    name: str
    kind: Kind
    description: str
    default: Any = None
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    choices: tuple[str, ...] = ()
    # Accepted values that mean one of the choices.
    aliases: Mapping[str, str] = field(default_factory=dict)
    # Values a client may know from elsewhere that are refused, with the reason.
    refused: Mapping[str, str] = field(default_factory=dict)
    grpc: bool = True
    openai: bool = False

    @property
    def accepted(self) -> tuple[str, ...]:
        return self.choices + tuple(self.aliases)

    def summary(self) -> dict[str, Any]:
        """The field as ``/v1/options`` describes it: words for people, numbers for forms."""
        out: dict[str, Any] = {
            "type": self.kind,
            "description": self.description,
            "bounds": self.bounds_text(),
        }
        if self.required:
            out["required"] = True
        for name in ("minimum", "maximum", "max_length", "default"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.accepted:
            out["choices"] = list(self.accepted)
        return out

    def bounds_text(self) -> str:
        """The bounds in words, as the proto comments, the CLI help and the docs state them."""
        parts: list[str] = []
        if self.minimum is not None and self.maximum is not None:
            parts.append(f"{number_text(self.minimum)} to {number_text(self.maximum)}")
        if self.max_length is not None:
            parts.append(f"at most {self.max_length:,} characters")
        if self.accepted:
            parts.append(", ".join(self.accepted))
        if self.default is not None and self.default != "":
            parts.append(f"default {number_text(self.default)}")
        return "; ".join(parts)


def number_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


PROMPT = Field(
    "prompt",
    "string",
    "What to draw; surrounding whitespace is trimmed.",
    required=True,
    max_length=2000,
)
NEGATIVE_PROMPT = Field(
    "negative_prompt",
    "string",
    "What to steer away from; appended to the style's own negative prompt.",
    default="",
    max_length=2000,
)
STYLE = Field(
    "style",
    "string",
    "Style preset; OpenAI's natural and vivid name the photo and cinematic presets.",
    default=DEFAULT_STYLE,
    choices=tuple(style.id for style in STYLES),
    aliases=STYLE_ALIASES,
)
SIZE = Field(
    "size",
    "string",
    "Image size as WIDTHxHEIGHT; auto is the default size.",
    default=DEFAULT_SIZE,
    choices=tuple(size.id for size in SIZES),
    aliases={"auto": DEFAULT_SIZE},
)
ASPECT_RATIO = Field(
    "aspect_ratio",
    "string",
    "Alternative to size; must agree with size when both are given.",
    choices=tuple(size.aspect_ratio for size in SIZES),
)
N = Field(
    "n",
    "integer",
    "Images to make from this prompt; each is charged only if it is delivered.",
    default=1,
    minimum=1,
    maximum=4,
)
STEPS = Field("steps", "integer", "Denoising steps.", default=30, minimum=1, maximum=60)
QUALITY = Field(
    "quality",
    "string",
    "OpenAI's quality level, as denoising steps: "
    + ", ".join(f"{name} {steps}" for name, steps in QUALITY_STEPS.items())
    + ". Give steps or quality, not both.",
    default="auto",
    choices=tuple(QUALITY_STEPS),
    grpc=False,
    openai=True,
)
GUIDANCE = Field(
    "guidance",
    "number",
    "Classifier-free guidance; the style's own when absent.",
    minimum=1,
    maximum=20,
)
SEED = Field(
    "seed",
    "integer",
    "Seed of the first image (image i uses seed + i); random when absent, always returned.",
    minimum=0,
    maximum=SEED_MAX,
)
NSFW = Field(
    "nsfw",
    "boolean",
    "Allow adult output; needs the one-time age confirmation.",
    default=False,
)
OUTPUT_FORMAT = Field(
    "output_format",
    "string",
    "Image encoding.",
    default="png",
    choices=OUTPUT_FORMATS,
)
OUTPUT_COMPRESSION = Field(
    "output_compression",
    "integer",
    "Encoder quality for webp and jpeg, 100 the finest (OpenAI's output_compression).",
    minimum=0,
    maximum=100,
)
STREAM = Field(
    "stream",
    "boolean",
    "Answer with server-sent events instead of one JSON body.",
    default=False,
    grpc=False,
)
STREAM_FORMAT = Field(
    "stream_format",
    "string",
    "Events of a stream: openai (partial and completed images) or talos (queue, progress, billing).",
    default="openai",
    choices=("openai", "talos"),
    grpc=False,
)
PARTIAL_IMAGES = Field(
    "partial_images",
    "integer",
    "Partial images an OpenAI-format stream sends per image before its final one.",
    default=0,
    minimum=0,
    maximum=3,
    grpc=False,
    openai=True,
)
BACKGROUND = Field(
    "background",
    "string",
    "OpenAI's background; every TALOS image is opaque.",
    default="auto",
    choices=("auto", "opaque"),
    refused={"transparent": "the model renders opaque images only; it has no alpha channel"},
    grpc=False,
    openai=True,
)
MODERATION = Field(
    "moderation",
    "string",
    "OpenAI's moderation level: low means nsfw (18+ output, age confirmation needed); "
    "the hard limit applies either way.",
    default="auto",
    choices=("auto", "low"),
    grpc=False,
    openai=True,
)
MODEL = Field(
    "model",
    "string",
    "The model; only one is served.",
    choices=(MODEL_ID,),
    grpc=False,
    openai=True,
)
RESPONSE_FORMAT = Field(
    "response_format",
    "string",
    "How images come back: base64 in the body.",
    default="b64_json",
    choices=("b64_json",),
    refused={"url": "nothing is stored, so there are no URLs"},
    grpc=False,
    openai=True,
)
USER = Field(
    "user",
    "string",
    "Accepted and ignored: never stored or logged.",
    grpc=False,
    openai=True,
)
SAFETY_IDENTIFIER = Field(
    "safety_identifier",
    "string",
    "Accepted and ignored: never stored or logged.",
    grpc=False,
    openai=True,
)

REQUEST_FIELDS: tuple[Field, ...] = (
    PROMPT,
    NEGATIVE_PROMPT,
    STYLE,
    SIZE,
    ASPECT_RATIO,
    N,
    STEPS,
    QUALITY,
    GUIDANCE,
    SEED,
    NSFW,
    OUTPUT_FORMAT,
    OUTPUT_COMPRESSION,
    STREAM,
    STREAM_FORMAT,
    PARTIAL_IMAGES,
    BACKGROUND,
    MODERATION,
    MODEL,
    RESPONSE_FORMAT,
    USER,
    SAFETY_IDENTIFIER,
)
FIELD_BY_NAME: dict[str, Field] = {f.name: f for f in REQUEST_FIELDS}
GRPC_FIELDS: tuple[Field, ...] = tuple(f for f in REQUEST_FIELDS if f.grpc)
IDEMPOTENCY_KEY = Field(
    "idempotency_key",
    "string",
    "Makes a retried submit return the same job instead of charging twice "
    "(HTTP: the Idempotency-Key header).",
    max_length=IDEMPOTENCY_KEY_MAX_CHARS,
)


# -- options -----------------------------------------------------------------------------------


def options(style_texts: Mapping[str, tuple[str, str]] | None = None) -> dict[str, Any]:
    """``GET /v1/options``: what a request may contain. ``style_texts`` maps a style id to its
    prompt template and full negative prompt (the gateway knows them; the SDK does not)."""
    texts = style_texts or {}
    return {
        "styles": [
            {
                "id": style.id,
                "name": style.name,
                **(
                    {"prompt_template": texts[style.id][0], "negative_prompt": texts[style.id][1]}
                    if style.id in texts
                    else {}
                ),
                "default_guidance": style.default_guidance,
            }
            for style in STYLES
        ],
        "default_style": DEFAULT_STYLE,
        "sizes": [
            {"id": s.id, "width": s.width, "height": s.height, "aspect_ratio": s.aspect_ratio} for s in SIZES
        ],
        "default_size": DEFAULT_SIZE,
        "n": {"min": int(N.minimum or 1), "max": int(N.maximum or 1), "default": N.default},
        "steps": {"min": int(STEPS.minimum or 1), "max": int(STEPS.maximum or 1), "default": STEPS.default},
        "quality_steps": dict(QUALITY_STEPS),
        "guidance": {
            "min": float(GUIDANCE.minimum or 0),
            "max": float(GUIDANCE.maximum or 0),
            "default": STYLE_BY_ID[DEFAULT_STYLE].default_guidance,
        },
        "seed": {"min": 0, "max": SEED_MAX},
        "output_formats": list(OUTPUT_FORMATS),
        "output_compression": {"min": 0, "max": 100},
        "price_per_image": PRICE_PER_IMAGE,
        "model": MODEL_ID,
        "fields": {f.name: f.summary() for f in REQUEST_FIELDS},
    }


@dataclass(frozen=True)
class Generation:
    """A validated request, before seeds are drawn (so its hash identifies the body).

    Each attribute is the request field of the same name, as given or its default (a few are
    worked out from several fields: size from aspect_ratio, steps from quality, nsfw from
    moderation). An HTTP-only field absent over gRPC takes its default.
    """

    prompt: str
    negative_prompt: str
    style: str
    size: str
    n: int
    steps: int
    guidance: float
    seed: int | None
    nsfw: bool
    output_format: str
    output_compression: int | None
    stream: bool
    stream_format: str
    partial_images: int
    quality: str
    background: str

    @property
    def width(self) -> int:
        return SIZE_BY_ID[self.size].width

    @property
    def height(self) -> int:
        return SIZE_BY_ID[self.size].height

    def seeds(self, first: int) -> list[int]:
        """Image i is rendered with ``first + i`` (wrapping), so any one can be made again alone."""
        return [(first + index) % (SEED_MAX + 1) for index in range(self.n)]

    def body_hash(self) -> str:
        """Identifies the request for idempotency checks; the only thing kept of it."""
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class JobOptions(TypedDict, total=False):
    """The gRPC fields besides the prompt, typed, as the SDK's ``generate``/``submit`` take them.

    None (or leaving one out) means the API's default; a test checks these are exactly the
    gRPC fields declared above.
    """

    negative_prompt: str | None
    style: str | None
    size: str | None
    aspect_ratio: str | None
    n: int | None
    steps: int | None
    guidance: float | None
    seed: int | None
    nsfw: bool | None
    output_format: str | None
    output_compression: int | None
    idempotency_key: str | None


GENERATION_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Generation))
