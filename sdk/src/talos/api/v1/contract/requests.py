"""Parsing a request against the fields: one function for HTTP JSON and gRPC alike."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from talos.api.v1.contract.choices import (
    DEFAULT_SIZE,
    DEFAULT_STYLE,
    IDEMPOTENCY_KEY_MAX_CHARS,
    LOSSY_FORMATS,
    QUALITY_STEPS,
    SIZE_BY_ASPECT,
    SIZE_BY_ID,
    STYLE_BY_ID,
)
from talos.api.v1.contract.fields import (
    GENERATION_FIELDS,
    GRPC_FIELDS,
    NEGATIVE_PROMPT,
    OUTPUT_FORMAT,
    PROMPT,
    REQUEST_FIELDS,
    Field,
    Generation,
    number_text,
)


class InvalidRequest(ValueError):
    """A request the contract refuses; ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


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
    # Every field as given or its default, then the values worked out from several fields.
    values = {spec.name: got.get(spec.name, spec.default) for spec in REQUEST_FIELDS}
    values.update(
        style=style,
        size=size,
        steps=steps,
        guidance=got.get("guidance", STYLE_BY_ID[style].default_guidance),
        nsfw=nsfw,
        output_format=output_format,
    )
    return Generation(**{name: values[name] for name in GENERATION_FIELDS})


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
