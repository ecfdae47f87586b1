"""A stand-in for the gateway that follows a script per call, for the SDK's own tests.

It misbehaves on purpose (drops a stream, refuses with no_capacity, never answers) so the
client's reactions can be checked exactly: what it resends, with which idempotency key, and
when it must not resend at all. It answers errors the way the real services do
(``talos_common.errors.TalosError.to_status``, i.e. google.rpc.Status + ErrorInfo from
googleapis-common-protos), which also checks that the SDK's wire twins decode them.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from talos.api.v1 import api_pb2, api_pb2_grpc
from talos_common import errors as common_errors

Script = Callable[[Any, grpc.ServicerContext, int], Iterator[Any]]


def event(job_id: str, image: int = 0, **kind: Any) -> Any:
    return api_pb2.JobEvent(job_id=job_id, image=image, **kind)


def started(job_id: str, image: int = 0) -> Any:
    return event(job_id, image, started=api_pb2.Started())


def progress(job_id: str, step: int, total: int, image: int = 0, **extra: Any) -> Any:
    return event(job_id, image, progress=api_pb2.Progress(step=step, total_steps=total, **extra))


def completed(job_id: str, seed: int = 7, image: int = 0, balance: int = 82) -> Any:
    done = api_pb2.Completed(
        image=b"\x89PNG-not-really-" + bytes([image]),
        output_format="png",
        width=1024,
        height=1024,
        seed=seed,
        credits_charged=18,
        balance=balance,
    )
    return event(job_id, image, completed=done)


def failed(job_id: str, image: int, code: str, seed: int = 0) -> Any:
    error = api_pb2.Error(code=code, message=f"image {image}: {code}")
    return event(job_id, image, failed=api_pb2.Failed(error=error, refunded=True, seed=seed))


def abort(context: grpc.ServicerContext, code: str, message: str = "nope", **extra: Any) -> None:
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


class socket_free_port:
    """An address nobody listens on (bound and closed, so the port is refused)."""

    def __enter__(self) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        return f"127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        return None
