"""Typed settings read once from environment variables with one prefix per service.

A service declares a frozen dataclass and calls ``load(Settings, "TALOS_BILLING_")``;
field ``port`` is then read from ``TALOS_BILLING_PORT``. Bad values fail at start with a
message naming the variable, never at the first request.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SettingsError(ValueError):
    """A variable holds a value its setting cannot take."""


def env_name(prefix: str, field: str) -> str:
    return f"{prefix}{field.upper()}"


def _convert(raw: str, kind: Any, name: str) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if raw == "":
            return None
        return _convert(raw, args[0], name)
    if origin is tuple:
        (item,) = {a for a in typing.get_args(kind) if a is not Ellipsis}
        return tuple(_convert(part.strip(), item, name) for part in raw.split(",") if part.strip())
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError(raw)
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is Path:
            return Path(raw).expanduser()
        if kind is str:
            return raw
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
    raise TypeError(f"unsupported setting type {kind!r} for {name}")


def load(cls: type[T], prefix: str, environ: Mapping[str, str] | None = None) -> T:
    """Builds ``cls`` from ``environ`` (default: ``os.environ``), using field defaults."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    env = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        name = env_name(prefix, field.name)
        if name in env:
            values[field.name] = _convert(env[name], hints[field.name], name)
    return cls(**values)


def variables(cls: type[Any], prefix: str) -> list[str]:
    """Every environment variable a settings class reads (used by the manifest tests)."""
    return [env_name(prefix, f.name) for f in dataclasses.fields(cls)]
