"""The job pipeline in-process: several images per request, per-image charges, previews, delivery.

Real billing and moderation servers on port 0 in this process, the gateway built by its own
``create_server``, test peers as render nodes (see stack.py).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from talos.api.v1.contract import PRICE_PER_IMAGE
from talos.billing.v1.billing_pb2 import HOLD_STATE_CAPTURED as CAPTURED
from talos.billing.v1.billing_pb2 import HOLD_STATE_HELD as HELD
from talos.billing.v1.billing_pb2 import HOLD_STATE_RELEASED as RELEASED
from talos_sdk import Client, Generation
from talos_sdk.errors import TalosError as TalosSDKError
from tests.relay.peer import preview_jpeg
from tests.tlsca import TestCA

from .conftest import MakeStack
from .stack import Stack


async def _post(stack: Stack, key: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(stack.http_url + path, json=body, headers={"Authorization": f"Bearer {key}"}) as resp,
    ):
        raw = await resp.read()
        if resp.content_type == "text/event-stream":
            return resp.status, _events(raw)
        return resp.status, json.loads(raw)


def _events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in raw.decode().split("\n\n"):
        lines = [line for line in block.splitlines() if line and not line.startswith(":")]
        if not lines:
            continue
        name = next((line[7:] for line in lines if line.startswith("event: ")), "")
        data = next(line[6:] for line in lines if line.startswith("data: "))
        events.append((name, json.loads(data)))
    return events


async def _holds_settled(stack: Stack, job_id: str, n: int) -> list[int]:
    """Each image's hold state once none is still held (waits for the charge after delivery)."""
    for _ in range(200):
        holds = [await stack.billing.store.hold(f"{job_id}.{index}") for index in range(n)]
        states = [int(hold.state) if hold is not None else -1 for hold in holds]
        if all(state not in (-1, HELD) for state in states):
            return states
        await asyncio.sleep(0.05)
    raise AssertionError(f"holds still open: {states}")


async def test_four_images_are_four_charges_with_their_own_seeds(make_stack: MakeStack) -> None:
    stack = await make_stack()
    await stack.node(concurrency=4)
    account_id, key = await stack.account(1000)
    status, body = await _post(
        stack, key, "/v1/images/generations", {"prompt": "a kite", "n": 4, "seed": 7, "steps": 2}
    )
    assert status == 200, body
    assert [item["image"] for item in body["data"]] == [0, 1, 2, 3]
    assert [item["seed"] for item in body["data"]] == [7, 8, 9, 10]
    for item in body["data"]:
        assert Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))).size == (1024, 1024)
    assert body["credits_charged"] == 4 * PRICE_PER_IMAGE and body["refunded"] == []
    await _holds_settled(stack, body["job_id"], 4)
    assert await stack.spendable(account_id) == 1000 - 4 * PRICE_PER_IMAGE
    assert (await stack.billing.store.audit()).ok


async def test_one_image_withheld_of_four_costs_54_and_names_the_refund(make_stack: MakeStack) -> None:
    stack = await make_stack()
    await stack.node(concurrency=4)
    flagged: list[bytes] = []

    def flag_the_first_final_image(image: bytes) -> bool | None:
        if image == preview_jpeg():
            return False
        if not flagged:
            flagged.append(image)
            return True
        return False

    stack.servicer.verdict = flag_the_first_final_image
    account_id, key = await stack.account(1000)
    body = {"prompt": "a harbour", "n": 4, "steps": 2, "stream": True, "stream_format": "talos"}
    status, events = await _post(stack, key, "/v1/images/generations", body)
    assert status == 200
    ends = [(name, data) for name, data in events if name in ("completed", "failed")]
    assert sorted(data["image"] for _, data in ends) == [0, 1, 2, 3]
    failed = [data for name, data in ends if name == "failed"]
    assert (
        len(failed) == 1 and failed[0]["error"]["code"] == "output_blocked" and failed[0]["refunded"] is True
    )
    assert sum(data["credits_charged"] for name, data in ends if name == "completed") == 54
    job_id = events[0][1]["job_id"]
    states = await _holds_settled(stack, job_id, 4)
    assert sorted(states) == [CAPTURED, CAPTURED, CAPTURED, RELEASED]
    assert await stack.spendable(account_id) == 1000 - 54
    assert (await stack.billing.store.audit()).ok

    # The same over the JSON answer: the refund is named there too.
    flagged.clear()
    status, reply = await _post(stack, key, "/v1/images/generations", {**body, "stream": False})
    assert status == 200 and len(reply["data"]) == 3 and reply["credits_charged"] == 54
    assert len(reply["refunded"]) == 1 and reply["refunded"][0]["error"]["code"] == "output_blocked"
    assert reply["refunded"][0]["image"] not in [item["image"] for item in reply["data"]]


async def test_cancelling_a_four_image_job_halfway_releases_every_hold(make_stack: MakeStack) -> None:
    stack = await make_stack()
    node = await stack.node(concurrency=2, step_delay=0.05)
    account_id, key = await stack.account(1000)
    status, accepted = await _post(stack, key, "/v1/jobs", {"prompt": "a slow tide", "n": 4, "steps": 40})
    assert status == 202
    job_id = accepted["job_id"]
    for _ in range(200):  # halfway: two images rendering, two waiting
        if node.active == 2:
            break
        await asyncio.sleep(0.02)
    assert node.active == 2
    assert await stack.spendable(account_id) == 1000 - 4 * PRICE_PER_IMAGE
    async with aiohttp.ClientSession() as session:
        async with session.delete(
            f"{stack.http_url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}
        ) as resp:
            assert resp.status == 200 and (await resp.json())["cancelled"] is True
    states = await _holds_settled(stack, job_id, 4)
    assert states == [RELEASED] * 4
    assert await stack.spendable(account_id) == 1000
    assert (await stack.billing.store.audit()).ok


async def test_previews_are_withheld_with_18_plus_off_when_the_classifier_flags_them(
    make_stack: MakeStack,
) -> None:
    stack = await make_stack(nsfw_threshold=0.0)  # the real classifier, flagging everything
    await stack.node()
    _, key = await stack.account(1000)
    body = {"prompt": "a lake", "steps": 3, "stream": True, "stream_format": "talos"}
    _, events = await _post(stack, key, "/v1/images/generations", body)
    progress = [data for name, data in events if name == "progress"]
    assert progress
    assert all(data.get("preview_withheld") is True and "preview_b64" not in data for data in progress)
    assert events[-1][0] == "failed" and events[-1][1]["error"]["code"] == "output_blocked"

    # 18+ on: nothing is scanned, previews and the image come back.
    async with aiohttp.ClientSession() as session:
        async with session.post(
            stack.http_url + "/v1/account/age-confirmation",
            json={"confirm": True},
            headers={"Authorization": f"Bearer {key}"},
        ) as resp:
            assert resp.status == 200
    before = len(stack.servicer.classified)
    _, events = await _post(stack, key, "/v1/images/generations", {**body, "nsfw": True})
    progress = [data for name, data in events if name == "progress"]
    # Progress coalesces (a watcher gets the latest step); each one it gets has its preview.
    assert progress and all("preview_b64" in data for data in progress)
    assert events[-1][0] == "completed"
    assert len(stack.servicer.classified) == before


async def test_a_flagged_preview_does_not_stop_the_job(make_stack: MakeStack) -> None:
    stack = await make_stack()
    await stack.node()
    stack.servicer.verdict = lambda image: True if image == preview_jpeg() else None
    _, key = await stack.account(1000)
    _, events = await _post(
        stack,
        key,
        "/v1/images/generations",
        {"prompt": "a lake", "steps": 3, "stream": True, "stream_format": "talos"},
    )
    withheld = [data.get("preview_withheld") for name, data in events if name == "progress"]
    assert withheld and all(withheld)
    assert events[-1][0] == "completed"


async def test_the_charge_follows_delivery(make_stack: MakeStack) -> None:
    stack = await make_stack(result_ttl_seconds=1.0)
    await stack.node()
    account_id, key = await stack.account(1000)
    # Submitted and never collected: refunded once its time is up.
    _, forgotten = await _post(stack, key, "/v1/jobs", {"prompt": "a lost kite", "steps": 2})
    assert await _holds_settled(stack, forgotten["job_id"], 1) == [RELEASED]
    assert await stack.spendable(account_id) == 1000
    # Collected: charged, after the image left.
    _, taken = await _post(stack, key, "/v1/jobs", {"prompt": "a found kite", "steps": 2})
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{stack.http_url}/v1/jobs/{taken['job_id']}/events", headers={"Authorization": f"Bearer {key}"}
        ) as resp:
            events = _events(await resp.read())
    assert events[-1][0] == "completed"
    assert await _holds_settled(stack, taken["job_id"], 1) == [CAPTURED]
    assert await stack.spendable(account_id) == 1000 - PRICE_PER_IMAGE


async def test_the_sdk_reaches_a_tls_public_api(make_stack: MakeStack, tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    issued = ca.issue("gateway")
    stack = await make_stack(grpc_tls_cert_file=issued.cert, grpc_tls_key_file=issued.key)
    await stack.node()
    _, key = await stack.account(1000)
    address = stack.grpc_addr.replace("127.0.0.1", "localhost")

    def generate() -> Generation:
        with Client(key, address, ca_file=str(ca.cert)) as client:
            return client.generate("a lighthouse over TLS", steps=2, n=2)

    result = await asyncio.to_thread(generate)
    assert [image.seed for image in result.images] == [result.images[0].seed, result.images[0].seed + 1]

    def plaintext() -> None:
        with Client(key, address, tls=False) as client:
            client.options(timeout=5)

    with pytest.raises(TalosSDKError):
        await asyncio.to_thread(plaintext)
