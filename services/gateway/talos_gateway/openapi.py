"""The OpenAPI 3.1 document of the HTTP API, generated from the declared contract.

Request fields, event and response shapes, error codes and every bound come from
:mod:`talos.api.v1.contract`. The document is generated into ``openapi.json`` beside this
module (``make contract``), committed, and served as it is at ``GET /v1/openapi.json``; a test
regenerates it and fails when the committed copy is stale.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from talos.api.v1 import contract
from talos.api.v1.contract import Field, Prop

PATH = Path(__file__).resolve().parent / "openapi.json"
_RETRY_STATUSES = {"429", "503"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error_statuses() -> dict[str, tuple[str, str]]:
    """Each HTTP status with its codes and what they mean, from the contract's error table."""
    grouped: dict[int, list[contract.ErrorCode]] = defaultdict(list)
    for error in contract.ERRORS:
        grouped[error.http_status].append(error)
    return {
        str(status): (", ".join(e.code for e in errors), "; ".join(f"{e.code}: {e.when}" for e in errors))
        for status, errors in sorted(grouped.items())
    }


def _field_schema(spec: Field) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": spec.kind, "description": spec.description}
    if spec.accepted or spec.refused:
        schema["enum"] = [*spec.accepted, *spec.refused]
        if spec.refused:
            reasons = "; ".join(f"{value} is refused: {why}" for value, why in spec.refused.items())
            schema["description"] += f" ({reasons}.)"
    if spec.minimum is not None:
        schema["minimum"] = int(spec.minimum) if spec.kind == "integer" else spec.minimum
    if spec.maximum is not None:
        schema["maximum"] = int(spec.maximum) if spec.kind == "integer" else spec.maximum
    if spec.max_length is not None:
        schema["maxLength"] = spec.max_length
    if spec.default is not None:
        schema["default"] = spec.default
    if spec.required:
        schema["minLength"] = 1
        schema["pattern"] = "\\S"
        return schema
    # Optional fields may also be sent as null, meaning "use the default".
    schema["type"] = [spec.kind, "null"]
    if "enum" in schema:
        schema["enum"] = [*schema["enum"], None]
    return schema


def _request_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [f.name for f in contract.REQUEST_FIELDS if f.required],
        "properties": {f.name: _field_schema(f) for f in contract.REQUEST_FIELDS},
        "description": "Any field not listed here is refused with 400 invalid_request naming it.",
    }


def _prop_schema(prop: Prop) -> dict[str, Any]:
    if prop.kind == "base64":
        return {"type": "string", "contentEncoding": "base64", "description": prop.description}
    if prop.kind == "object":
        return {**_object(prop.props), "description": prop.description}
    if prop.kind == "array":
        return {"type": "array", "items": _object(prop.props), "description": prop.description}
    schema: dict[str, Any] = {"type": prop.kind, "description": prop.description}
    if prop.enum:
        schema["enum"] = list(prop.enum)
    return schema


def _object(props: tuple[Prop, ...]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [p.name for p in props if not p.optional],
        "properties": {p.name: _prop_schema(p) for p in props},
    }


def _declared_schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {"GenerationRequest": _request_schema()}
    for name, props in contract.RESPONSES.items():
        schemas[name] = _object(props)
    for name, props in contract.EVENTS.items():
        schemas[name.capitalize() + "Event"] = _object(props)
    for name, props in contract.OPENAI_EVENTS.items():
        title = "".join(part.capitalize() for part in name.replace(".", "_").split("_"))
        schemas["OpenAI" + title] = _object(props)
    return schemas


def _schemas() -> dict[str, Any]:
    return {
        **_declared_schemas(),
        "Account": {
            "type": "object",
            "required": ["account_id", "balance", "allowance", "age_confirmed", "price_per_image"],
            "properties": {
                "account_id": {"type": "string"},
                "balance": {
                    "type": "integer",
                    "description": "Credits on the balance, allowance not counted.",
                },
                "allowance": {
                    "type": "object",
                    "required": ["daily", "remaining", "resets_at"],
                    "properties": {
                        "daily": {"type": "integer"},
                        "remaining": {"type": "integer"},
                        "resets_at": {"type": "string", "format": "date-time"},
                    },
                },
                "age_confirmed": {"type": "boolean"},
                "price_per_image": {"type": "integer"},
            },
        },
        "AgeConfirmationRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["confirm"],
            "properties": {"confirm": {"const": True}},
        },
        "AgeConfirmation": {
            "type": "object",
            "required": ["age_confirmed"],
            "properties": {"age_confirmed": {"type": "boolean", "const": True}},
        },
        "Options": {
            "type": "object",
            "required": ["styles", "sizes", "steps", "guidance", "price_per_image", "output_formats"],
            "properties": {
                "styles": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "name", "default_guidance"],
                        "properties": {
                            "id": {"type": "string"},
                            "name": {"type": "string"},
                            "prompt_template": {"type": "string"},
                            "negative_prompt": {"type": "string"},
                            "default_guidance": {"type": "number"},
                        },
                    },
                },
                "default_style": {"type": "string"},
                "sizes": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "width", "height", "aspect_ratio"],
                        "properties": {
                            "id": {"type": "string"},
                            "width": {"type": "integer"},
                            "height": {"type": "integer"},
                            "aspect_ratio": {"type": "string"},
                        },
                    },
                },
                "default_size": {"type": "string"},
                "n": _range("integer"),
                "steps": _range("integer"),
                "quality_steps": {"type": "object", "additionalProperties": {"type": "integer"}},
                "guidance": _range("number"),
                "seed": {
                    "type": "object",
                    "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                },
                "output_formats": {"type": "array", "items": {"type": "string"}},
                "output_compression": {
                    "type": "object",
                    "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                },
                "price_per_image": {"type": "integer"},
                "model": {"type": "string"},
                "fields": {
                    "type": "object",
                    "description": "Each request field's type, description and bounds in words.",
                },
            },
        },
        "Health": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
        "Readiness": {
            "type": "object",
            "required": ["ready", "billing", "moderation", "accepting", "nodes_connected", "nodes_idle"],
            "properties": {
                "ready": {"type": "boolean"},
                "billing": {"type": "boolean"},
                "moderation": {"type": "boolean"},
                "accepting": {"type": "boolean"},
                "nodes_connected": {"type": "integer"},
                "nodes_idle": {"type": "integer"},
                "jobs_active": {"type": "integer"},
            },
        },
    }


def _range(kind: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["min", "max", "default"],
        "properties": {"min": {"type": kind}, "max": {"type": kind}, "default": {"type": kind}},
    }


def _json(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(schema)}}


def _errors(*statuses: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    table = _error_statuses()
    for status in statuses:
        _, text = table[status]
        response: dict[str, Any] = {
            "description": text,
            "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}},
            "content": _json("Error"),
        }
        if status in _RETRY_STATUSES:
            response["headers"]["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
        out[status] = response
    return out


def _ok(description: str, content: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}},
    }
    if content is not None:
        response["content"] = content
    return response


_DEFAULT_ERROR = {
    "description": "Any other error, in the same shape (for example 405 for a method the path lacks).",
    "content": _json("Error"),
}

_EVENTS_TEXT = (
    "Server-sent events, each named and with a JSON body: "
    + ", ".join(f"`{name}` ({name.capitalize()}Event)" for name in contract.EVENTS)
    + ". Each image of the request ends with exactly one `completed` or `failed`; the stream ends "
    "after the last. Lines starting with ':' are keep-alive comments."
)
_OPENAI_EVENTS_TEXT = (
    "With stream: true (stream_format openai, the default): OpenAI's image events "
    + ", ".join(f"`{name}`" for name in contract.OPENAI_EVENTS)
    + "; an `error` event when no image could be made. With stream_format talos: "
    + _EVENTS_TEXT
)

_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "A retry with the same key and the same body returns the same job; another body: 409.",
    "schema": {"type": "string", "maxLength": contract.IDEMPOTENCY_KEY_MAX_CHARS},
}
_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
_JOB_ERRORS = ("400", "401", "402", "403", "409", "413", "429", "503")


def document() -> dict[str, Any]:
    public: list[dict[str, Any]] = []
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "TALOS image generation API",
            "version": "1.0.0",
            "description": (
                "OpenAI-compatible images endpoint plus TALOS's own fields, job events, account and "
                "options. Every image costs a flat 18 credits, charged only on success. Errors are "
                'always {"error": {"code", "message"}}; every response carries X-Request-Id.'
            ),
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/images/generations": {
                "post": {
                    "operationId": "generateImage",
                    "summary": "Generate 1 to 4 images (OpenAI-compatible); stream: true answers with events",
                    "parameters": [_IDEMPOTENCY],
                    "requestBody": {"required": True, "content": _json("GenerationRequest")},
                    "responses": {
                        "200": _ok(
                            "The images (JSON), or the job's events. " + _OPENAI_EVENTS_TEXT,
                            {
                                "application/json": {"schema": _ref("Generation")},
                                "text/event-stream": {"schema": {"type": "string"}},
                            },
                        ),
                        **_errors(*_JOB_ERRORS, "422", "500", "504"),
                        "default": _DEFAULT_ERROR,
                    },
                }
            },
            "/v1/jobs": {
                "post": {
                    "operationId": "submitJob",
                    "summary": "Accept a job and answer at once; follow it with /v1/jobs/{job_id}/events",
                    "parameters": [_IDEMPOTENCY],
                    "requestBody": {"required": True, "content": _json("GenerationRequest")},
                    "responses": {
                        "202": {
                            **_ok("The job was accepted (its credits are held).", _json("JobAccepted")),
                            "links": {
                                "JobEvents": {
                                    "operationId": "jobEvents",
                                    "parameters": {"job_id": "$response.body#/job_id"},
                                },
                                "CancelJob": {
                                    "operationId": "cancelJob",
                                    "parameters": {"job_id": "$response.body#/job_id"},
                                },
                            },
                        },
                        **_errors(*_JOB_ERRORS),
                        "default": _DEFAULT_ERROR,
                    },
                }
            },
            "/v1/jobs/{job_id}/events": {
                "get": {
                    "operationId": "jobEvents",
                    "summary": "The job's events; a reconnect replays the current state",
                    "parameters": [_JOB_ID],
                    "responses": {
                        "200": _ok(_EVENTS_TEXT, {"text/event-stream": {"schema": {"type": "string"}}}),
                        **_errors("401", "404", "429"),
                        "default": _DEFAULT_ERROR,
                    },
                }
            },
            "/v1/jobs/{job_id}": {
                "delete": {
                    "operationId": "cancelJob",
                    "summary": "Cancel a job; its hold is released",
                    "parameters": [_JOB_ID],
                    "responses": {
                        "200": _ok(
                            "Whether the job was still running and is now cancelled.", _json("CancelResult")
                        ),
                        **_errors("401", "404", "429"),
                        "default": _DEFAULT_ERROR,
                    },
                }
            },
            "/v1/account": {
                "get": {
                    "operationId": "getAccount",
                    "summary": "Balance, allowance, age confirmation, price",
                    "responses": {
                        "200": _ok("The caller's account.", _json("Account")),
                        **_errors("401", "429", "503"),
                        "default": _DEFAULT_ERROR,
                    },
                }
            },
            "/v1/account/age-confirmation": {
                "post": {
                    "operationId": "confirmAge",
                    "summary": "Record the one-time age confirmation needed for nsfw: true",
                    "requestBody": {"required": True, "content": _json("AgeConfirmationRequest")},
                    "responses": {
                        "200": _ok("Confirmed.", _json("AgeConfirmation")),
                        **_errors("400", "401", "413", "429", "503"),
                        "default": _DEFAULT_ERROR,
                    },
                }
            },
            "/v1/options": {
                "get": {
                    "operationId": "getOptions",
                    "summary": "Styles (with the exact text each applies), sizes, ranges, defaults, price",
                    "security": public,
                    "responses": {
                        "200": _ok("What a request may contain.", _json("Options")),
                        "default": _DEFAULT_ERROR,
                    },
                }
            },
            "/v1/openapi.json": {
                "get": {
                    "operationId": "getOpenApi",
                    "summary": "This document",
                    "security": public,
                    "responses": {
                        "200": _ok("OpenAPI 3.1", {"application/json": {"schema": {"type": "object"}}}),
                        "default": _DEFAULT_ERROR,
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "Liveness",
                    "security": public,
                    "responses": {"200": _ok("Alive.", _json("Health")), "default": _DEFAULT_ERROR},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Readiness: billing and moderation answer, and the gateway accepts jobs",
                    "security": public,
                    "responses": {
                        "200": _ok("Ready.", _json("Readiness")),
                        "503": _ok("Not ready (same body).", _json("Readiness")),
                        "default": _DEFAULT_ERROR,
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics",
                    "security": public,
                    "responses": {
                        "200": _ok("Prometheus text format.", {"text/plain": {"schema": {"type": "string"}}}),
                        "default": _DEFAULT_ERROR,
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "The API key."}
            },
            "headers": {
                "X-Request-Id": {
                    "description": "Identifies the request in the gateway's logs.",
                    "schema": {"type": "string"},
                },
                "Retry-After": {
                    "description": "Seconds to wait before retrying.",
                    "schema": {"type": "string"},
                },
            },
            "schemas": _schemas(),
        },
    }


def render() -> str:
    """The document as committed: stable key order, one trailing newline."""
    return json.dumps(document(), indent=1, ensure_ascii=False) + "\n"


def load() -> bytes:
    return PATH.read_bytes()


def main() -> int:
    """``python -m talos_gateway.openapi``: rewrites the committed document."""
    PATH.write_text(render(), encoding="utf-8")
    print(f"wrote {PATH}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
