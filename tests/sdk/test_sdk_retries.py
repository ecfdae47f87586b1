"""The SDK's retry, resume, deadline and error-decoding rules, against a scripted gRPC server.

The server here is a stand-in for the gateway that misbehaves on purpose (drops a stream,
refuses with no_capacity, never answers) so the client's reactions can be checked exactly:
what it resends, with which idempotency key, and when it must not resend at all. It answers
errors the way the real services do (``talos_common.errors.TalosError.to_status``, i.e.
google.rpc.Status + ErrorInfo from googleapis-common-protos), which also checks that the
SDK's wire twins decode them. The real mesh is driven in test_sdk_mesh.py.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

import talos_sdk
from talos.api.v1 import api_pb2, api_pb2_grpc
from talos_common import errors as common_errors
from talos_sdk import cli
from talos_sdk import errors as sdk_errors

Script = Callable[[Any, grpc.ServicerContext, int], Iterator[Any]]


def _event(job_id: str, **kind: Any) -> Any:
    return api_pb2.JobEvent(job_id=job_id, **kind)


def _started(job_id: str) -> Any:
    return _event(job_id, started=api_pb2.Started())


def _progress(job_id: str, step: int, total: int) -> Any:
    return _event(job_id, progress=api_pb2.Progress(step=step, total_steps=total))


def _completed(job_id: str, seed: int = 7) -> Any:
    done = api_pb2.Completed(
        image=b"\x89PNG-not-really",
        output_format="png",
        width=1024,
        height=1024,
        seed=seed,
        credits_charged=18,
        balance=82,
    )
    return _event(job_id, completed=done)


def _abort(context: grpc.ServicerContext, code: str, message: str = "nope", **extra: Any) -> None:
    context.abort_with_status(common_errors.TalosError(code, message, **extra).to_status())


class ScriptedGateway(api_pb2_grpc.ImageServiceServicer):
    """Runs a script per call; records every request and its metadata."""

    def __init__(self) -> None:
        self.generate_script: Script | None = None
        self.watch_script: Script | None = None
        self.unary_script: Callable[[str, Any, grpc.ServicerContext, int], Any] | None = None
        self.calls: list[tuple[str, Any, dict[str, str]]] = []
        self.lock = threading.Lock()

    def _record(self, name: str, request: Any, context: grpc.ServicerContext) -> int:
        with self.lock:
            self.calls.append((name, request, dict(context.invocation_metadata())))
            return sum(1 for call in self.calls if call[0] == name)

    def named(self, name: str) -> list[tuple[str, Any, dict[str, str]]]:
        return [call for call in self.calls if call[0] == name]

    def Generate(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        attempt = self._record("Generate", request, context)
        assert self.generate_script is not None
        yield from self.generate_script(request, context, attempt)

    def Watch(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        attempt = self._record("Watch", request, context)
        assert self.watch_script is not None
        yield from self.watch_script(request, context, attempt)

    def _unary(self, name: str, request: Any, context: grpc.ServicerContext) -> Any:
        attempt = self._record(name, request, context)
        assert self.unary_script is not None
        return self.unary_script(name, request, context, attempt)

    def Submit(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._unary("Submit", request, context)

    def Cancel(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._unary("Cancel", request, context)

    def GetAccount(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._unary("GetAccount", request, context)

    def ConfirmAge(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._unary("ConfirmAge", request, context)

    def GetOptions(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._unary("GetOptions", request, context)


@pytest.fixture
def gateway() -> Iterator[tuple[ScriptedGateway, str]]:
    servicer = ScriptedGateway()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    api_pb2_grpc.add_ImageServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def _client(address: str, **kwargs: Any) -> talos_sdk.Client:
    return talos_sdk.Client("tk_test", address, timeout=5, stream_timeout=10, **kwargs)


def test_generate_resends_with_the_same_key_when_the_gateway_was_unreachable(gateway):
    servicer, address = gateway

    def script(request: Any, context: grpc.ServicerContext, attempt: int) -> Iterator[Any]:
        if attempt == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")
        yield _started("job-1")
        yield _progress("job-1", 1, 2)
        yield _progress("job-1", 2, 2)
        yield _completed("job-1")

    servicer.generate_script = script
    with _client(address) as client:
        events = list(client.generate("a lighthouse", steps=2))
    assert [type(e).__name__ for e in events] == ["Started", "Progress", "Progress", "Completed"]
    calls = servicer.named("Generate")
    assert len(calls) == 2
    keys = {call[1].idempotency_key for call in calls}
    assert len(keys) == 1
    uuid.UUID(keys.pop())  # generated by the SDK: a uuid4
    assert calls[0][2]["authorization"] == "Bearer tk_test"
    assert calls[0][1].steps == 2 and not calls[0][1].HasField("seed")


def test_callers_idempotency_key_is_sent_unchanged(gateway):
    servicer, address = gateway
    servicer.generate_script = lambda request, context, attempt: iter([_completed("job-k")])
    with _client(address) as client:
        result = client.generate_image("x", idempotency_key="order-42", seed=5, guidance=4.5)
    assert result.job_id == "job-k" and result.seed == 7 and result.image.startswith(b"\x89PNG")
    request = servicer.named("Generate")[0][1]
    assert request.idempotency_key == "order-42"
    assert request.seed == 5 and request.guidance == pytest.approx(4.5)


def test_no_capacity_is_raised_unless_the_caller_opts_in(gateway):
    servicer, address = gateway

    def script(request: Any, context: grpc.ServicerContext, attempt: int) -> Iterator[Any]:
        if attempt <= 2:
            _abort(context, "no_capacity", "all nodes busy", retry_after=0.1)
        yield _completed("job-c")

    servicer.generate_script = script
    with _client(address) as client, pytest.raises(talos_sdk.NoCapacity) as caught:
        client.generate_image("x")
    assert caught.value.retry_after == 1.0  # the server rounds up to whole seconds
    assert caught.value.code == "no_capacity" and isinstance(caught.value, talos_sdk.TransientError)
    assert len(servicer.named("Generate")) == 1

    servicer.calls.clear()
    started = time.monotonic()
    with _client(address, max_retries=2) as client:
        result = client.generate_image("x")
    assert result.job_id == "job-c"
    calls = servicer.named("Generate")
    assert len(calls) == 3 and len({c[1].idempotency_key for c in calls}) == 1
    assert time.monotonic() - started >= 2.0  # it waited the server's retry_after twice


def test_broken_stream_is_resumed_with_watch_never_resubmitted(gateway):
    servicer, address = gateway

    def generate(request: Any, context: grpc.ServicerContext, attempt: int) -> Iterator[Any]:
        yield _started("job-r")
        yield _progress("job-r", 1, 3)
        context.abort(grpc.StatusCode.UNAVAILABLE, "gateway went away")

    def watch(request: Any, context: grpc.ServicerContext, attempt: int) -> Iterator[Any]:
        assert request.job_id == "job-r"
        yield _started("job-r")  # a reconnect replays the current state
        yield _progress("job-r", 1, 3)
        yield _progress("job-r", 2, 3)
        yield _progress("job-r", 3, 3)
        yield _completed("job-r")

    servicer.generate_script = generate
    servicer.watch_script = watch
    with _client(address) as client:
        events = list(client.generate("x", steps=3))
    assert [(type(e).__name__, getattr(e, "step", None)) for e in events] == [
        ("Started", None),
        ("Progress", 1),
        ("Progress", 2),
        ("Progress", 3),
        ("Completed", None),
    ]
    assert len(servicer.named("Generate")) == 1
    assert len(servicer.named("Watch")) == 1


def test_a_job_error_after_events_is_not_retried(gateway):
    servicer, address = gateway

    def generate(request: Any, context: grpc.ServicerContext, attempt: int) -> Iterator[Any]:
        yield _started("job-f")
        _abort(context, "no_capacity", "node lost", retry_after=1)

    servicer.generate_script = generate
    with _client(address, max_retries=3) as client, pytest.raises(talos_sdk.NoCapacity):
        list(client.generate("x"))
    assert len(servicer.named("Generate")) == 1 and not servicer.named("Watch")


def test_failed_event_is_yielded_by_generate_and_raised_by_generate_image(gateway):
    servicer, address = gateway

    def generate(request: Any, context: grpc.ServicerContext, attempt: int) -> Iterator[Any]:
        yield _started("job-b")
        error = api_pb2.Error(code="output_blocked", message="adult output with 18+ off")
        yield _event("job-b", failed=api_pb2.Failed(error=error, refunded=True))

    servicer.generate_script = generate
    with _client(address) as client:
        events = list(client.generate("x"))
        assert isinstance(events[-1], talos_sdk.Failed)
        assert events[-1].code == "output_blocked" and events[-1].refunded
        with pytest.raises(talos_sdk.OutputBlocked) as caught:
            client.generate_image("x")
    assert caught.value.job_id == "job-b"
    assert isinstance(caught.value, talos_sdk.PolicyRefusal)


PUBLIC_CODES = [
    ("invalid_request", talos_sdk.InvalidRequest),
    ("content_policy_violation", talos_sdk.ContentPolicyViolation),
    ("invalid_api_key", talos_sdk.AuthenticationError),
    ("insufficient_credits", talos_sdk.InsufficientCredits),
    ("age_confirmation_required", talos_sdk.AgeConfirmationRequired),
    ("not_found", talos_sdk.NotFound),
    ("idempotency_conflict", talos_sdk.IdempotencyConflict),
    ("request_too_large", talos_sdk.RequestTooLarge),
    ("output_blocked", talos_sdk.OutputBlocked),
    ("rate_limited", talos_sdk.RateLimited),
    ("cancelled", talos_sdk.JobCancelled),
    ("internal", talos_sdk.InternalError),
    ("no_capacity", talos_sdk.NoCapacity),
    ("unavailable", talos_sdk.ServiceUnavailable),
    ("timeout", talos_sdk.Timeout),
]


def test_every_public_error_code_maps_to_its_exception(gateway):
    servicer, address = gateway
    public = set(common_errors.ERRORS) - {"hold_expired", "unimplemented"}
    assert {code for code, _ in PUBLIC_CODES} == public

    def unary(name: str, request: Any, context: grpc.ServicerContext, attempt: int) -> Any:
        code = request.job_id  # the test names the error it wants as the job id
        _abort(context, code, f"message for {code}", retry_after=3, field="steps")

    servicer.unary_script = unary
    with _client(address, connect_retries=0) as client:
        for code, cls in PUBLIC_CODES:
            with pytest.raises(cls) as caught:
                client.cancel(code)
            error = caught.value
            assert error.code == code and error.message == f"message for {code}"
            assert error.retry_after == 3.0 and error.field == "steps" and not error.transport
            assert error.job_id == code and isinstance(error, talos_sdk.TalosError)
    assert len(servicer.named("Cancel")) == len(PUBLIC_CODES)


def test_a_status_without_details_is_classified_by_its_code(gateway):
    servicer, address = gateway

    def unary(name: str, request: Any, context: grpc.ServicerContext, attempt: int) -> Any:
        context.abort(grpc.StatusCode.NOT_FOUND, "no such job")

    servicer.unary_script = unary
    with _client(address) as client, pytest.raises(talos_sdk.NotFound) as caught:
        client.cancel("job-x")
    assert caught.value.transport and caught.value.job_id == "job-x"
    assert len(servicer.named("Cancel")) == 1


def test_every_unary_call_has_a_deadline(gateway):
    servicer, address = gateway
    release = threading.Event()

    def unary(name: str, request: Any, context: grpc.ServicerContext, attempt: int) -> Any:
        release.wait(10)
        return api_pb2.Options()

    servicer.unary_script = unary
    try:
        with talos_sdk.Client("tk", address, timeout=0.3) as client:
            started = time.monotonic()
            with pytest.raises(talos_sdk.Timeout):
                client.options()
            assert time.monotonic() - started < 3
    finally:
        release.set()
    assert len(servicer.named("GetOptions")) == 1  # a spent deadline is not retried


def test_a_job_stream_has_a_deadline(gateway):
    servicer, address = gateway
    release = threading.Event()

    def generate(request: Any, context: grpc.ServicerContext, attempt: int) -> Iterator[Any]:
        yield _event("job-q", queued=api_pb2.Queued(position=1, eta_seconds=5))
        release.wait(10)

    servicer.generate_script = generate
    try:
        with _client(address) as client:
            stream = client.generate("x", timeout=0.5)
            first = next(stream)
            assert isinstance(first, talos_sdk.Queued) and first.position == 1
            assert stream.job_id == "job-q"
            with pytest.raises(talos_sdk.Timeout):
                next(stream)
    finally:
        release.set()


def test_unreachable_gateway_raises_service_unavailable_after_bounded_retries():
    started = time.monotonic()
    # A deadline far beyond the back-off of 2 retries (0.25 s + 0.5 s): only the retry bound
    # can end the call early, not the deadline.
    with socket_free_port() as address, pytest.raises(talos_sdk.ServiceUnavailable) as caught:
        with talos_sdk.Client("tk", address, timeout=60, connect_retries=2) as client:
            client.account()
    assert caught.value.transport
    assert time.monotonic() - started < 10, "retries were not bounded by connect_retries"


def test_cli_names_the_address_it_could_not_reach(capsys: pytest.CaptureFixture[str]):
    with socket_free_port() as address:
        code = cli.main(["account", "--api-key", "tk", "--address", address, "--timeout", "10"])
    assert code == cli.EXIT_TRANSIENT
    err = capsys.readouterr().err
    assert f"could not reach the gateway at {address}" in err and "TALOS_ADDRESS" in err


class socket_free_port:
    """An address nobody listens on (bound and closed, so the port is refused)."""

    def __enter__(self) -> str:
        import socket

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        return f"127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        return None


def test_local_argument_errors_need_no_server():
    client = talos_sdk.Client("tk", "127.0.0.1:9")
    with pytest.raises(talos_sdk.InvalidRequest) as caught:
        client.generate("x", steps=-1)
    assert caught.value.field == "steps"
    with pytest.raises(talos_sdk.InvalidRequest):
        client.generate("x", idempotency_key="k" * 256)
    with pytest.raises(talos_sdk.AuthenticationError):
        talos_sdk.Client("", "127.0.0.1:9").account()
    client.close()


def test_error_decoding_ignores_a_malformed_trailer():
    class Broken(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.UNAVAILABLE

        def details(self) -> str:
            return "down"

        def trailing_metadata(self) -> Any:
            return (("grpc-status-details-bin", b"\xff\xff\xff"),)

    error = sdk_errors.error_from_rpc(Broken())
    assert isinstance(error, talos_sdk.ServiceUnavailable) and error.message == "down"


async def test_async_client_resends_and_maps_errors(gateway):
    servicer, address = gateway

    def generate(request: Any, context: grpc.ServicerContext, attempt: int) -> Iterator[Any]:
        if attempt == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")
        yield _event("job-a", queued=api_pb2.Queued(position=2, eta_seconds=1.5))
        yield _started("job-a")
        yield _progress("job-a", 1, 1)
        yield _completed("job-a", seed=99)

    def unary(name: str, request: Any, context: grpc.ServicerContext, attempt: int) -> Any:
        _abort(context, "insufficient_credits", "balance 0")

    servicer.generate_script = generate
    servicer.unary_script = unary
    seen: list[str] = []
    async with talos_sdk.AsyncClient("tk_async", address, timeout=5) as client:
        result = await client.generate_image("x", on_event=lambda e: seen.append(type(e).__name__))
        assert result.seed == 99 and result.credits_charged == 18 and result.balance == 82
        with pytest.raises(talos_sdk.InsufficientCredits):
            await client.submit("x")
    assert seen == ["Queued", "Started", "Progress", "Completed"]
    calls = servicer.named("Generate")
    assert len(calls) == 2 and calls[0][1].idempotency_key == calls[1][1].idempotency_key
    assert calls[0][2]["authorization"] == "Bearer tk_async"


def test_the_stream_is_read_to_its_end_after_the_terminal_event_not_cancelled(gateway):
    """The gateway marks a result delivered after sending it; a cancel could cut in before that."""
    servicer, address = gateway
    active_after_send: list[bool] = []

    def generate(request: Any, context: grpc.ServicerContext, attempt: int) -> Iterator[Any]:
        yield _completed("job-d")
        time.sleep(0.2)  # the server's own bookkeeping after the last message
        active_after_send.append(context.is_active())

    servicer.generate_script = generate
    with _client(address) as client:
        assert client.generate_image("x").job_id == "job-d"
    deadline = time.monotonic() + 5
    while not active_after_send and time.monotonic() < deadline:
        time.sleep(0.01)
    assert active_after_send == [True]
