"""Nothing kept: no prompt, no seed and no image bytes in any file, log or database."""

from __future__ import annotations

import base64
import json
import random
import uuid
from pathlib import Path

import grpc
import pytest

from talos.api.v1 import api_pb2, api_pb2_grpc

from .conftest import http, postgres_dsn, postgres_dump, verbose_mesh


def _needles(prompt_canary: str, seed: int, images: list[bytes]) -> dict[str, bytes]:
    needles = {"prompt canary": prompt_canary.encode(), "seed": str(seed).encode()}
    for number, image in enumerate(images):
        middle = image[len(image) // 2 : len(image) // 2 + 48]
        needles[f"image {number} bytes"] = middle
        # Any 48-byte run of the image also shows up, shifted, inside its base64 text.
        needles[f"image {number} base64"] = base64.b64encode(image)[len(image) // 2 : len(image) // 2 + 48]
    return needles


def _scan(root: Path, needles: dict[str, bytes]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{name} in {path}" for name, needle in needles.items() if needle in data]
    return found


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_canary_prompt_seed_and_image_leave_no_trace(tmp_path: Path, store: str) -> None:
    billing_env = {}
    dsn = None
    if store == "postgres":
        dsn = postgres_dsn()
        if dsn is None:
            pytest.skip("no PostgreSQL server answers on 127.0.0.1:5432")
        billing_env["TALOS_BILLING_DATABASE_URL"] = dsn
    mesh = verbose_mesh(tmp_path / "var", billing_env=billing_env)
    canary = f"canary{uuid.uuid4().hex}"
    seed = random.randrange(10**9, 4 * 10**9)
    prompt = f"a quiet harbour, {canary}, morning fog"
    images: list[bytes] = []
    try:
        mesh.start(nodes=1)
        account = mesh.create_account(1000)
        body = {"prompt": prompt, "negative_prompt": canary, "seed": seed, "steps": 2, "size": "832x1216"}

        reply = http("POST", mesh.http_url + "/v1/images/generations", account.api_key, body)
        assert reply.status == 200, reply.body
        assert reply.body["data"][0]["seed"] == seed
        images.append(base64.b64decode(reply.body["data"][0]["b64_json"]))

        streamed = http(
            "POST",
            mesh.http_url + "/v1/images/generations",
            account.api_key,
            {**body, "stream": True, "stream_format": "talos"},
        )
        assert streamed.status == 200
        assert isinstance(streamed.body, bytes), "an event stream is not JSON"
        completed_events = [
            json.loads(line[len(b"data: ") :])
            for block in streamed.body.split(b"\n\n")
            if block.startswith(b"event: completed")
            for line in block.split(b"\n")
            if line.startswith(b"data: ")
        ]
        assert len(completed_events) == 1, streamed.body[-500:]
        images.append(base64.b64decode(completed_events[0]["b64_json"]))

        with grpc.insecure_channel(mesh.grpc_addr) as channel:
            stub = api_pb2_grpc.ImageServiceStub(channel)
            request = api_pb2.GenerateRequest(
                prompt=prompt, negative_prompt=canary, seed=seed, steps=2, size="1216x832"
            )
            events = list(
                stub.Generate(request, metadata=[("authorization", f"Bearer {account.api_key}")], timeout=120)
            )
        completed = [e.completed for e in events if e.WhichOneof("event") == "completed"]
        assert len(completed) == 1 and completed[0].seed == seed
        images.append(completed[0].image)
    finally:
        mesh.stop()

    needles = _needles(canary, seed, images)
    if store == "sqlite":
        assert (tmp_path / "var" / "billing.db").is_file(), "the scan would not have seen the ledger"
    leaks = _scan(tmp_path, needles)
    assert not leaks, leaks
    logs = list((tmp_path / "var" / "logs").glob("*.log"))
    assert {p.stem for p in logs} >= {"billing", "moderation", "gateway", "render-0"}
    assert all(p.stat().st_size > 0 for p in logs), "debug logs were expected to say something"
    if dsn is not None:
        dump = postgres_dump(dsn)
        # The dump holds the ledger (so an empty dump cannot pass), and none of the needles.
        assert account.account_id.encode() in dump, "the PostgreSQL dump holds no account"
        assert not [name for name, needle in needles.items() if needle in dump]
