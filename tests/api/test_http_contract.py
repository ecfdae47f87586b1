"""The public HTTP API against the in-process mesh: every field bound, every error code, the job model."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from talos.api.v1 import contract
from talos_dev.mesh import Account, LocalMesh

from .support import PRICE, Api, auth, decode_image, read_sse, wait_until

FAST = {"steps": 2}


# -- the walking skeleton: one image, charged exactly once ---------------------------------


async def test_generation_returns_a_png_and_charges_exactly_18(process_mesh: LocalMesh) -> None:
    """Through the processes, whose logs must not hold the prompt."""
    mesh = process_mesh
    api = Api(mesh.http_url)
    key = mesh.create_account(1000).api_key
    try:
        await _generation_returns_a_png_and_charges_exactly_18(api, key, mesh)
    finally:
        await api.close()


async def _generation_returns_a_png_and_charges_exactly_18(api: Api, key: str, mesh: LocalMesh) -> None:
    before = await api.balance(key)
    marker = "privacy-marker-" + uuid.uuid4().hex
    reply = await api.generate(
        key, {"prompt": f"a lighthouse at dusk {marker}", "negative_prompt": marker, **FAST}
    )
    assert reply.status == 200, reply.body
    body = reply.body
    assert set(body) == {prop.name for prop in contract.RESPONSES["Generation"]}
    assert body["refunded"] == []
    assert body["size"] == "1024x1024" and body["output_format"] == "png"
    assert body["credits_charged"] == PRICE
    assert len(body["data"]) == 1 and set(body["data"][0]) == {"b64_json", "seed", "image"}
    assert 0 <= body["data"][0]["seed"] <= 4_294_967_295
    image = decode_image(body["data"][0]["b64_json"])
    assert (image.format, image.size) == ("PNG", (1024, 1024))
    after = await api.balance(key)
    assert after == before - PRICE
    assert body["balance"] == after  # no allowance: spendable == balance
    assert reply.headers.get("X-Request-Id")
    uuid.UUID(body["job_id"])
    # Nothing of the prompt or the key reaches a log.
    assert mesh.gateway is not None and mesh.moderation is not None
    for log_path in (mesh.gateway.log_path, mesh.moderation.log_path):
        text = log_path.read_text(encoding="utf-8")
        assert marker not in text and key not in text


async def test_sizes_aspect_ratios_formats_and_seed(api: Api, key: str) -> None:
    portrait = await api.generate(
        key,
        {"prompt": "a tall tower", "aspect_ratio": "portrait", "output_format": "webp", "seed": 7, **FAST},
    )
    assert portrait.status == 200, portrait.body
    assert portrait.body["size"] == "832x1216" and portrait.body["output_format"] == "webp"
    assert portrait.body["data"][0]["seed"] == 7
    image = decode_image(portrait.body["data"][0]["b64_json"])
    assert (image.format, image.size) == ("WEBP", (832, 1216))

    landscape = await api.generate(
        key,
        {
            "prompt": "a wide valley",
            "size": "1216x832",
            "aspect_ratio": "landscape",
            "output_format": "jpeg",
            "style": "cinematic",
            **FAST,
        },
    )
    assert landscape.status == 200, landscape.body
    image = decode_image(landscape.body["data"][0]["b64_json"])
    assert (image.format, image.size) == ("JPEG", (1216, 832))
    assert landscape.body["balance"] == 1000 - 2 * PRICE


async def test_allowance_is_spent_first_and_balance_is_spendable(
    api: Api, new_account: Callable[..., Account]
) -> None:
    account = new_account(credits=100, allowance=20)
    reply = await api.generate(account.api_key, {"prompt": "a quiet harbour", **FAST})
    assert reply.status == 200, reply.body
    state = await api.account(account.api_key)
    assert state["allowance"]["daily"] == 20 and state["allowance"]["remaining"] == 2
    assert state["balance"] == 100
    assert reply.body["balance"] == 102  # allowance remaining + balance


# -- streaming and the job resource ------------------------------------------------------


async def test_stream_true_sends_events_and_exactly_one_terminal(api: Api, key: str) -> None:
    url = api.base_url + "/v1/images/generations"
    body = {"prompt": "a paper boat", "stream": True, "stream_format": "talos", "steps": 3, "seed": 42}
    async with api.session.post(url, json=body, headers=auth(key)) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers.get("X-Request-Id")
        events = [event async for event in read_sse(resp)]
    names = [name for name, _ in events]
    assert names.count("completed") == 1 and "failed" not in names
    assert names[-1] == "completed"
    assert "started" in names
    job_ids = {data["job_id"] for _, data in events}
    assert len(job_ids) == 1
    steps = [data["step"] for name, data in events if name == "progress"]
    assert steps and steps == sorted(steps) and steps[-1] <= 3
    for name, data in events:
        if name == "progress":
            assert data["total_steps"] == 3
            if "preview_b64" in data:
                assert decode_image(data["preview_b64"]).format == "JPEG"
        if name == "queued":
            assert data["position"] >= 1 and data["eta_seconds"] >= 0
    completed = events[-1][1]
    assert set(completed) == {prop.name for prop in contract.EVENTS["completed"]}
    assert completed["seed"] == 42 and completed["credits_charged"] == PRICE
    assert completed["balance"] == 1000 - PRICE == await api.balance(key)
    assert decode_image(completed["b64_json"]).size == (1024, 1024)


async def test_submit_then_events_reconnect_replays_then_result_is_dropped(api: Api, key: str) -> None:
    reply = await api.submit(key, {"prompt": "a red kite", "steps": 4})
    assert reply.status == 202, reply.body
    assert set(reply.body) == {"job_id"}
    job_id = reply.body["job_id"]
    # First watcher leaves after the first progress event (a dropped connection).
    status, first = await api.events(key, job_id, stop=lambda name, _: name == "progress")
    assert status == 200 and first[-1][0] in ("progress", "completed")
    # A reconnect replays the current state, then follows to the end.
    status, second = await api.events(key, job_id)
    assert status == 200
    names = [name for name, _ in second]
    assert names[-1] == "completed" and names.count("completed") == 1
    assert names[0] in ("started", "progress", "completed", "queued")
    assert second[-1][1]["job_id"] == job_id
    assert decode_image(second[-1][1]["b64_json"]).format == "PNG"
    # Delivered: the image is not kept, and the job is no longer shown.
    status, third = await api.events(key, job_id)
    assert status == 404 and third[0][1]["error"]["code"] == "not_found"
    assert await api.balance(key) == 1000 - PRICE


async def test_delete_cancels_and_releases_the_hold(api: Api, key: str) -> None:
    reply = await api.submit(key, {"prompt": "a long exposure of stars", "steps": 60, "size": "1216x832"})
    assert reply.status == 202, reply.body
    job_id = reply.body["job_id"]
    assert await api.balance(key) == 1000 - PRICE  # held, not yet charged
    cancelled = await api.call("DELETE", f"/v1/jobs/{job_id}", key)
    assert cancelled.status == 200 and cancelled.body == {"job_id": job_id, "cancelled": True}
    assert await api.balance(key) == 1000
    status, events = await api.events(key, job_id)
    assert status == 200
    assert events[-1][0] == "failed"
    assert events[-1][1]["error"]["code"] == "cancelled" and events[-1][1]["refunded"] is True
    again = await api.call("DELETE", f"/v1/jobs/{job_id}", key)
    assert again.status == 200 and again.body["cancelled"] is False


async def test_client_disconnect_cancels_and_refunds(api: Api, account: Account, mesh: LocalMesh) -> None:
    url = api.base_url + "/v1/images/generations"
    body = {"prompt": "a slow sunrise", "steps": 60, "size": "1216x832"}
    request = asyncio.ensure_future(api.session.post(url, json=body, headers=auth(account.api_key)))

    async def balance_is(value: int) -> bool:  # asks billing itself: no per-key rate limit
        state = await asyncio.to_thread(mesh.account, account.account_id)
        return bool(state.balance == value)

    await wait_until(lambda: balance_is(1000 - PRICE), what="the hold")
    request.cancel()  # the client goes away mid-render
    with pytest.raises(asyncio.CancelledError):
        await request
    await wait_until(lambda: balance_is(1000), what="the refund after the disconnect")
    await wait_until(lambda: _no_active_jobs(mesh), what="the job's end")


async def _no_active_jobs(mesh: LocalMesh) -> bool:
    readiness = await asyncio.to_thread(mesh.readiness)
    return bool(readiness.get("jobs_active") == 0)


async def test_other_accounts_jobs_are_not_found(
    api: Api, key: str, new_account: Callable[..., Account]
) -> None:
    reply = await api.submit(key, {"prompt": "a private picture", "steps": 60, "size": "1216x832"})
    assert reply.status == 202
    job_id = reply.body["job_id"]
    other = new_account().api_key
    status, events = await api.events(other, job_id)
    assert status == 404 and events[0][1]["error"]["code"] == "not_found"
    stolen = await api.call("DELETE", f"/v1/jobs/{job_id}", other)
    assert stolen.status == 404 and stolen.code == "not_found"
    unknown = await api.call("DELETE", f"/v1/jobs/{uuid.uuid4()}", key)
    assert unknown.status == 404 and unknown.code == "not_found"
    # The owner still has it, and cancels it.
    mine = await api.call("DELETE", f"/v1/jobs/{job_id}", key)
    assert mine.status == 200 and mine.body["cancelled"] is True
    assert await api.balance(key) == 1000


# -- idempotency -----------------------------------------------------------------------------


async def test_idempotency_key_same_body_same_job_other_body_409(api: Api, key: str) -> None:
    headers = {"Idempotency-Key": "retry-" + uuid.uuid4().hex}
    body = {"prompt": "a lantern", "steps": 60, "size": "1216x832"}
    first = await api.submit(key, body, headers=headers)
    second = await api.submit(key, body, headers=headers)
    assert first.status == second.status == 202
    assert first.body["job_id"] == second.body["job_id"]
    assert await api.balance(key) == 1000 - PRICE  # held once
    conflict = await api.submit(key, {**body, "prompt": "another lantern"}, headers=headers)
    assert conflict.status == 409 and conflict.code == "idempotency_conflict"
    too_long = await api.submit(key, body, headers={"Idempotency-Key": "k" * 256})
    assert too_long.status == 400 and "Idempotency-Key" in too_long.message
    await api.call("DELETE", f"/v1/jobs/{first.body['job_id']}", key)
    assert await api.balance(key) == 1000


# -- validation: every field and bound ---------------------------------------------------

INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("missing prompt", {}, "prompt"),
    ("null prompt", {"prompt": None}, "prompt"),
    ("empty prompt", {"prompt": ""}, "prompt"),
    ("blank prompt", {"prompt": "   \n\t "}, "prompt"),
    ("long prompt", {"prompt": "a" * 2001}, "prompt"),
    ("prompt type", {"prompt": 5}, "prompt"),
    ("long negative", {"prompt": "x", "negative_prompt": "n" * 2001}, "negative_prompt"),
    ("negative type", {"prompt": "x", "negative_prompt": ["a"]}, "negative_prompt"),
    ("style", {"prompt": "x", "style": "watercolor"}, "style"),
    ("size", {"prompt": "x", "size": "512x512"}, "size"),
    ("aspect_ratio", {"prompt": "x", "aspect_ratio": "wide"}, "aspect_ratio"),
    (
        "size and ratio disagree",
        {"prompt": "x", "size": "1024x1024", "aspect_ratio": "portrait"},
        "aspect_ratio",
    ),
    ("steps 0", {"prompt": "x", "steps": 0}, "steps"),
    ("steps 61", {"prompt": "x", "steps": 61}, "steps"),
    ("steps fraction", {"prompt": "x", "steps": 2.5}, "steps"),
    ("steps string", {"prompt": "x", "steps": "30"}, "steps"),
    ("steps bool", {"prompt": "x", "steps": True}, "steps"),
    ("guidance low", {"prompt": "x", "guidance": 0.99}, "guidance"),
    ("guidance high", {"prompt": "x", "guidance": 20.01}, "guidance"),
    ("guidance string", {"prompt": "x", "guidance": "7"}, "guidance"),
    ("seed negative", {"prompt": "x", "seed": -1}, "seed"),
    ("seed too big", {"prompt": "x", "seed": 4_294_967_296}, "seed"),
    ("seed fraction", {"prompt": "x", "seed": 1.5}, "seed"),
    ("nsfw type", {"prompt": "x", "nsfw": "yes"}, "nsfw"),
    ("output_format", {"prompt": "x", "output_format": "gif"}, "output_format"),
    ("stream type", {"prompt": "x", "stream": "true"}, "stream"),
    ("model", {"prompt": "x", "model": "dall-e-3"}, "model"),
    ("n", {"prompt": "x", "n": 5}, "n"),
    ("n zero", {"prompt": "x", "n": 0}, "n"),
    ("response_format", {"prompt": "x", "response_format": "url"}, "response_format"),
    ("user type", {"prompt": "x", "user": 5}, "user"),
    ("unknown field", {"prompt": "x", "frame_count": 3}, "frame_count"),
    ("quality", {"prompt": "x", "quality": "ultra"}, "quality"),
    ("unknown field 2", {"prompt": "x", "negative": "y"}, "negative"),
]


@pytest.mark.parametrize(("body", "field"), [(b, f) for _, b, f in INVALID], ids=[n for n, _, _ in INVALID])
async def test_invalid_fields_are_400_naming_the_field(
    api: Api, key: str, body: dict[str, Any], field: str
) -> None:
    for path in ("/v1/images/generations", "/v1/jobs"):
        reply = await api.call("POST", path, key, body)
        assert reply.status == 400, (path, reply.body)
        assert reply.code == "invalid_request"
        assert f"'{field}'" in reply.message, reply.message
        assert reply.headers.get("X-Request-Id")


async def test_body_that_is_not_a_json_object_is_400(api: Api, key: str) -> None:
    for raw in (b"not json", b"[1, 2]", b"", b'"prompt"', b"\xff\xfe"):
        reply = await api.call(
            "POST", "/v1/images/generations", key, raw=raw, headers={"Content-Type": "application/json"}
        )
        assert reply.status == 400 and reply.code == "invalid_request", (raw, reply.body)
    assert await api.balance(key) == 1000


VALID_EDGES: list[dict[str, Any]] = [
    {"prompt": "p" * 2000, "negative_prompt": "n" * 2000},
    {"prompt": "  padded  " + "q" * 1990 + "  "},
    {"prompt": "x", "steps": 1, "guidance": 1, "seed": 0},
    {"prompt": "x", "steps": 60, "guidance": 20.0, "seed": 4_294_967_295},
    {"prompt": "x", "model": "aperture-hd", "n": 1, "response_format": "b64_json", "user": "someone"},
    {
        "prompt": "x",
        "size": "832x1216",
        "aspect_ratio": "portrait",
        "style": "anime",
        "output_format": "webp",
    },
    {"prompt": "x", "style": "digital-art", "steps": 30.0, "nsfw": False, "stream": False},
    {"prompt": "x", "style": "3d", "negative_prompt": None, "seed": None, "guidance": None, "model": None},
]


async def test_bounds_are_inclusive_and_compat_fields_accepted(api: Api, key: str) -> None:
    for body in VALID_EDGES:
        reply = await api.submit(key, body)
        assert reply.status == 202, (body, reply.body)
        cancelled = await api.call("DELETE", f"/v1/jobs/{reply.body['job_id']}", key)
        assert cancelled.status == 200, cancelled.body
    assert await api.balance(key) == 1000


# -- the other errors ----------------------------------------------------------------------


async def test_auth_errors_are_401(api: Api, mesh: LocalMesh) -> None:
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer tk_unknown_key"}):
        for method, path, body in (
            ("POST", "/v1/images/generations", {"prompt": "x"}),
            ("POST", "/v1/jobs", {"prompt": "x"}),
            ("GET", "/v1/account", None),
            ("POST", "/v1/account/age-confirmation", {"confirm": True}),
            ("GET", f"/v1/jobs/{uuid.uuid4()}/events", None),
            ("DELETE", f"/v1/jobs/{uuid.uuid4()}", None),
        ):
            reply = await api.call(method, path, None, body, headers=headers)
            assert reply.status == 401, (headers, path, reply.body)
            assert reply.code == "invalid_api_key"
            assert "Bearer" in reply.headers.get("WWW-Authenticate", "")


async def test_insufficient_credits_is_402_and_charges_nothing(
    api: Api, new_account: Callable[..., Account]
) -> None:
    poor = new_account(credits=PRICE - 1)
    reply = await api.generate(poor.api_key, {"prompt": "a coin", **FAST})
    assert reply.status == 402 and reply.code == "insufficient_credits"
    assert await api.balance(poor.api_key) == PRICE - 1


async def test_nsfw_needs_age_confirmation(api: Api, key: str) -> None:
    refused = await api.submit(key, {"prompt": "a figure study", "nsfw": True})
    assert refused.status == 403 and refused.code == "age_confirmation_required"
    bad = await api.call("POST", "/v1/account/age-confirmation", key, {"confirm": False})
    assert bad.status == 400 and bad.code == "invalid_request"
    extra = await api.call("POST", "/v1/account/age-confirmation", key, {"confirm": True, "age": 30})
    assert extra.status == 400 and "'age'" in extra.message
    assert (await api.account(key))["age_confirmed"] is False
    confirmed = await api.call("POST", "/v1/account/age-confirmation", key, {"confirm": True})
    assert confirmed.status == 200 and confirmed.body == {"age_confirmed": True}
    assert (await api.account(key))["age_confirmed"] is True
    accepted = await api.submit(key, {"prompt": "a figure study", "nsfw": True, "steps": 60})
    assert accepted.status == 202, accepted.body
    await api.call("DELETE", f"/v1/jobs/{accepted.body['job_id']}", key)
    assert await api.balance(key) == 1000


async def test_content_policy_violation_does_not_echo_and_cooldown_is_429(api: Api, key: str) -> None:
    # Made-up trigger words from tests/moderation/test_rules.json (a minor term + a sexual term).
    marker = "zorbling blarfed " + uuid.uuid4().hex[:8]
    for _ in range(3):
        reply = await api.generate(key, {"prompt": marker})
        assert reply.status == 400 and reply.code == "content_policy_violation", reply.body
        assert "zorbling" not in json.dumps(reply.body) and marker not in json.dumps(reply.body)
    # The preset-expanded and negative prompts are checked too: a negative pushing towards nudity counts.
    cooled = await api.generate(key, {"prompt": "a garden"})
    assert cooled.status == 429 and cooled.code == "rate_limited"
    assert int(cooled.headers["Retry-After"]) > 60
    assert await api.balance(key) == 1000


async def test_negative_prompt_is_checked_by_meaning(api: Api, key: str) -> None:
    protective = await api.submit(key, {"prompt": "a zorbling in a meadow", "negative_prompt": "blarfed"})
    assert protective.status == 202, protective.body
    await api.call("DELETE", f"/v1/jobs/{protective.body['job_id']}", key)
    pushing = await api.generate(key, {"prompt": "a zorbling in a meadow", "negative_prompt": "frobwear"})
    assert pushing.status == 400 and pushing.code == "content_policy_violation", pushing.body
    assert await api.balance(key) == 1000


async def test_too_many_concurrent_jobs_is_429(api: Api, key: str, mesh: LocalMesh) -> None:
    jobs = []
    body = {"prompt": "a field of wheat", "steps": 60, "size": "1216x832"}
    try:
        for _ in range(4):
            reply = await api.submit(key, body)
            assert reply.status == 202, reply.body
            jobs.append(reply.body["job_id"])
        fifth = await api.submit(key, body)
        assert fifth.status == 429 and fifth.code == "rate_limited"
        assert int(fifth.headers["Retry-After"]) >= 1
    finally:
        for job_id in jobs:
            await api.call("DELETE", f"/v1/jobs/{job_id}", key)
    assert await api.balance(key) == 1000


async def test_request_too_large_is_413_before_reading(api: Api, key: str) -> None:
    huge = json.dumps({"prompt": "x", "negative_prompt": "n" * 200_000}).encode()
    reply = await api.call(
        "POST", "/v1/images/generations", key, raw=huge, headers={"Content-Type": "application/json"}
    )
    assert reply.status == 413 and reply.code == "request_too_large"

    async def chunks() -> Any:
        for _ in range(40):
            yield b" " * 4096
        yield b'{"prompt": "x"}'

    url = api.base_url + "/v1/jobs"
    async with api.session.post(url, data=chunks(), headers=auth(key)) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == "request_too_large"
    assert await api.balance(key) == 1000


# -- account, options, documents, health -------------------------------------------------


async def test_account_shape(api: Api, account: Account) -> None:
    state = await api.account(account.api_key)
    assert set(state) == {"account_id", "balance", "allowance", "age_confirmed", "price_per_image"}
    assert state["account_id"] == account.account_id
    assert state["balance"] == 1000 and state["price_per_image"] == PRICE
    assert set(state["allowance"]) == {"daily", "remaining", "resets_at"}
    assert state["allowance"]["resets_at"].endswith("T00:00:00Z")


async def test_options_show_the_exact_presets(api: Api) -> None:
    reply = await api.call("GET", "/v1/options")
    assert reply.status == 200
    options = reply.body
    ids = [style["id"] for style in options["styles"]]
    assert ids == ["photo", "cinematic", "anime", "digital-art", "3d"]
    assert options["default_style"] == "photo"
    baseline = "jpeg artifacts"
    for style in options["styles"]:
        assert style["prompt_template"].count("{prompt}") == 1
        assert baseline in style["negative_prompt"]
        assert 1 <= style["default_guidance"] <= 20
    photo = options["styles"][0]
    assert "photograph" in photo["prompt_template"] and "35mm" in photo["prompt_template"]
    assert "oversaturated" in photo["negative_prompt"] and "plastic" in photo["negative_prompt"]
    assert len({style["default_guidance"] for style in options["styles"]}) > 1
    assert [s["id"] for s in options["sizes"]] == ["1024x1024", "832x1216", "1216x832"]
    assert options["steps"] == {"min": 1, "max": 60, "default": 30}
    assert options["guidance"]["min"] == 1 and options["guidance"]["max"] == 20
    assert options["guidance"]["default"] == photo["default_guidance"]
    assert options["price_per_image"] == PRICE
    assert options["output_formats"] == ["png", "webp", "jpeg"]


async def test_openapi_document_covers_every_endpoint(api: Api) -> None:
    reply = await api.call("GET", "/v1/openapi.json")
    assert reply.status == 200
    doc = reply.body
    assert doc["openapi"].startswith("3.1")
    assert {
        "/v1/images/generations",
        "/v1/jobs",
        "/v1/jobs/{job_id}/events",
        "/v1/jobs/{job_id}",
        "/v1/account",
        "/v1/account/age-confirmation",
        "/v1/options",
        "/v1/openapi.json",
        "/healthz",
        "/readyz",
        "/metrics",
    } <= set(doc["paths"])
    request = doc["components"]["schemas"]["GenerationRequest"]
    assert request["additionalProperties"] is False and request["required"] == ["prompt"]
    props = request["properties"]
    assert props["steps"]["minimum"] == 1 and props["steps"]["maximum"] == 60
    assert props["seed"]["maximum"] == 4_294_967_295
    assert props["prompt"]["maxLength"] == 2000
    responses = doc["paths"]["/v1/images/generations"]["post"]["responses"]
    assert {"200", "400", "401", "402", "403", "409", "413", "422", "429", "500", "503", "504"} <= set(
        responses
    )


async def test_health_readiness_and_metrics(api: Api) -> None:
    health = await api.call("GET", "/healthz")
    assert health.status == 200 and health.body == {"status": "ok"}
    ready = await api.call("GET", "/readyz")
    assert ready.status == 200
    assert ready.body["billing"] is True and ready.body["moderation"] is True
    assert ready.body["nodes_connected"] >= 1 and "nodes_idle" in ready.body
    async with api.session.get(api.base_url + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    assert "talos_gateway_http_requests_total" in text
    assert "talos_gateway_classify_calls_total" in text
    assert "talos_relay" in text


async def test_every_response_has_a_request_id_and_errors_have_one_shape(api: Api) -> None:
    for method, path in (
        ("GET", "/nope"),
        ("PUT", "/v1/jobs"),
        ("GET", "/static/missing.js"),
        ("GET", "/healthz"),
    ):
        reply = await api.call(method, path)
        assert reply.headers.get("X-Request-Id"), path
        if reply.status >= 400:
            assert set(reply.body) == {"error"} and set(reply.body["error"]) == {"code", "message"}
        if method == "PUT":
            assert reply.status == 405 and "Allow" in reply.headers
            assert reply.message == "PUT is not allowed on this path", reply.message
    echoed = await api.call("GET", "/healthz", headers={"X-Request-Id": "trace-123"})
    assert echoed.headers["X-Request-Id"] == "trace-123"


async def test_page_is_served_with_a_strict_csp(api: Api) -> None:
    async with api.session.get(api.base_url + "/", allow_redirects=False) as resp:
        assert resp.status in (301, 302, 307, 308) and resp.headers["Location"] == "/create"
    async with api.session.get(api.base_url + "/create") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/html")
        csp = resp.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "http" not in csp
        assert "frame-ancestors 'none'" in csp
        html = await resp.text()
    assert "/static/" in html
    for asset in ("/static/app.js", "/static/style.css"):
        async with api.session.get(api.base_url + asset) as resp:
            assert resp.status == 200, asset
            assert resp.headers.get("Content-Security-Policy") == csp


async def test_sse_reconnect_after_failure_replays_the_failure(api: Api, key: str) -> None:
    reply = await api.submit(key, {"prompt": "a moth", "steps": 60, "size": "1216x832"})
    job_id = reply.body["job_id"]
    await api.call("DELETE", f"/v1/jobs/{job_id}", key)
    for _ in range(2):  # a failure is replayed on every reconnect until the record expires
        status, events = await api.events(key, job_id)
        assert status == 200
        names = [name for name, _ in events]
        assert names[-1] == "failed" and names.count("failed") == 1 and "completed" not in names
        assert events[-1][1] == {
            "job_id": job_id,
            "image": 0,
            "error": {"code": "cancelled", "message": events[-1][1]["error"]["message"]},
            "seed": events[-1][1]["seed"],
            "refunded": True,
        }


async def test_keep_alive_session_is_reused(mesh: LocalMesh) -> None:
    """Many small calls over one connection work (the middleware keeps no per-connection state)."""
    async with aiohttp.ClientSession() as session:
        for _ in range(5):
            async with session.get(mesh.http_url + "/v1/options") as resp:
                assert resp.status == 200
