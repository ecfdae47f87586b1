"""The public TALOS API, declared once.

Every fact a client can see about a generation request lives here: the request fields with
their types, bounds, defaults and descriptions; the sizes, styles, output formats and quality
levels; the events a job streams and the bodies the HTTP API answers; the error codes. The
gateway parses HTTP and gRPC requests with :func:`parse_generation`, answers ``/v1/options``
from :func:`options` and generates its OpenAPI document from these declarations; the SDK and
the ``talos`` CLI take their constants and help text from here. The proto comments, the page
and ``docs/api.md`` hold copies that the test suite compares with this module.

Pure Python with no dependencies, so the SDK ships it as it is.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

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
    "Images to make from this prompt; each is held, charged and refunded on its own.",
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


class InvalidRequest(ValueError):
    """A request the contract refuses; ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Generation:
    """A validated request, before seeds are drawn (so its hash identifies the body)."""

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
    stream: bool = False
    stream_format: str = "openai"
    partial_images: int = 0
    quality: str = "auto"
    background: str = "auto"

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


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    # JSON Schema counts 30.0 as an integer; so do we.
    return isinstance(value, float) and math.isfinite(value) and value.is_integer()


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _check(spec: Field, value: Any) -> Any:
    """One field's value, type-checked, bounded and with aliases resolved."""
    name = spec.name
    if spec.kind == "string":
        if not isinstance(value, str):
            raise InvalidRequest(name, f"'{name}' must be a string")
        if name in (PROMPT.name, NEGATIVE_PROMPT.name):
            value = value.strip()
        if spec.max_length is not None and len(value) > spec.max_length:
            raise InvalidRequest(name, f"'{name}' must be at most {spec.max_length} characters")
        if spec.refused.get(value):
            raise InvalidRequest(
                name, f"'{name}' {value} is not supported: {spec.refused[value]}; use {_listed(spec)}"
            )
        if spec.accepted and value not in spec.accepted:
            raise InvalidRequest(name, f"'{name}' must be one of: {', '.join(spec.accepted)}")
        return spec.aliases.get(value, value)
    if spec.kind == "boolean":
        if not isinstance(value, bool):
            raise InvalidRequest(name, f"'{name}' must be a boolean")
        return value
    if spec.kind == "integer":
        if not _is_integer(value):
            raise InvalidRequest(name, f"'{name}' must be an integer")
        value = int(value)
    elif not _is_number(value):
        raise InvalidRequest(name, f"'{name}' must be a number")
    else:
        value = float(value)
    if spec.minimum is not None and spec.maximum is not None and not spec.minimum <= value <= spec.maximum:
        raise InvalidRequest(
            name, f"'{name}' must be between {number_text(spec.minimum)} and {number_text(spec.maximum)}"
        )
    return value


def _listed(spec: Field) -> str:
    return " or ".join(spec.choices)


def parse_generation(values: Mapping[str, Any], *, http: bool = True) -> Generation:
    """Validates a request (an HTTP JSON object, or a GenerateRequest's present fields).

    Absent fields and JSON nulls take their defaults. Every refusal is an
    :class:`InvalidRequest` naming the field and, for a choice, the accepted values.
    """
    accepted = REQUEST_FIELDS if http else GRPC_FIELDS
    names = {spec.name for spec in accepted}
    for key in values:
        if key not in names:
            raise InvalidRequest(str(key), f"unknown field '{key}'")
    got: dict[str, Any] = {}
    for spec in accepted:
        raw = values.get(spec.name)
        if raw is None:
            if spec.required:
                raise InvalidRequest(spec.name, f"'{spec.name}' is required")
            continue
        got[spec.name] = _check(spec, raw)

    if not got["prompt"]:
        raise InvalidRequest("prompt", "'prompt' must not be empty")
    style = got.get("style", DEFAULT_STYLE)
    size = _resolve_size(got.get("size"), got.get("aspect_ratio"))
    if "steps" in got and "quality" in got:
        raise InvalidRequest("quality", "'quality' and 'steps' both set the step count: send one of them")
    steps = got.get("steps", QUALITY_STEPS[got.get("quality", "auto")])
    output_format = got.get("output_format", OUTPUT_FORMAT.default)
    compression = got.get("output_compression")
    if compression is not None and output_format not in LOSSY_FORMATS:
        raise InvalidRequest(
            "output_compression",
            f"'output_compression' applies to {' and '.join(LOSSY_FORMATS)} only, not {output_format}",
        )
    nsfw = got.get("nsfw", False)
    if got.get("moderation") == "low":
        if "nsfw" in got and not nsfw:
            raise InvalidRequest(
                "moderation", "'moderation' low asks for 18+ output, which 'nsfw': false refuses"
            )
        nsfw = True
    return Generation(
        prompt=got["prompt"],
        negative_prompt=got.get("negative_prompt", ""),
        style=style,
        size=size,
        n=got.get("n", N.default),
        steps=steps,
        guidance=got.get("guidance", STYLE_BY_ID[style].default_guidance),
        seed=got.get("seed"),
        nsfw=nsfw,
        output_format=output_format,
        output_compression=compression,
        stream=got.get("stream", False),
        stream_format=got.get("stream_format", STREAM_FORMAT.default),
        partial_images=got.get("partial_images", PARTIAL_IMAGES.default),
        quality=got.get("quality", "auto"),
        background=got.get("background", BACKGROUND.default),
    )


def _resolve_size(size: str | None, aspect_ratio: str | None) -> str:
    if size is not None and aspect_ratio is not None and SIZE_BY_ID[size].aspect_ratio != aspect_ratio:
        raise InvalidRequest("aspect_ratio", f"'aspect_ratio' {aspect_ratio} disagrees with 'size' {size}")
    if size is not None:
        return size
    if aspect_ratio is not None:
        return SIZE_BY_ASPECT[aspect_ratio].id
    return DEFAULT_SIZE


def grpc_values(message: Any) -> dict[str, Any]:
    """The fields a ``GenerateRequest`` carries, as :func:`parse_generation` reads them.

    proto3 has no null: an empty string, a false flag and an unset ``optional`` are absent.
    """
    values: dict[str, Any] = {}
    for spec in GRPC_FIELDS:
        if spec.kind in ("integer", "number"):
            if message.HasField(spec.name):
                values[spec.name] = getattr(message, spec.name)
        else:
            value = getattr(message, spec.name)
            if value:
                values[spec.name] = value
    if "prompt" not in values:
        values["prompt"] = ""  # present but empty: "must not be empty", as over HTTP
    return values


def check_idempotency_key(key: str | None, name: str = "Idempotency-Key") -> str | None:
    if not key:
        return None
    if len(key) > IDEMPOTENCY_KEY_MAX_CHARS:
        raise InvalidRequest(name, f"'{name}' must be at most {IDEMPOTENCY_KEY_MAX_CHARS} characters")
    return key


# -- what comes back ---------------------------------------------------------------------------

PropKind = Literal["string", "integer", "number", "boolean", "base64", "object", "array"]


@dataclass(frozen=True)
class Prop:
    """One property of an event or a response body."""

    name: str
    kind: PropKind
    description: str
    optional: bool = False
    # The same value in the proto message, where it has another name there (None: not carried).
    proto: str | None = ""
    # For objects, their properties; for arrays, the properties of each item.
    props: tuple[Prop, ...] = ()
    enum: tuple[str, ...] = ()

    @property
    def proto_name(self) -> str | None:
        return self.name if self.proto == "" else self.proto


JOB_ID = Prop("job_id", "string", "The job the event belongs to.")
IMAGE = Prop("image", "integer", "Which of the request's images (0-based).")
ERROR = Prop(
    "error",
    "object",
    "Why the image failed.",
    props=(
        Prop("code", "string", "A code from the error table."),
        Prop("message", "string", "A plain-words explanation, never echoing the prompt."),
    ),
)

# The TALOS events of a job, in the order they can happen; each image of a request ends with
# exactly one `completed` or `failed`, and the job's stream ends after the last of them.
EVENTS: dict[str, tuple[Prop, ...]] = {
    "queued": (
        JOB_ID,
        IMAGE,
        Prop("position", "integer", "1-based place in the network's queue."),
        Prop("eta_seconds", "number", "Estimated seconds until the image is done."),
    ),
    "started": (JOB_ID, IMAGE),
    "progress": (
        JOB_ID,
        IMAGE,
        Prop("step", "integer", "Steps finished, 1-based."),
        Prop("total_steps", "integer", "Steps in total."),
        Prop(
            "preview_b64",
            "base64",
            "A small JPEG preview of the current latents, on some steps.",
            optional=True,
            proto="preview_jpeg",
        ),
        Prop(
            "preview_withheld",
            "boolean",
            "A preview was made but withheld: it looked like adult content and 18+ is off.",
            optional=True,
        ),
    ),
    "completed": (
        JOB_ID,
        IMAGE,
        Prop("b64_json", "base64", "The encoded image.", proto="image"),
        Prop("seed", "integer", "The seed of this image, to make it again."),
        Prop("width", "integer", "Width in pixels."),
        Prop("height", "integer", "Height in pixels."),
        Prop("output_format", "string", "png, webp or jpeg.", enum=OUTPUT_FORMATS),
        Prop("credits_charged", "integer", "Credits charged for this image."),
        Prop("balance", "integer", "Spendable credits left (allowance remaining plus balance)."),
    ),
    "failed": (
        JOB_ID,
        IMAGE,
        ERROR,
        Prop("seed", "integer", "The seed this image would have used."),
        Prop("refunded", "boolean", "Always true: the image's hold was released."),
    ),
}
TERMINAL_EVENTS = ("completed", "failed")

# What an OpenAI-format stream sends (the openai package's ImageGen*Event shapes).
OPENAI_IMAGE_COMMON: tuple[Prop, ...] = (
    Prop("b64_json", "base64", "The image, base64."),
    Prop("created_at", "integer", "Unix time of the event."),
    Prop("size", "string", "WIDTHxHEIGHT."),
    Prop("quality", "string", "The quality asked for (auto when steps were given)."),
    Prop("background", "string", "Always opaque or auto, as asked."),
    Prop("output_format", "string", "png, webp or jpeg."),
)
OPENAI_EVENTS: dict[str, tuple[Prop, ...]] = {
    "image_generation.partial_image": (
        Prop("type", "string", "image_generation.partial_image"),
        *OPENAI_IMAGE_COMMON,
        Prop("partial_image_index", "integer", "0-based index of the partial image within its image."),
    ),
    "image_generation.completed": (
        Prop("type", "string", "image_generation.completed"),
        *OPENAI_IMAGE_COMMON,
        Prop(
            "usage",
            "object",
            "Token counts as OpenAI reports them; TALOS bills per image, so they are 0.",
            props=(
                Prop("input_tokens", "integer", "0."),
                Prop("output_tokens", "integer", "0."),
                Prop("total_tokens", "integer", "0."),
                Prop(
                    "input_tokens_details",
                    "object",
                    "0s.",
                    props=(
                        Prop("image_tokens", "integer", "0."),
                        Prop("text_tokens", "integer", "0."),
                    ),
                ),
            ),
        ),
    ),
    # TALOS's own: one image of several failed and was refunded (no `error` key, on which the
    # openai package raises and drops the images still to come).
    "talos.image_failed": (
        Prop("type", "string", "talos.image_failed"),
        IMAGE,
        Prop("seed", "integer", "The seed it would have used."),
        Prop("code", "string", "A code from the error table."),
        Prop("message", "string", "Why, in plain words."),
        Prop("refunded", "boolean", "Always true."),
    ),
}

REFUND = Prop(
    "refunded",
    "array",
    "Images that failed and were refunded, with why.",
    props=(
        Prop("image", "integer", "Which image (0-based)."),
        Prop("seed", "integer", "The seed it would have used."),
        ERROR,
    ),
)
RESPONSES: dict[str, tuple[Prop, ...]] = {
    "Generation": (
        Prop("created", "integer", "Unix time the job was accepted."),
        JOB_ID,
        Prop(
            "data",
            "array",
            "The delivered images, in request order.",
            props=(
                Prop("b64_json", "base64", "The encoded image."),
                Prop("seed", "integer", "Its seed."),
                Prop("image", "integer", "Which of the request's images (0-based)."),
            ),
        ),
        REFUND,
        Prop("size", "string", "WIDTHxHEIGHT."),
        Prop("output_format", "string", "png, webp or jpeg.", enum=OUTPUT_FORMATS),
        Prop("quality", "string", "The quality asked for."),
        Prop("background", "string", "opaque or auto, as asked."),
        Prop("credits_charged", "integer", "Credits charged: the price times the delivered images."),
        Prop("balance", "integer", "Spendable credits left (allowance remaining plus balance)."),
    ),
    "JobAccepted": (JOB_ID,),
    "CancelResult": (JOB_ID, Prop("cancelled", "boolean", "True when the job was still running.")),
    "Error": (ERROR,),
}


# -- errors ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorCode:
    code: str
    http_status: int
    grpc_status: str  # a grpc.StatusCode name
    when: str
    charged: str  # what happened to the credits: "no", "refunded" or "no / refunded"
    retryable: bool = False


ERRORS: tuple[ErrorCode, ...] = (
    ErrorCode(
        "invalid_request",
        400,
        "INVALID_ARGUMENT",
        "a field is missing, unknown, of the wrong type or out of bounds (the message names it); bad JSON",
        "no",
    ),
    ErrorCode(
        "content_policy_violation",
        400,
        "INVALID_ARGUMENT",
        "the prompt breaks the hard limit (no sexual content involving minors)",
        "no",
    ),
    ErrorCode("invalid_api_key", 401, "UNAUTHENTICATED", "missing, malformed, unknown or revoked key", "no"),
    ErrorCode(
        "insufficient_credits",
        402,
        "FAILED_PRECONDITION",
        "fewer spendable credits than 18 per image asked for",
        "no",
    ),
    ErrorCode(
        "age_confirmation_required",
        403,
        "PERMISSION_DENIED",
        "18+ output (nsfw, or moderation low) before the one-time age confirmation",
        "no",
    ),
    ErrorCode("not_found", 404, "NOT_FOUND", "no such job for this account; unknown path", "no"),
    ErrorCode(
        "idempotency_conflict", 409, "ALREADY_EXISTS", "the idempotency key was used with another body", "no"
    ),
    ErrorCode("request_too_large", 413, "RESOURCE_EXHAUSTED", "a body above the gateway's limit", "no"),
    ErrorCode("output_blocked", 422, "PERMISSION_DENIED", "adult output with 18+ off", "refunded"),
    ErrorCode(
        "rate_limited",
        429,
        "RESOURCE_EXHAUSTED",
        "per-key request rate, per-key jobs at once, or a moderation cooldown (with Retry-After)",
        "no",
        retryable=True,
    ),
    ErrorCode("cancelled", 499, "CANCELLED", "the job was cancelled (only in a failed event)", "refunded"),
    ErrorCode("internal", 500, "INTERNAL", "an unexpected error", "refunded"),
    ErrorCode(
        "no_capacity",
        503,
        "UNAVAILABLE",
        "no render node can take the job (with Retry-After), or the gateway is shutting down",
        "no",
        retryable=True,
    ),
    ErrorCode(
        "unavailable",
        503,
        "UNAVAILABLE",
        "billing or moderation cannot answer (fail closed)",
        "no / refunded",
        retryable=True,
    ),
    ErrorCode(
        "timeout",
        504,
        "DEADLINE_EXCEEDED",
        "the job took too long (queue wait, node time, or its hold expired)",
        "refunded",
        retryable=True,
    ),
)
ERROR_BY_CODE: dict[str, ErrorCode] = {error.code: error for error in ERRORS}


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
        "fields": {
            f.name: {"type": f.kind, "description": f.description, "bounds": f.bounds_text()}
            for f in REQUEST_FIELDS
        },
    }
