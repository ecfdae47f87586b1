"""The OpenAPI 3.1 document of the HTTP API, built from the same constants the validator uses.

Served at ``GET /v1/openapi.json``. Bounds, enums and defaults come from
:mod:`talos_gateway.styles`, so the document and the gateway cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from talos_gateway import styles

ERROR_STATUSES: dict[str, tuple[str, str]] = {
    "400": ("invalid_request, content_policy_violation", "The request was refused; nothing was charged."),
    "401": ("invalid_api_key", "Missing, unknown or revoked API key."),
    "402": ("insufficient_credits", "Not enough credits for one image."),
    "403": ("age_confirmation_required", "nsfw: true before the one-time age confirmation."),
    "404": ("not_found", "No such job for this account (another account's job is never shown)."),
    "409": ("idempotency_conflict", "The Idempotency-Key was used with a different body."),
    "413": ("request_too_large", "The body is larger than the gateway accepts."),
    "422": ("output_blocked", "Adult output with 18+ off; refunded."),
    "429": ("rate_limited", "Per-key request rate, per-key concurrent jobs, or a moderation cooldown."),
    "500": ("internal", "Internal error; refunded."),
    "503": (
        "no_capacity, unavailable",
        "No render node can take the job, or a dependency is down; nothing charged.",
    ),
    "504": ("timeout", "The job took too long; refunded."),
}

_RETRY_STATUSES = {"429", "503"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """Optional request fields may also be sent as null, meaning "use the default"."""
    out = dict(schema)
    kind = out.get("type")
    if isinstance(kind, str):
        out["type"] = [kind, "null"]
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    if "const" in out:
        out["enum"] = [out.pop("const"), None]
    return out


def _request_schema() -> dict[str, Any]:
    optional: dict[str, dict[str, Any]] = {
        "negative_prompt": {
            "type": "string",
            "maxLength": styles.NEGATIVE_MAX_CHARS,
            "description": "What to steer away from; appended to the style's own negative prompt.",
        },
        "style": {"type": "string", "enum": list(styles.STYLES), "default": styles.DEFAULT_STYLE},
        "size": {"type": "string", "enum": list(styles.SIZES), "default": styles.DEFAULT_SIZE},
        "aspect_ratio": {
            "type": "string",
            "enum": list(styles.ASPECT_RATIOS),
            "description": "Alternative to size; when both are given they must agree.",
        },
        "steps": {
            "type": "integer",
            "minimum": styles.STEPS_MIN,
            "maximum": styles.STEPS_MAX,
            "default": styles.STEPS_DEFAULT,
        },
        "guidance": {
            "type": "number",
            "minimum": styles.GUIDANCE_MIN,
            "maximum": styles.GUIDANCE_MAX,
            "description": "Classifier-free guidance; the default depends on the style (see /v1/options).",
        },
        "seed": {
            "type": "integer",
            "minimum": styles.SEED_MIN,
            "maximum": styles.SEED_MAX,
            "description": "Random when absent; always returned.",
        },
        "nsfw": {"type": "boolean", "default": False, "description": "Needs the age confirmation first."},
        "output_format": {"type": "string", "enum": list(styles.OUTPUT_FORMATS), "default": "png"},
        "stream": {
            "type": "boolean",
            "default": False,
            "description": "Answer with text/event-stream job events (ignored by POST /v1/jobs).",
        },
        "model": {"const": styles.MODEL_ID, "description": "OpenAI compatibility: absent or aperture-hd."},
        "n": {"const": 1, "description": "OpenAI compatibility: one image per request."},
        "response_format": {
            "const": "b64_json",
            "description": "OpenAI compatibility: nothing is stored, so there are no URLs.",
        },
        "user": {"type": "string", "description": "OpenAI compatibility: ignored and never stored."},
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["prompt"],
        "properties": {
            "prompt": {
                "type": "string",
                "minLength": 1,
                "maxLength": styles.PROMPT_MAX_CHARS,
                "pattern": "\\S",
                "description": "What to draw: 1 to 2,000 characters after trimming.",
            },
            **{name: _nullable(schema) for name, schema in optional.items()},
        },
        "description": "Any field not listed here is refused with 400 invalid_request naming it.",
    }


def _schemas() -> dict[str, Any]:
    event_props: dict[str, Any] = {"job_id": {"type": "string"}}
    return {
        "GenerationRequest": _request_schema(),
        "ErrorDetail": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "examples": ["invalid_request"]},
                "message": {"type": "string", "description": "Plain words; never echoes the prompt."},
            },
        },
        "Error": {"type": "object", "required": ["error"], "properties": {"error": _ref("ErrorDetail")}},
        "ImageResponse": {
            "type": "object",
            "required": ["created", "job_id", "data", "size", "output_format", "credits_charged", "balance"],
            "properties": {
                "created": {"type": "integer", "description": "Unix time the job was accepted."},
                "job_id": {"type": "string"},
                "data": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["b64_json", "seed"],
                        "properties": {
                            "b64_json": {"type": "string", "contentEncoding": "base64"},
                            "seed": {
                                "type": "integer",
                                "minimum": styles.SEED_MIN,
                                "maximum": styles.SEED_MAX,
                            },
                        },
                    },
                },
                "size": {"type": "string", "enum": list(styles.SIZES)},
                "output_format": {"type": "string", "enum": list(styles.OUTPUT_FORMATS)},
                "credits_charged": {"type": "integer", "const": styles.PRICE_PER_IMAGE},
                "balance": {"type": "integer", "description": "Spendable credits left: allowance + balance."},
            },
        },
        "JobAccepted": {
            "type": "object",
            "required": ["job_id"],
            "properties": {"job_id": {"type": "string"}},
        },
        "CancelResult": {
            "type": "object",
            "required": ["job_id", "cancelled"],
            "properties": {"job_id": {"type": "string"}, "cancelled": {"type": "boolean"}},
        },
        "QueuedEvent": {
            "type": "object",
            "required": ["job_id", "position", "eta_seconds"],
            "properties": {**event_props, "position": {"type": "integer"}, "eta_seconds": {"type": "number"}},
        },
        "StartedEvent": {"type": "object", "required": ["job_id"], "properties": event_props},
        "ProgressEvent": {
            "type": "object",
            "required": ["job_id", "step", "total_steps"],
            "properties": {
                **event_props,
                "step": {"type": "integer"},
                "total_steps": {"type": "integer"},
                "preview_b64": {"type": "string", "description": "A small JPEG preview, base64."},
            },
        },
        "CompletedEvent": {
            "type": "object",
            "required": ["job_id", "b64_json", "seed", "credits_charged", "balance"],
            "properties": {
                **event_props,
                "b64_json": {"type": "string", "contentEncoding": "base64"},
                "seed": {"type": "integer"},
                "credits_charged": {"type": "integer", "const": styles.PRICE_PER_IMAGE},
                "balance": {"type": "integer"},
            },
        },
        "FailedEvent": {
            "type": "object",
            "required": ["job_id", "error", "refunded"],
            "properties": {
                **event_props,
                "error": _ref("ErrorDetail"),
                "refunded": {"type": "boolean", "const": True},
            },
        },
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
                        "required": ["id", "name", "prompt_template", "negative_prompt", "default_guidance"],
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
                "steps": _range("integer"),
                "guidance": _range("number"),
                "seed": {
                    "type": "object",
                    "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                },
                "output_formats": {"type": "array", "items": {"type": "string"}},
                "price_per_image": {"type": "integer"},
                "model": {"type": "string"},
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
    for status in statuses:
        codes, text = ERROR_STATUSES[status]
        response: dict[str, Any] = {
            "description": f"{codes}: {text}",
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
    "Server-sent events: `queued` {job_id, position, eta_seconds}, `started` {job_id}, `progress` "
    "{job_id, step, total_steps, preview_b64?}, then exactly one terminal event: `completed` "
    "{job_id, b64_json, seed, credits_charged, balance} or `failed` {job_id, error: {code, message}, "
    "refunded: true}. Lines starting with ':' are keep-alive comments."
)

_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "A retry with the same key and the same body returns the same job; another body: 409.",
    "schema": {"type": "string", "maxLength": styles.IDEMPOTENCY_KEY_MAX_CHARS},
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
                    "summary": "Generate one image (OpenAI-compatible); stream: true answers with events",
                    "parameters": [_IDEMPOTENCY],
                    "requestBody": {"required": True, "content": _json("GenerationRequest")},
                    "responses": {
                        "200": _ok(
                            "The image (JSON), or with stream: true the job's events. " + _EVENTS_TEXT,
                            {
                                "application/json": {"schema": _ref("ImageResponse")},
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
