"""A second, real gateway of its own (shared billing, its own moderation and render node), for what
must not disturb the shared mesh: no node at all, a low request rate, a moderation whose output
classifier blocks every image (threshold 0), and SIGTERM.

- no node connected → 503 no_capacity, nothing charged;
- per-key request rate → 429 with Retry-After;
- 18+ off → ClassifyImage is called and its block is a 422 output_blocked, refunded;
- 18+ on → ClassifyImage is never called: the image comes back although this moderation would
  block every image, its log shows no image verdict and the gateway's classify counter is flat;
- a result nobody collects is dropped after result_ttl_seconds;
- readiness is 503 while moderation does not answer;
- SIGTERM → new jobs get 503, the job in flight finishes and is charged, the one that cannot
  finish within the grace fails and is refunded, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from talos_dev.mesh import Account, LocalMesh
from talos_dev.procs import ServiceProcess, python_module

from .support import PRICE, Api, auth, decode_image, read_sse, wait_until

REPO = Path(__file__).resolve().parents[2]
TEST_RULES = REPO / "tests" / "moderation" / "test_rules.json"
RATE_PER_MINUTE = 5
DRAIN_GRACE = 4
RESULT_TTL = 2


@dataclass
class Stack:
    mesh: LocalMesh
    moderation: ServiceProcess
    gateway: ServiceProcess
    log_dir: Path
    node: ServiceProcess | None = None

    @property
    def http_url(self) -> str:
        return str(self.gateway.ready["http"])

    def readiness(self) -> dict[str, object]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(self.http_url + "/readyz", timeout=5) as response:
                return dict(json.loads(response.read()))
        except urllib.error.HTTPError as error:
            return dict(json.loads(error.read() or b"{}"))

    def image_verdicts(self) -> int:
        """How many ClassifyImage calls this moderation has answered (one log line each)."""
        lines = self.moderation.log_path.read_text(encoding="utf-8").splitlines()
        return sum(
            1 for line in lines if line.startswith("{") and json.loads(line).get("msg") == "image verdict"
        )

    def add_node(self) -> None:
        token = self.mesh.create_node_token("isolated-node")
        env = {
            "TALOS_RENDER_RELAY": str(self.gateway.ready["relay"]),
            "TALOS_RENDER_TOKEN": token,
            "TALOS_RENDER_MODEL": "builtin",
            "TALOS_RENDER_DATA_DIR": str(self.log_dir),
            "TALOS_RENDER_HEALTH_HOST": "127.0.0.1",
            "TALOS_RENDER_HEALTH_PORT": "0",
            "TALOS_RENDER_METRICS_PORT": "0",
        }
        self.node = ServiceProcess(
            "render-isolated", python_module("talos_render"), env, self.log_dir / "render.log"
        )
        self.node.start(timeout=300)


@pytest.fixture(scope="module")
def stack(mesh: LocalMesh, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("isolated")
    moderation = ServiceProcess(
        "moderation-strict",
        python_module("talos_moderation"),
        {
            "TALOS_MODERATION_HOST": "127.0.0.1",
            "TALOS_MODERATION_PORT": "0",
            "TALOS_MODERATION_RULES_PATH": str(TEST_RULES),
            # Every image scores at or above 0: this moderation blocks every image it is shown.
            "TALOS_MODERATION_NSFW_THRESHOLD": "0",
        },
        log_dir / "moderation.log",
    )
    moderation.start()
    gateway = ServiceProcess(
        "gateway-isolated",
        python_module("talos_gateway"),
        {
            "TALOS_GATEWAY_HOST": "127.0.0.1",
            "TALOS_GATEWAY_HTTP_PORT": "0",
            "TALOS_GATEWAY_GRPC_PORT": "0",
            "TALOS_GATEWAY_RELAY_PORT": "0",
            "TALOS_GATEWAY_BILLING_ADDR": mesh.billing_addr,
            "TALOS_GATEWAY_MODERATION_ADDR": str(moderation.ready["grpc"]),
            "TALOS_GATEWAY_RATE_LIMIT_PER_MINUTE": str(RATE_PER_MINUTE),
            "TALOS_GATEWAY_DRAIN_GRACE_SECONDS": str(DRAIN_GRACE),
            "TALOS_GATEWAY_RESULT_TTL_SECONDS": str(RESULT_TTL),
        },
        log_dir / "gateway.log",
    )
    gateway.start()
    stack = Stack(mesh, moderation, gateway, log_dir)
    try:
        yield stack
    finally:
        for proc in (stack.node, gateway, moderation):
            if proc is not None:
                proc.stop()


@pytest.fixture
async def iso(stack: Stack) -> Iterator[Api]:  # type: ignore[misc]
    client = Api(stack.http_url)
    try:
        yield client
    finally:
        await client.close()


async def test_no_render_node_is_503_and_charges_nothing(stack: Stack, iso: Api, account: Account) -> None:
    assert stack.readiness()["nodes_connected"] == 0
    reply = await iso.generate(account.api_key, {"prompt": "a lighthouse at dusk", "steps": 2})
    assert reply.status == 503 and reply.code == "no_capacity"
    assert "node" in reply.message
    assert int(reply.headers["Retry-After"]) >= 1
    assert stack.mesh.account(account.account_id).balance == 1000


async def test_request_rate_per_key_is_429_with_retry_after(
    iso: Api, account: Account, mesh: LocalMesh
) -> None:
    for _ in range(RATE_PER_MINUTE):
        reply = await iso.call("GET", "/v1/account", account.api_key)
        assert reply.status == 200
    limited = await iso.call("GET", "/v1/account", account.api_key)
    assert limited.status == 429 and limited.code == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    # Per key: another account's key is not affected.
    other = await iso.call("GET", "/v1/account", mesh.create_account(10).api_key)
    assert other.status == 200


async def test_output_blocked_with_18_plus_off_is_422_and_refunded(
    stack: Stack, iso: Api, mesh: LocalMesh
) -> None:
    stack.add_node()
    await wait_until(lambda: _nodes(stack, 1), what="the isolated node")
    account = mesh.create_account(1000)
    calls = await iso.metric("talos_gateway_classify_calls_total")
    verdicts = stack.image_verdicts()
    reply = await iso.generate(account.api_key, {"prompt": "a lighthouse at dusk", "steps": 2})
    assert reply.status == 422 and reply.code == "output_blocked", reply.body
    assert mesh.account(account.account_id).balance == 1000
    assert await iso.metric("talos_gateway_classify_calls_total") == calls + 1
    await wait_until(lambda: _verdicts(stack, verdicts + 1), what="the moderation log line")


async def test_18_plus_on_never_calls_the_classifier(stack: Stack, iso: Api, mesh: LocalMesh) -> None:
    account = mesh.create_account(1000)
    confirmed = await iso.call("POST", "/v1/account/age-confirmation", account.api_key, {"confirm": True})
    assert confirmed.status == 200
    calls = await iso.metric("talos_gateway_classify_calls_total")
    skipped = await iso.metric("talos_gateway_classify_skipped_total")
    verdicts = stack.image_verdicts()
    reply = await iso.generate(account.api_key, {"prompt": "a figure study", "nsfw": True, "steps": 2})
    # This moderation blocks every image it sees, so an image back means it saw none.
    assert reply.status == 200, reply.body
    assert decode_image(reply.body["data"][0]["b64_json"]).size == (1024, 1024)
    assert mesh.account(account.account_id).balance == 1000 - PRICE
    assert await iso.metric("talos_gateway_classify_calls_total") == calls
    assert await iso.metric("talos_gateway_classify_skipped_total") == skipped + 1
    assert stack.image_verdicts() == verdicts


async def test_an_uncollected_result_is_dropped_after_the_ttl(
    stack: Stack, iso: Api, mesh: LocalMesh
) -> None:
    account = mesh.create_account(1000)
    key = account.api_key
    assert (await iso.call("POST", "/v1/account/age-confirmation", key, {"confirm": True})).status == 200
    reply = await iso.submit(key, {"prompt": "a forgotten picture", "steps": 2, "nsfw": True})
    assert reply.status == 202
    job_id = reply.body["job_id"]

    async def ended() -> bool:  # observed without watching: a watch would collect the result
        return await asyncio.to_thread(lambda: stack.readiness().get("jobs_active") == 0)

    await wait_until(ended, what="the job's end")

    async def held() -> bool:
        return await iso.metric("talos_gateway_jobs_held") >= 1

    await wait_until(held, what="the ended job's record")

    async def forgotten() -> bool:
        return await iso.metric("talos_gateway_jobs_held") == 0

    await wait_until(forgotten, within=RESULT_TTL + 10, what="the record to expire")
    status, events = await iso.events(key, job_id)
    assert status == 404 and events[0][1]["error"]["code"] == "not_found"
    # Nobody collected it, so nothing was charged: the charge follows delivery.
    assert mesh.account(account.account_id).balance == 1000


async def test_readiness_needs_moderation(mesh: LocalMesh, tmp_path: Path) -> None:
    gateway = ServiceProcess(
        "gateway-no-moderation",
        python_module("talos_gateway"),
        {
            "TALOS_GATEWAY_HOST": "127.0.0.1",
            "TALOS_GATEWAY_HTTP_PORT": "0",
            "TALOS_GATEWAY_GRPC_PORT": "0",
            "TALOS_GATEWAY_RELAY_PORT": "0",
            "TALOS_GATEWAY_BILLING_ADDR": mesh.billing_addr,
            "TALOS_GATEWAY_MODERATION_ADDR": "127.0.0.1:9",  # nothing listens there
            "TALOS_GATEWAY_DOWNSTREAM_TIMEOUT_SECONDS": "1",
        },
        tmp_path / "gateway.log",
    )
    gateway.start()
    client = Api(str(gateway.ready["http"]))
    try:
        ready = await client.call("GET", "/readyz")
        assert ready.status == 503
        assert ready.body["billing"] is True and ready.body["moderation"] is False
        assert ready.body["ready"] is False and ready.body["nodes_connected"] == 0
        alive = await client.call("GET", "/healthz")
        assert alive.status == 200
    finally:
        await client.close()
        assert await asyncio.to_thread(gateway.stop) == 0


async def test_sigterm_drains_finishes_or_refunds_then_exits_0(
    stack: Stack, iso: Api, mesh: LocalMesh
) -> None:
    account = mesh.create_account(1000)
    key = account.api_key
    # 18+ on: this stack's moderation would block every image otherwise.
    assert (await iso.call("POST", "/v1/account/age-confirmation", key, {"confirm": True})).status == 200
    url = iso.base_url + "/v1/images/generations"
    short = {"prompt": "a quick sketch", "stream": True, "stream_format": "talos", "steps": 2, "nsfw": True}
    long = {
        "prompt": "a very long render",
        "stream": True,
        "stream_format": "talos",
        "steps": 60,
        "size": "1216x832",
        "nsfw": True,
    }

    async def run(body: dict[str, object]) -> list[tuple[str, dict[str, object]]]:
        async with iso.session.post(url, json=body, headers=auth(key)) as resp:
            assert resp.status == 200
            return [event async for event in read_sse(resp)]

    # The short job first, so it is the one the node renders first (one job at a time).
    first = asyncio.ensure_future(run(short))
    await wait_until(lambda: _jobs_active(stack, 1), what="the short job in flight")
    second = asyncio.ensure_future(run(long))
    await wait_until(lambda: _jobs_active(stack, 2), what="two jobs in flight")
    stack.gateway.signal(signal.SIGTERM)
    await wait_until(lambda: _not_accepting(iso), what="the gateway to stop accepting")
    refused = await iso.generate(key, {"prompt": "one more", "steps": 2})
    assert refused.status == 503 and refused.code == "no_capacity"
    done = await asyncio.wait_for(first, timeout=DRAIN_GRACE + 60)
    assert done[-1][0] == "completed"
    # The long render must outlast the grace however fast this machine is: freeze its node.
    assert stack.node is not None
    stack.node.signal(signal.SIGSTOP)
    try:
        long_events = await asyncio.wait_for(second, timeout=DRAIN_GRACE + 60)
    finally:
        stack.node.signal(signal.SIGCONT)
    assert long_events[-1][0] == "failed" and long_events[-1][1]["refunded"] is True
    assert await asyncio.to_thread(stack.gateway.wait, 60) == 0
    assert mesh.account(account.account_id).balance == 1000 - PRICE  # the finished one only


async def _nodes(stack: Stack, count: int) -> bool:
    return int(stack.readiness().get("nodes_connected", 0)) >= count  # type: ignore[call-overload]


async def _jobs_active(stack: Stack, count: int) -> bool:
    return int(stack.readiness().get("jobs_active", 0)) >= count  # type: ignore[call-overload]


async def _verdicts(stack: Stack, count: int) -> bool:
    return stack.image_verdicts() >= count


async def _not_accepting(iso: Api) -> bool:
    reply = await iso.call("GET", "/readyz")
    return reply.status == 503 and reply.body.get("accepting") is False
