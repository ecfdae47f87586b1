"""A job's ``GenerateRequest``, checked on this side by the API contract before it is sent.

The checks are the gateway's own (``talos.api.v1.contract.parse_generation``), so a request
refused here would be refused there with the same message, and no bound lives in the SDK.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from talos.api.v1 import api_pb2, contract
from talos.api.v1.contract import JobOptions
from talos_sdk.errors import InvalidRequest


def check_keywords(given: Mapping[str, Any], allowed: type, where: str) -> None:
    """Raises TypeError for a keyword ``allowed`` (a TypedDict) does not name, as a signature would."""
    for name in given:
        if name not in allowed.__annotations__:
            raise TypeError(f"{where}() got an unexpected keyword argument {name!r}")


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


def _idempotency_key(given: str | None) -> str:
    if given is None:
        return new_idempotency_key()
    name = contract.IDEMPOTENCY_KEY.name
    if not isinstance(given, str) or not given:
        raise InvalidRequest(f"'{name}' must be a non-empty string", field=name)
    try:
        contract.check_idempotency_key(given, name)
    except contract.InvalidRequest as invalid:
        raise InvalidRequest(invalid.message, field=invalid.field) from None
    return given


def _wire(spec: contract.Field, value: Any) -> Any:
    """A checked value as its proto field takes it (the contract accepts 30.0 as an integer)."""
    if spec.kind == "integer":
        return int(value)
    if spec.kind == "number":
        return float(value)
    return value


def build_request(prompt: str, options: JobOptions, *, where: str) -> Any:
    """The ``GenerateRequest`` of a job; refuses what the contract refuses, naming the field."""
    check_keywords(options, JobOptions, where)
    values: dict[str, Any] = {name: value for name, value in options.items() if value is not None}
    key = _idempotency_key(values.pop(contract.IDEMPOTENCY_KEY.name, None))
    values[contract.PROMPT.name] = prompt
    try:
        contract.parse_generation(values, http=False)
    except contract.InvalidRequest as invalid:
        raise InvalidRequest(invalid.message, field=invalid.field) from None
    request = api_pb2.GenerateRequest(idempotency_key=key)
    for spec in contract.GRPC_FIELDS:
        if spec.name in values:
            setattr(request, spec.name, _wire(spec, values[spec.name]))
    return request


def images_requested(request: Any) -> int:
    """How many images a ``GenerateRequest`` asks for."""
    return int(request.n) if request.HasField("n") else int(contract.N.default)
