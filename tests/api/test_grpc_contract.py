"""The public gRPC API (talos.api.v1.ImageService), against the in-process mesh."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from PIL import Image

from talos.api.v1 import api_pb2, api_pb2_grpc
from talos_common.errors import from_rpc_error
from talos_dev.mesh import Account, LocalMesh

PRICE = 18
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def channel(mesh: LocalMesh) -> Iterator[grpc.Channel]:
    options = [("grpc.max_receive_message_length", 32 * MiB), ("grpc.max_send_message_length", 32 * MiB)]
    with grpc.insecure_channel(mesh.grpc_addr, options=options) as chan:
        yield chan


@pytest.fixture
def stub(channel: grpc.Channel) -> api_pb2_grpc.ImageServiceStub:
    return api_pb2_grpc.ImageServiceStub(channel)


def md(key: str | None) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")] if key else []


def error_of(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str, error_details_pb2.ErrorInfo]:
    with pytest.raises(grpc.RpcError) as caught:
        result = call()
        if hasattr(result, "__iter__") and not isinstance(result, bytes):
            list(result)
    error: Any = caught.value
    status = rpc_status.from_call(error)
    assert status is not None, "no google.rpc.Status details on the error"
    info = error_details_pb2.ErrorInfo()
    assert any(detail.Unpack(info) for detail in status.details)
    assert info.domain == "talos"
    assert from_rpc_error(error).code == info.reason
    return error.code(), error.details() or "", info


def balance(stub: api_pb2_grpc.ImageServiceStub, key: str) -> int:
    return int(stub.GetAccount(api_pb2.GetAccountRequest(), metadata=md(key), timeout=10).balance)


def test_options_need_no_key_and_match_http(stub: api_pb2_grpc.ImageServiceStub) -> None:
    options = stub.GetOptions(api_pb2.GetOptionsRequest(), timeout=10)
    assert [style.id for style in options.styles] == ["photo", "cinematic", "anime", "digital-art", "3d"]
    assert all("{prompt}" in style.prompt_template for style in options.styles)
    assert [size.id for size in options.sizes] == ["1024x1024", "832x1216", "1216x832"]
    assert (options.steps.min, options.steps.max, options.steps.default) == (1, 60, 30)
    assert (options.guidance.min, options.guidance.max) == (1, 20)
    assert options.price_per_image == PRICE
    assert list(options.output_formats) == ["png", "webp", "jpeg"]


def test_generate_streams_events_and_charges_once(
    stub: api_pb2_grpc.ImageServiceStub, account: Account
) -> None:
    request = api_pb2.GenerateRequest(prompt="a lighthouse at dusk", steps=3, seed=11)
    events = list(stub.Generate(request, metadata=md(account.api_key), timeout=120))
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[-1] == "completed" and kinds.count("completed") == 1 and "failed" not in kinds
    assert "started" in kinds
    assert len({event.job_id for event in events}) == 1
    steps = [event.progress.step for event in events if event.HasField("progress")]
    assert steps == sorted(steps) and all(
        e.progress.total_steps == 3 for e in events if e.HasField("progress")
    )
    done = events[-1].completed
    assert done.seed == 11 and done.credits_charged == PRICE
    assert (done.width, done.height, done.output_format) == (1024, 1024, "png")
    image = Image.open(io.BytesIO(done.image))
    assert (image.format, image.size) == ("PNG", (1024, 1024))
    assert done.balance == 1000 - PRICE == balance(stub, account.api_key)


def test_submit_watch_and_cancel(stub: api_pb2_grpc.ImageServiceStub, account: Account) -> None:
    key = account.api_key
    quick = stub.Submit(api_pb2.GenerateRequest(prompt="a red kite", steps=2), metadata=md(key), timeout=30)
    events = list(stub.Watch(api_pb2.WatchRequest(job_id=quick.job_id), metadata=md(key), timeout=120))
    assert events[-1].WhichOneof("event") == "completed"
    assert Image.open(io.BytesIO(events[-1].completed.image)).format == "PNG"
    # Delivered: the result is not kept.
    code, _, info = error_of(lambda: stub.Watch(api_pb2.WatchRequest(job_id=quick.job_id), metadata=md(key)))
    assert code == grpc.StatusCode.NOT_FOUND and info.reason == "not_found"

    slow = stub.Submit(
        api_pb2.GenerateRequest(prompt="a slow one", steps=60, size="1216x832"), metadata=md(key), timeout=30
    )
    assert balance(stub, key) == 1000 - 2 * PRICE  # one charged, one held
    reply = stub.Cancel(api_pb2.CancelRequest(job_id=slow.job_id), metadata=md(key), timeout=30)
    assert reply.cancelled is True
    assert balance(stub, key) == 1000 - PRICE
    replay = list(stub.Watch(api_pb2.WatchRequest(job_id=slow.job_id), metadata=md(key), timeout=30))
    assert replay[-1].WhichOneof("event") == "failed"
    assert replay[-1].failed.error.code == "cancelled" and replay[-1].failed.refunded is True
    again = stub.Cancel(api_pb2.CancelRequest(job_id=slow.job_id), metadata=md(key), timeout=30)
    assert again.cancelled is False


def test_client_cancelling_generate_releases_the_hold(
    stub: api_pb2_grpc.ImageServiceStub, account: Account, mesh: LocalMesh
) -> None:
    key = account.api_key
    call = stub.Generate(
        api_pb2.GenerateRequest(prompt="a long render", steps=60, size="1216x832"),
        metadata=md(key),
        timeout=120,
    )
    first = next(call)
    assert first.job_id
    assert balance(stub, key) == 1000 - PRICE
    call.cancel()
    deadline = time.monotonic() + 30
    while mesh.account(account.account_id).balance != 1000:  # billing itself: no per-key rate limit
        assert time.monotonic() < deadline, "the hold was not released after the client cancelled"
        time.sleep(0.05)


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("empty prompt", {"prompt": ""}, "prompt"),
    ("blank prompt", {"prompt": "  \t "}, "prompt"),
    ("long prompt", {"prompt": "a" * 2001}, "prompt"),
    ("long negative", {"prompt": "x", "negative_prompt": "n" * 2001}, "negative_prompt"),
    ("style", {"prompt": "x", "style": "watercolor"}, "style"),
    ("size", {"prompt": "x", "size": "512x512"}, "size"),
    ("aspect_ratio", {"prompt": "x", "aspect_ratio": "wide"}, "aspect_ratio"),
    ("disagree", {"prompt": "x", "size": "1216x832", "aspect_ratio": "square"}, "aspect_ratio"),
    ("steps 0", {"prompt": "x", "steps": 0}, "steps"),
    ("steps 61", {"prompt": "x", "steps": 61}, "steps"),
    ("guidance low", {"prompt": "x", "guidance": 0.5}, "guidance"),
    ("guidance high", {"prompt": "x", "guidance": 20.5}, "guidance"),
    ("seed", {"prompt": "x", "seed": 4_294_967_296}, "seed"),
    ("output_format", {"prompt": "x", "output_format": "gif"}, "output_format"),
    ("idempotency_key", {"prompt": "x", "idempotency_key": "k" * 256}, "idempotency_key"),
]


@pytest.mark.parametrize(("fields", "field"), [(f, n) for _, f, n in INVALID], ids=[n for n, _, _ in INVALID])
def test_invalid_requests_name_the_field(
    stub: api_pb2_grpc.ImageServiceStub, key: str, fields: dict[str, Any], field: str
) -> None:
    request = api_pb2.GenerateRequest(**fields)
    for method in (stub.Submit, stub.Generate):
        code, message, info = error_of(lambda m=method: m(request, metadata=md(key), timeout=10))  # type: ignore[misc]
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert info.reason == "invalid_request" and info.metadata["field"] == field
        assert field in message


def test_valid_bounds_are_accepted(stub: api_pb2_grpc.ImageServiceStub, key: str) -> None:
    for fields in (
        {"prompt": "p" * 2000, "negative_prompt": "n" * 2000, "steps": 1, "guidance": 1.0, "seed": 0},
        {"prompt": "x", "steps": 60, "guidance": 20.0, "seed": 4_294_967_295, "style": "3d"},
        {"prompt": "x", "size": "832x1216", "aspect_ratio": "portrait", "output_format": "jpeg"},
    ):
        job = stub.Submit(api_pb2.GenerateRequest(**fields), metadata=md(key), timeout=10)
        assert stub.Cancel(api_pb2.CancelRequest(job_id=job.job_id), metadata=md(key), timeout=30).cancelled
    assert balance(stub, key) == 1000


def test_auth_errors(stub: api_pb2_grpc.ImageServiceStub) -> None:
    for metadata in ([], [("authorization", "Basic x")], md("tk_not_a_key")):
        for call in (
            lambda m=metadata: stub.GetAccount(api_pb2.GetAccountRequest(), metadata=m, timeout=10),
            lambda m=metadata: stub.Submit(api_pb2.GenerateRequest(prompt="x"), metadata=m, timeout=10),
            lambda m=metadata: stub.Generate(api_pb2.GenerateRequest(prompt="x"), metadata=m, timeout=10),
            lambda m=metadata: stub.Watch(api_pb2.WatchRequest(job_id="x"), metadata=m, timeout=10),
            lambda m=metadata: stub.ConfirmAge(
                api_pb2.ConfirmAgeRequest(confirm=True), metadata=m, timeout=10
            ),
        ):
            code, _, info = error_of(call)
            assert code == grpc.StatusCode.UNAUTHENTICATED and info.reason == "invalid_api_key"


def test_insufficient_credits(
    stub: api_pb2_grpc.ImageServiceStub, new_account: Callable[..., Account]
) -> None:
    poor = new_account(credits=PRICE - 1)
    code, _, info = error_of(
        lambda: stub.Generate(
            api_pb2.GenerateRequest(prompt="x", steps=2), metadata=md(poor.api_key), timeout=10
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and info.reason == "insufficient_credits"
    assert balance(stub, poor.api_key) == PRICE - 1


def test_age_confirmation(stub: api_pb2_grpc.ImageServiceStub, key: str) -> None:
    request = api_pb2.GenerateRequest(prompt="a figure study", nsfw=True, steps=60)
    code, _, info = error_of(lambda: stub.Submit(request, metadata=md(key), timeout=10))
    assert code == grpc.StatusCode.PERMISSION_DENIED and info.reason == "age_confirmation_required"
    code, _, info = error_of(
        lambda: stub.ConfirmAge(api_pb2.ConfirmAgeRequest(confirm=False), metadata=md(key), timeout=10)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and info.reason == "invalid_request"
    reply = stub.ConfirmAge(api_pb2.ConfirmAgeRequest(confirm=True), metadata=md(key), timeout=10)
    assert reply.age_confirmed is True
    account = stub.GetAccount(api_pb2.GetAccountRequest(), metadata=md(key), timeout=10)
    assert account.age_confirmed is True and account.price_per_image == PRICE and account.balance == 1000
    assert account.allowance.resets_at.seconds % 86400 == 0
    job = stub.Submit(request, metadata=md(key), timeout=10)
    stub.Cancel(api_pb2.CancelRequest(job_id=job.job_id), metadata=md(key), timeout=30)


def test_not_found_for_unknown_and_other_accounts_jobs(
    stub: api_pb2_grpc.ImageServiceStub, key: str, new_account: Callable[..., Account]
) -> None:
    job = stub.Submit(
        api_pb2.GenerateRequest(prompt="mine", steps=60, size="1216x832"), metadata=md(key), timeout=10
    )
    other = new_account().api_key
    for job_id in (job.job_id, str(uuid.uuid4())):
        watch = api_pb2.WatchRequest(job_id=job_id)
        code, _, info = error_of(lambda w=watch: stub.Watch(w, metadata=md(other), timeout=10))  # type: ignore[misc]
        assert code == grpc.StatusCode.NOT_FOUND and info.reason == "not_found"
        cancel = api_pb2.CancelRequest(job_id=job_id)
        code, _, info = error_of(lambda c=cancel: stub.Cancel(c, metadata=md(other), timeout=10))  # type: ignore[misc]
        assert code == grpc.StatusCode.NOT_FOUND and info.reason == "not_found"
    assert stub.Cancel(api_pb2.CancelRequest(job_id=job.job_id), metadata=md(key), timeout=30).cancelled


def test_idempotency(stub: api_pb2_grpc.ImageServiceStub, key: str) -> None:
    token = "idem-" + uuid.uuid4().hex
    request = api_pb2.GenerateRequest(prompt="a lantern", steps=60, size="1216x832", idempotency_key=token)
    first = stub.Submit(request, metadata=md(key), timeout=10)
    second = stub.Submit(request, metadata=md(key), timeout=10)
    assert first.job_id == second.job_id
    assert balance(stub, key) == 1000 - PRICE
    other = api_pb2.GenerateRequest(prompt="another lantern", idempotency_key=token)
    code, _, info = error_of(lambda: stub.Submit(other, metadata=md(key), timeout=10))
    assert code == grpc.StatusCode.ALREADY_EXISTS and info.reason == "idempotency_conflict"
    stub.Cancel(api_pb2.CancelRequest(job_id=first.job_id), metadata=md(key), timeout=30)
    assert balance(stub, key) == 1000


def test_content_policy_violation_is_not_echoed(stub: api_pb2_grpc.ImageServiceStub, key: str) -> None:
    prompt = "zorbling blarfed " + uuid.uuid4().hex[:6]
    code, message, info = error_of(
        lambda: stub.Generate(api_pb2.GenerateRequest(prompt=prompt), metadata=md(key), timeout=10)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and info.reason == "content_policy_violation"
    assert "zorbling" not in message and prompt not in message
    assert balance(stub, key) == 1000


def test_request_too_large(stub: api_pb2_grpc.ImageServiceStub, key: str) -> None:
    request = api_pb2.GenerateRequest(prompt="x", negative_prompt="n" * 100_000)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Submit(request, metadata=md(key), timeout=10)
    error: Any = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert from_rpc_error(error).code == "request_too_large"


def test_reflection_and_health(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service="talos.api.v1.ImageService"), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {service.name for answer in answers for service in answer.list_services_response.service}
    assert "talos.api.v1.ImageService" in names
