"""The public gRPC API, ``talos.api.v1.ImageService``: the same job model as HTTP.

The API key travels in the ``authorization`` metadata (``Bearer <key>``). Errors are raised as
:class:`TalosError`; the interceptor from :func:`talos_common.server.build_server` turns them
into a status carrying a ``google.rpc.ErrorInfo`` whose reason is the HTTP API's code.
Errors before a job is accepted end the call with that status; once accepted, a job's failure
is its ``failed`` event and the stream ends with OK.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from talos.api.v1 import api_pb2, api_pb2_grpc, contract
from talos.api.v1.contract import InvalidRequest, check_idempotency_key, grpc_values, parse_generation
from talos_common.errors import TalosError
from talos_gateway import metrics, styles
from talos_gateway.auth import Principal, next_utc_midnight
from talos_gateway.job import (
    CompletedEvent,
    FailedEvent,
    Job,
    JobEvent,
    ProgressEvent,
    QueuedEvent,
    StartedEvent,
)
from talos_gateway.jobs import JobRegistry

log = logging.getLogger(__name__)
SERVICE_NAME = api_pb2.DESCRIPTOR.services_by_name["ImageService"].full_name


def to_proto(job: Job, event: JobEvent) -> api_pb2.JobEvent:
    message = api_pb2.JobEvent(job_id=job.id, image=event.index)
    if isinstance(event, QueuedEvent):
        message.queued.position = event.position
        message.queued.eta_seconds = event.eta_seconds
    elif isinstance(event, StartedEvent):
        message.started.SetInParent()
    elif isinstance(event, ProgressEvent):
        progress = message.progress
        progress.step = event.step
        progress.total_steps = event.total_steps
        progress.preview_jpeg = event.preview_jpeg
        progress.preview_withheld = event.preview_withheld
    elif isinstance(event, CompletedEvent):
        # Filled in place: a Completed built apart and passed in is copied again, and the image
        # is megabytes.
        completed = message.completed
        completed.image = event.data
        completed.output_format = event.output_format
        completed.width = event.width
        completed.height = event.height
        completed.seed = event.seed
        completed.credits_charged = event.credits_charged
        completed.balance = event.balance
    else:
        assert isinstance(event, FailedEvent)
        failed = message.failed
        failed.error.code = event.code
        failed.error.message = event.message
        failed.refunded = True
        failed.seed = event.seed
    return message


def options_proto() -> api_pb2.Options:
    opts = contract.options(styles.style_texts())
    return api_pb2.Options(
        styles=[
            api_pb2.Style(
                id=s["id"],
                name=s["name"],
                prompt_template=s["prompt_template"],
                negative_prompt=s["negative_prompt"],
                default_guidance=s["default_guidance"],
            )
            for s in opts["styles"]
        ],
        sizes=[
            api_pb2.Size(id=s["id"], width=s["width"], height=s["height"], aspect_ratio=s["aspect_ratio"])
            for s in opts["sizes"]
        ],
        steps=api_pb2.IntRange(**opts["steps"]),
        n=api_pb2.IntRange(**opts["n"]),
        guidance=api_pb2.FloatRange(**opts["guidance"]),
        price_per_image=opts["price_per_image"],
        output_formats=opts["output_formats"],
    )


class ImageService(api_pb2_grpc.ImageServiceServicer):
    def __init__(self, registry: JobRegistry) -> None:
        self.registry = registry

    async def _principal(self, context: grpc.aio.ServicerContext) -> Principal:
        header = None
        for key, value in context.invocation_metadata() or ():
            if key.lower() == "authorization":
                header = value if isinstance(value, str) else value.decode("latin-1")
                break
        return await self.registry.auth.authenticate_bearer(header, "the authorization metadata")

    async def _follow(self, job: Job, context: grpc.aio.ServicerContext) -> AsyncIterator[api_pb2.JobEvent]:
        async for event in job.follow(None):
            assert event is not None
            yield to_proto(job, event)
            if isinstance(event, CompletedEvent):
                job.mark_delivered(event.index)

    async def Generate(
        self, request: api_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[api_pb2.JobEvent]:
        with _counted("Generate") as outcome:
            principal = await self._principal(context)
            generation, key = _parse(request)
            job = await self.registry.submit(principal, generation, key, bound=True)
            # The job is bound to this call: the client cancelling or its deadline passing
            # cancels the generator, and detaching then cancels the job (its hold is released).
            self.registry.attach(job)
            try:
                async for message in self._follow(job, context):
                    yield message
            finally:
                self.registry.detach(job)
            outcome["code"] = "ok"

    async def Submit(
        self, request: api_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.SubmitResponse:
        with _counted("Submit") as outcome:
            principal = await self._principal(context)
            generation, key = _parse(request)
            job = await self.registry.submit(principal, generation, key, bound=False)
            outcome["code"] = "ok"
            return api_pb2.SubmitResponse(job_id=job.id)

    async def Watch(
        self, request: api_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[api_pb2.JobEvent]:
        with _counted("Watch") as outcome:
            principal = await self._principal(context)
            job = self.registry.get(principal, request.job_id)
            async for message in self._follow(job, context):
                yield message
            outcome["code"] = "ok"

    async def Cancel(
        self, request: api_pb2.CancelRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.CancelResponse:
        with _counted("Cancel") as outcome:
            principal = await self._principal(context)
            cancelled = await self.registry.cancel(principal, request.job_id)
            outcome["code"] = "ok"
            return api_pb2.CancelResponse(cancelled=cancelled)

    async def GetAccount(
        self, request: api_pb2.GetAccountRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.Account:
        with _counted("GetAccount") as outcome:
            principal = await self._principal(context)
            state = await self.registry.billing.get_account(principal.account_id)
            outcome["code"] = "ok"
            return account_proto(state)

    async def ConfirmAge(
        self, request: api_pb2.ConfirmAgeRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.ConfirmAgeResponse:
        with _counted("ConfirmAge") as outcome:
            principal = await self._principal(context)
            if not request.confirm:
                raise TalosError("invalid_request", "'confirm' must be true", field="confirm")
            state = await self.registry.billing.confirm_age(principal.account_id)
            outcome["code"] = "ok"
            return api_pb2.ConfirmAgeResponse(age_confirmed=bool(state.age_confirmed))

    async def GetOptions(
        self, request: api_pb2.GetOptionsRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.Options:
        with _counted("GetOptions") as outcome:
            outcome["code"] = "ok"
            return options_proto()


def _parse(request: api_pb2.GenerateRequest) -> tuple[contract.Generation, str | None]:
    try:
        generation = parse_generation(grpc_values(request), http=False)
        key = check_idempotency_key(request.idempotency_key, "idempotency_key")
    except InvalidRequest as invalid:
        raise TalosError("invalid_request", invalid.message, field=invalid.field) from None
    return generation, key


def account_proto(state: Any) -> api_pb2.Account:
    resets = timestamp_pb2.Timestamp()
    if state.allowance_resets_at.seconds or state.allowance_resets_at.nanos:
        resets.CopyFrom(state.allowance_resets_at)
    else:
        resets.FromSeconds(next_utc_midnight())
    return api_pb2.Account(
        account_id=state.account_id,
        balance=int(state.balance),
        allowance=api_pb2.Allowance(
            daily=int(state.daily_allowance), remaining=int(state.allowance_remaining), resets_at=resets
        ),
        age_confirmed=bool(state.age_confirmed),
        price_per_image=int(state.price_per_image) or contract.PRICE_PER_IMAGE,
    )


class _counted:
    """Counts a call by method and outcome code (the TalosError code, ok, or cancelled)."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.outcome: dict[str, str] = {"code": "cancelled"}

    def __enter__(self) -> dict[str, str]:
        return self.outcome

    def __exit__(self, kind: Any, error: Any, tb: Any) -> None:
        if isinstance(error, TalosError):
            self.outcome["code"] = error.code
        elif error is not None and not isinstance(error, asyncio.CancelledError | GeneratorExit):
            self.outcome["code"] = "internal"
        metrics.GRPC_REQUESTS.labels(self.method, self.outcome["code"]).inc()


def register(server: grpc.aio.Server, registry: JobRegistry) -> None:
    api_pb2_grpc.add_ImageServiceServicer_to_server(ImageService(registry), server)
