"""Nothing let in: other accounts' jobs, client-set fields, secrets in logs, caps, rate limits."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import grpc

from talos.api.v1 import api_pb2, api_pb2_grpc
from talos_dev.mesh import LocalMesh

from .conftest import http


def test_another_accounts_job_is_invisible(debug_mesh: LocalMesh) -> None:
    owner = debug_mesh.create_account(1000)
    stranger = debug_mesh.create_account(1000)
    submitted = http(
        "POST", debug_mesh.http_url + "/v1/jobs", owner.api_key, {"prompt": "a red kite", "steps": 30}
    )
    assert submitted.status == 202, submitted.body
    job = submitted.body["job_id"]
    url = f"{debug_mesh.http_url}/v1/jobs/{job}"
    for method, path in (("GET", "/events"), ("DELETE", "")):
        reply = http(method, url + path, stranger.api_key)
        assert reply.status == 404 and reply.body["error"]["code"] == "not_found", (method, reply.body)
    with grpc.insecure_channel(debug_mesh.grpc_addr) as channel:
        stub = api_pb2_grpc.ImageServiceStub(channel)
        meta = [("authorization", f"Bearer {stranger.api_key}")]
        for call in (
            lambda: list(stub.Watch(api_pb2.WatchRequest(job_id=job), metadata=meta, timeout=10)),
            lambda: stub.Cancel(api_pb2.CancelRequest(job_id=job), metadata=meta, timeout=10),
        ):
            try:
                call()
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.NOT_FOUND
            else:
                raise AssertionError("a stranger reached another account's job")
    # The owner still can cancel it: the job was really there.
    assert http("DELETE", url, owner.api_key).status == 200


def test_fields_the_client_must_not_set_are_refused(debug_mesh: LocalMesh) -> None:
    account = debug_mesh.create_account(1000)
    for field, value in (
        ("cost", 0),
        ("credits_charged", 0),
        ("owner", "someone-else"),
        ("account_id", "someone-else"),
        ("node", "node-1"),
        ("node_id", "node-1"),
    ):
        reply = http(
            "POST",
            debug_mesh.http_url + "/v1/images/generations",
            account.api_key,
            {"prompt": "a red kite", "steps": 1, field: value},
        )
        assert reply.status == 400 and field in reply.body["error"]["message"], (field, reply.body)
    adult = http(
        "POST",
        debug_mesh.http_url + "/v1/images/generations",
        account.api_key,
        {"prompt": "a red kite", "steps": 1, "nsfw": True},
    )
    assert adult.status == 403 and adult.body["error"]["code"] == "age_confirmation_required"
    assert debug_mesh.account(account.account_id).balance == 1000


def test_oversized_body_is_refused_without_being_read(debug_mesh: LocalMesh) -> None:
    account = debug_mesh.create_account(1000)
    url = urlsplit(debug_mesh.http_url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as conn:
        # Announce 100 MB but send only the headers: a server that waits to read it would hang.
        conn.sendall(
            (
                "POST /v1/images/generations HTTP/1.1\r\n"
                f"Host: {url.netloc}\r\nAuthorization: Bearer {account.api_key}\r\n"
                "Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n"
            ).encode()
        )
        started = time.monotonic()
        head = conn.recv(4096).decode(errors="replace")
        assert head.startswith("HTTP/1.1 413"), head
        assert time.monotonic() - started < 5


def test_oversized_grpc_message_is_refused(debug_mesh: LocalMesh) -> None:
    account = debug_mesh.create_account(1000)
    with grpc.insecure_channel(debug_mesh.grpc_addr) as channel:
        stub = api_pb2_grpc.ImageServiceStub(channel)
        huge = api_pb2.GenerateRequest(prompt="x" * (8 * 1024 * 1024))
        try:
            list(stub.Generate(huge, metadata=[("authorization", f"Bearer {account.api_key}")], timeout=30))
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        else:
            raise AssertionError("an 8 MiB message was accepted")
    assert debug_mesh.account(account.account_id).balance == 1000


def test_rate_limit_answers_429_with_retry_after(debug_mesh: LocalMesh) -> None:
    account = debug_mesh.create_account(1000)
    statuses = []
    for _ in range(400):
        reply = http("GET", debug_mesh.http_url + "/v1/account", account.api_key)
        statuses.append(reply.status)
        if reply.status == 429:
            assert reply.body["error"]["code"] == "rate_limited"
            assert int(reply.headers["Retry-After"]) >= 1
            break
    assert 429 in statuses, "no rate limit within 400 requests"


def test_keys_and_tokens_never_reach_the_logs(debug_mesh: LocalMesh) -> None:
    account = debug_mesh.create_account(1000)
    # Both requests must really reach the key check, or there is nothing for the logs to leak.
    good = http("GET", debug_mesh.http_url + "/v1/account", account.api_key)
    assert good.status == 200, good.body
    bad = http("GET", debug_mesh.http_url + "/v1/account", account.api_key + "x")
    assert bad.status == 401, bad.body
    token = debug_mesh.create_node_token("log-check")
    secrets = [account.api_key, token]
    for node in debug_mesh.nodes:
        secrets.append(node.env["TALOS_RENDER_TOKEN"])
    assert len(secrets) > 2, "no render node: its token was not checked"
    logs = list(debug_mesh.log_dir.glob("*.log"))
    assert {p.stem for p in logs} >= {"billing", "moderation", "gateway"}, logs
    assert all(p.stat().st_size > 0 for p in logs), "debug logs were expected to say something"
    for log in logs:
        text = log.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"a secret appears in {log.name}"
            assert secret[-16:] not in text, f"part of a secret appears in {log.name}"
