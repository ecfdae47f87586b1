"""The HTTP side of the gateway (aiohttp): the public API, SSE job events, the page, health, metrics.

Every response carries ``X-Request-Id`` and a strict Content-Security-Policy; every error is
``{"error": {"code", "message"}}`` with the status from :data:`talos_common.errors.ERRORS`.
Bodies above ``max_request_bytes`` are refused with 413 before they are read.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from talos.api.v1 import contract
from talos.api.v1.contract import Generation, InvalidRequest, check_idempotency_key, parse_generation
from talos_common.errors import ERRORS, TalosError
from talos_gateway import metrics, openapi, styles
from talos_gateway.auth import Principal, next_utc_midnight
from talos_gateway.config import Settings
from talos_gateway.http_bodies import (
    dumps,
    error_body,
    event_payload,
    generation_body,
    openai_completed,
    openai_failed,
    openai_partial,
    shaped,
    sse,
)
from talos_gateway.job import CompletedEvent, FailedEvent, Job, ProgressEvent
from talos_gateway.jobs import JobRegistry

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent / "web"
# The page and the API use only this origin; images arrive as data: or blob: URLs.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'; object-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

REGISTRY_KEY = web.AppKey("registry", JobRegistry)
REQUEST_ID_KEY = web.RequestKey("request_id", str)
SETTINGS_KEY = web.AppKey("settings", Settings)
Readiness = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]
READINESS_KEY: web.AppKey[Readiness] = web.AppKey("readiness")
OPENAPI_KEY = web.AppKey("openapi", bytes)
METRICS_KEY = web.AppKey("metrics_registries", list)


# -- errors -------------------------------------------------------------------------------


def error_response(error: TalosError) -> web.Response:
    headers: dict[str, str] = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    if error.code == "invalid_api_key":
        headers["WWW-Authenticate"] = 'Bearer realm="talos"'
    return _json(error_body(error.code, error.message), status=error.kind.http_status, headers=headers)


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    status = exc.status
    if status == 413:
        code, message = "request_too_large", "the request body is too large"
    elif status == 404:
        code, message = "not_found", "no such path"
    elif status == 405:
        method = getattr(exc, "method", "") or "this method"
        code, message = "invalid_request", f"{method} is not allowed on this path"
    elif status >= 500:
        code, message = "internal", "internal error"
    else:
        code, message = "invalid_request", exc.reason or "bad request"
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "location")}
    if 300 <= status < 400:
        return web.Response(status=status, headers=headers)
    return _json(error_body(code, message), status=status, headers=headers)


def _route_name(request: web.Request) -> str:
    info = request.match_info.route.resource
    if info is None:
        return "unmatched"
    return info.canonical


@web.middleware
async def guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Request id, body cap, error shape, metrics: one place for every route."""
    incoming = request.headers.get("X-Request-Id", "")
    request[REQUEST_ID_KEY] = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
    started = time.perf_counter()
    route = _route_name(request)
    response: web.StreamResponse
    try:
        limit = request.app[SETTINGS_KEY].max_request_bytes
        if request.content_length is not None and request.content_length > limit:
            raise TalosError("request_too_large", f"the request body is larger than {limit} bytes")
        response = await handler(request)
    except TalosError as error:
        response = error_response(error)
    except InvalidRequest as invalid:
        response = error_response(TalosError("invalid_request", invalid.message, field=invalid.field))
    except web.HTTPException as exc:
        response = _from_http_exception(exc)
    except (ConnectionResetError, ConnectionError):
        raise
    except Exception:
        log.exception("unhandled error", extra={"request_id": request[REQUEST_ID_KEY], "route": route})
        response = error_response(TalosError("internal", "internal error"))
    finally:
        metrics.HTTP_SECONDS.labels(route).observe(time.perf_counter() - started)
    metrics.HTTP_REQUESTS.labels(route, request.method, str(response.status)).inc()
    return response


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["X-Request-Id"] = request.get(REQUEST_ID_KEY) or uuid.uuid4().hex
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


# -- helpers ------------------------------------------------------------------------------


def _registry(request: web.Request) -> JobRegistry:
    return request.app[REGISTRY_KEY]


async def _principal(request: web.Request) -> Principal:
    header = request.headers.get("Authorization")
    return await _registry(request).auth.authenticate_bearer(header, "the Authorization header")


async def _json_body(request: web.Request) -> Any:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS_KEY].max_request_bytes
        raise TalosError("request_too_large", f"the request body is larger than {limit} bytes") from None
    if not raw.strip():
        raise TalosError("invalid_request", "the request body must be a JSON object", field="body")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise TalosError("invalid_request", "the request body is not valid JSON", field="body") from None


def _json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=dumps(value), status=status, content_type="application/json", headers=headers)


async def _event_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        },
    )
    await response.prepare(request)
    return response


async def _stream_events(request: web.Request, job: Job) -> web.StreamResponse:
    """Writes the job's TALOS events as SSE until every image has ended (the current state first)."""
    if job.fully_delivered:
        raise TalosError("not_found", "this job's images were already delivered; results are not kept")
    response = await _event_stream(request)
    heartbeat = request.app[SETTINGS_KEY].sse_heartbeat_seconds
    async for event in job.follow(heartbeat):
        if event is None:
            await response.write(b": keep-alive\n\n")
            continue
        name, data = event_payload(job, event)
        await response.write(sse(name, data))
        if isinstance(event, CompletedEvent):
            job.mark_delivered(event.index)
    await response.write_eof()
    return response


async def _stream_openai(request: web.Request, job: Job, partial_images: int) -> web.StreamResponse:
    """OpenAI's image stream: up to ``partial_images`` previews per image, then its completed event."""
    response = await _event_stream(request)
    heartbeat = request.app[SETTINGS_KEY].sse_heartbeat_seconds
    partials = [0] * job.n
    completed = 0
    first_failure: FailedEvent | None = None
    async for event in job.follow(heartbeat):
        if event is None:
            await response.write(b": keep-alive\n\n")
        elif isinstance(event, ProgressEvent) and event.preview_jpeg:
            done = partials[event.index]
            # Spread the partial images over the render: the j-th from step T*(j+1)/(k+1) on.
            if done < partial_images and event.step * (partial_images + 1) >= event.total_steps * (done + 1):
                body = openai_partial(job, event.preview_jpeg, done)
                partials[event.index] = done + 1
                await response.write(sse(body["type"], body))
        elif isinstance(event, CompletedEvent):
            body = openai_completed(job, event)
            await response.write(sse(body["type"], body))
            job.mark_delivered(event.index)
            completed += 1
        elif isinstance(event, FailedEvent):
            first_failure = first_failure or event
            body = openai_failed(job, event)
            await response.write(sse(body["type"], body))
    if completed == 0 and first_failure is not None:
        # No image at all: an error event, which the openai package raises as APIError.
        await response.write(sse("error", error_body(first_failure.code, first_failure.message)))
    await response.write_eof()
    return response


# -- handlers -----------------------------------------------------------------------------


async def _submit(request: web.Request, *, bound: bool) -> tuple[Job, Generation]:
    principal = await _principal(request)
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise TalosError("invalid_request", "the request body must be a JSON object", field="body")
    generation = parse_generation(body)
    key = check_idempotency_key(request.headers.get("Idempotency-Key"))
    job = await _registry(request).submit(principal, generation, key, bound=bound)
    return job, generation


async def generations(request: web.Request) -> web.StreamResponse:
    """POST /v1/images/generations: the OpenAI-shaped call; the job is bound to this connection."""
    registry = _registry(request)
    job, generation = await _submit(request, bound=True)
    registry.attach(job)
    try:
        if generation.stream and generation.stream_format == "talos":
            return await _stream_events(request, job)
        if generation.stream:
            return await _stream_openai(request, job, generation.partial_images)
        ends: dict[int, CompletedEvent | FailedEvent] = {}
        async for event in job.follow(None):
            if isinstance(event, CompletedEvent | FailedEvent):
                ends[event.index] = event
        ordered = [ends[index] for index in sorted(ends)]
        completed = [end for end in ordered if isinstance(end, CompletedEvent)]
        if not completed:
            failure = next(end for end in ordered if isinstance(end, FailedEvent))
            code = failure.code if failure.code in ERRORS else "internal"
            raise TalosError(code, failure.message)
        response = _json(generation_body(job, ordered))
        await response.prepare(request)
        await response.write_eof()
        for end in completed:
            job.mark_delivered(end.index)
        return response
    finally:
        registry.detach(job)


async def submit_job(request: web.Request) -> web.Response:
    """POST /v1/jobs: accept and answer at once; the job goes on without this connection."""
    job, _ = await _submit(request, bound=False)
    body = shaped(contract.RESPONSES["JobAccepted"], job_id=job.id)
    return _json(body, status=202, headers={"Location": f"/v1/jobs/{job.id}/events"})


async def job_events(request: web.Request) -> web.StreamResponse:
    principal = await _principal(request)
    job = _registry(request).get(principal, request.match_info["job_id"])
    return await _stream_events(request, job)


async def cancel_job(request: web.Request) -> web.Response:
    principal = await _principal(request)
    job_id = request.match_info["job_id"]
    cancelled = await _registry(request).cancel(principal, job_id)
    return _json(shaped(contract.RESPONSES["CancelResult"], job_id=job_id, cancelled=cancelled))


def account_json(state: Any) -> dict[str, Any]:
    resets = state.allowance_resets_at
    resets_at = (
        resets.ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ")
        if resets.seconds or resets.nanos
        else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(next_utc_midnight()))
    )
    return {
        "account_id": state.account_id,
        "balance": int(state.balance),
        "allowance": {
            "daily": int(state.daily_allowance),
            "remaining": int(state.allowance_remaining),
            "resets_at": resets_at,
        },
        "age_confirmed": bool(state.age_confirmed),
        "price_per_image": int(state.price_per_image) or contract.PRICE_PER_IMAGE,
    }


async def get_account(request: web.Request) -> web.Response:
    principal = await _principal(request)
    state = await _registry(request).billing.get_account(principal.account_id)
    return _json(account_json(state))


async def confirm_age(request: web.Request) -> web.Response:
    principal = await _principal(request)
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise TalosError("invalid_request", "the request body must be a JSON object", field="body")
    for key in body:
        if key != "confirm":
            raise TalosError("invalid_request", f"unknown field '{key}'", field=str(key))
    if body.get("confirm") is not True:
        raise TalosError("invalid_request", "'confirm' must be true", field="confirm")
    state = await _registry(request).billing.confirm_age(principal.account_id)
    return _json({"age_confirmed": bool(state.age_confirmed)})


async def get_options(request: web.Request) -> web.Response:
    return _json(contract.options(styles.style_texts()))


async def get_openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI_KEY], content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: billing and moderation answer and this replica accepts jobs. ``?scope=replica``
    asks only the last (the probe that takes a draining replica out of its Services, without
    taking every replica out at once when billing or moderation is down)."""
    ready, body = await request.app[READINESS_KEY]()
    if request.query.get("scope") == "replica":
        ready = bool(body["accepting"])
    return _json(body, status=200 if ready else 503)


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = b"".join(generate_latest(registry) for registry in request.app[METRICS_KEY])
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def page(request: web.Request) -> web.StreamResponse:
    index = WEB_DIR / "index.html"
    if not index.is_file():
        raise TalosError("not_found", "the page is not installed")
    return web.FileResponse(
        index, headers={"Cache-Control": "no-cache", "Content-Type": "text/html; charset=utf-8"}
    )


async def static_file(request: web.Request) -> web.StreamResponse:
    """The page's files from ``web/``; nothing outside it, no listings, no dotfiles."""
    name = request.match_info["path"]
    base = WEB_DIR.resolve()
    target = (base / name).resolve()
    if (
        not name
        or any(part.startswith(".") for part in Path(name).parts)
        or not target.is_relative_to(base)
        or not target.is_file()
    ):
        raise TalosError("not_found", "no such file")
    return web.FileResponse(target, headers={"Cache-Control": "no-cache"})


async def root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/create")


def build_app(
    settings: Settings,
    registry: JobRegistry,
    readiness: Callable[[], Awaitable[tuple[bool, dict[str, Any]]]],
    metrics_registries: Sequence[CollectorRegistry] = (),
) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=settings.max_request_bytes)
    app[REGISTRY_KEY] = registry
    app[SETTINGS_KEY] = settings
    app[READINESS_KEY] = readiness
    app[OPENAPI_KEY] = openapi.load()
    app[METRICS_KEY] = [REGISTRY, *metrics_registries]
    app.on_response_prepare.append(_on_prepare)
    app.router.add_post("/v1/images/generations", generations)
    app.router.add_post("/v1/jobs", submit_job)
    app.router.add_get("/v1/jobs/{job_id}/events", job_events, allow_head=False)
    app.router.add_delete("/v1/jobs/{job_id}", cancel_job)
    app.router.add_get("/v1/account", get_account, allow_head=False)
    app.router.add_post("/v1/account/age-confirmation", confirm_age)
    app.router.add_get("/v1/options", get_options)
    app.router.add_get("/v1/openapi.json", get_openapi)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/", root)
    app.router.add_get("/create", page)
    app.router.add_get("/static/{path:.+}", static_file)
    return app
