"""One image from its hold to its end: render, check, deliver, then charge — or refund.

An image's hold is placed before its task starts (see :mod:`talos_gateway.jobs`). Then::

    relay (queued / started / progress; with 18+ off every preview is classified first)
    → moderation.ClassifyImage (18+ off only) → completed event
    → a client receives it → billing.Capture                  | any failure → billing.Release → failed

The charge comes after delivery, never before: if the gateway dies between the two, the hold
expires in billing and the image was free — the side to err on. A completed image that no
client takes within ``result_ttl_seconds`` of the job's end is released and reported failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from talos.api.v1.contract import PRICE_PER_IMAGE
from talos.billing.v1 import billing_pb2
from talos_common.errors import TalosError
from talos_gateway import metrics
from talos_gateway.config import Settings
from talos_gateway.downstream import Billing, Moderation
from talos_gateway.job import (
    CompletedEvent,
    FailedEvent,
    Image,
    Job,
    ProgressEvent,
    QueuedEvent,
    StartedEvent,
)
from talos_gateway.relay.contract import Finished, Progress, Queued, RelayPort, RenderSpec, Started
from talos_gateway.relay.timing import job_deadline

log = logging.getLogger("talos_gateway.jobs")

# Billing could not answer now; another try may.
TRANSIENT = frozenset({"unavailable", "timeout", "internal"})
# Codes a client may see on a failed image; anything else is reported as internal.
PUBLIC_FAILURE_CODES = frozenset(
    {"output_blocked", "no_capacity", "unavailable", "timeout", "internal", "cancelled"}
)


def spendable(account: billing_pb2.AccountState) -> int:
    """What the public API calls the balance: allowance left today plus balance."""
    return int(account.allowance_remaining) + int(account.balance)


class Pipeline:
    """Runs images of accepted jobs; owns nothing but the background refunds it started."""

    def __init__(
        self, settings: Settings, billing: Billing, moderation: Moderation, relay: RelayPort
    ) -> None:
        self.settings = settings
        self.billing = billing
        self.moderation = moderation
        self.relay = relay
        self.background: set[asyncio.Task[object]] = set()

    async def run(self, job: Job, image: Image) -> None:
        spec = image.spec
        assert spec is not None
        try:
            try:
                async with asyncio.timeout(job_deadline(self.settings, spec.width, spec.height, spec.steps)):
                    data = await self._render(job, image, spec)
                    if not job.nsfw:
                        await self._classify_final(data)
                    else:
                        metrics.CLASSIFY_SKIPPED.inc()
            except TimeoutError:
                raise TalosError("timeout", "the image took too long; nothing was charged") from None
            self._complete(job, image, data)
            await self._deliver_then_charge(job, image)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # we own this task: it goes on to settle the hold and report
            if image.delivered.is_set():
                await self._capture(job, image)  # received before the cancel: charged
            elif job.cancel_reason == "shutdown":
                await self._fail(job, image, _shutdown_error())
            else:
                await self._fail(
                    job, image, TalosError("cancelled", "the job was cancelled; nothing was charged")
                )
        except TalosError as error:
            await self._fail(job, image, error)
        except Exception:
            log.exception("image failed unexpectedly", extra={"job_id": job.id, "image": image.index})
            await self._fail(job, image, TalosError("internal", "internal error; nothing was charged"))

    # -- render --
    async def _render(self, job: Job, image: Image, spec: RenderSpec) -> bytes:
        result: Finished | None = None
        events = self.relay.run(image.hold_id, job.account_id, spec)
        try:
            async for event in events:
                if isinstance(event, Queued):
                    job.publish(QueuedEvent(image.index, event.position, float(event.eta_seconds)))
                elif isinstance(event, Started):
                    job.publish(StartedEvent(image.index))
                elif isinstance(event, Progress):
                    job.publish(await self._progress(job, image, event))
                elif isinstance(event, Finished):
                    result = event
                    image.render_seconds = event.render_seconds
                    break
        finally:
            # Closing the relay's iterator early (cancel, timeout) cancels the image on its node.
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
        if result is None:
            raise TalosError("internal", "the render ended without a result; nothing was charged")
        image.spec = None  # the node is done with the prompt; nothing keeps it from here on
        return result.image

    async def _progress(self, job: Job, image: Image, event: Progress) -> ProgressEvent:
        """With 18+ off a preview is the picture at a late step: it is shown only once it passed."""
        preview = event.preview_jpeg
        if not preview or job.nsfw:
            return ProgressEvent(image.index, event.step, event.total_steps, preview)
        try:
            verdict = await self.moderation.classify_image(preview)
            blocked = bool(verdict.blocked)
        except TalosError as error:
            log.warning("preview check unavailable; withheld", extra={"job_id": job.id, "code": error.code})
            blocked = True
        if blocked:
            metrics.PREVIEWS_WITHHELD.inc()
            return ProgressEvent(image.index, event.step, event.total_steps, b"", preview_withheld=True)
        return ProgressEvent(image.index, event.step, event.total_steps, preview)

    async def _classify_final(self, data: bytes) -> None:
        verdict = await self.moderation.classify_image(data)
        if verdict.blocked:
            raise TalosError(
                "output_blocked",
                "the picture was withheld: it looks like adult content and 18+ is off; nothing was charged",
            )

    # -- deliver, then charge --
    def _complete(self, job: Job, image: Image, data: bytes) -> None:
        job.publish(
            CompletedEvent(
                index=image.index,
                data=data,
                output_format=job.output_format,
                width=job.width,
                height=job.height,
                seed=image.seed,
                credits_charged=PRICE_PER_IMAGE,
                balance=job.spendable,
            )
        )
        overhead = time.perf_counter() - job.accepted_at - image.render_seconds
        metrics.OVERHEAD_SECONDS.observe(max(0.0, overhead))

    async def _deliver_then_charge(self, job: Job, image: Image) -> None:
        if await self._wait_delivery(job, image):
            await self._capture(job, image)
            return
        await self._release(image, "not_collected")
        job.withdraw(
            image.index,
            FailedEvent(
                image.index,
                "timeout",
                "nobody collected the image in time; it was dropped and nothing was charged",
                image.seed,
            ),
        )
        metrics.JOBS.labels("not_collected").inc()

    async def _wait_delivery(self, job: Job, image: Image) -> bool:
        """True once a client received the image; False when the job's time for it ran out."""
        ttl = self.settings.result_ttl_seconds
        delivered = asyncio.ensure_future(image.delivered.wait())
        try:
            await job.ended.wait()
            assert job.ended_at is not None
            left = ttl - (time.monotonic() - job.ended_at)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(delivered), max(0.0, left))
            return image.delivered.is_set()
        finally:
            delivered.cancel()

    async def _capture(self, job: Job, image: Image) -> None:
        """Charges a delivered image, retrying while billing cannot answer (it may be restarting)."""
        deadline = time.monotonic() + self.settings.capture_retry_seconds
        delay = 0.2
        while True:
            try:
                await asyncio.shield(self.billing.capture(image.hold_id))
                break
            except TalosError as error:
                if error.code in TRANSIENT and time.monotonic() + delay < deadline:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                # Delivered but not charged: the hold expires in billing and the image was free.
                log.error("capture failed after delivery", extra={"job_id": job.id, "code": error.code})
                metrics.JOBS.labels("delivered_free").inc()
                return
        metrics.JOBS.labels("completed").inc()
        log.info(
            "image delivered",
            extra={"job_id": job.id, "image": image.index, "render_seconds": round(image.render_seconds, 3)},
        )

    # -- failure --
    async def _fail(self, job: Job, image: Image, error: TalosError) -> None:
        released = await self._release(image, error.code)
        if released is not None:
            job.spendable = spendable(released.account)
        code = error.code if error.code in PUBLIC_FAILURE_CODES else "internal"
        if error.code == "hold_expired":
            code, message = "timeout", "the image took too long and its hold expired; nothing was charged"
        else:
            message = error.message if code == error.code else "internal error; nothing was charged"
        if job.end_of(image.index) is not None:
            job.withdraw(image.index, FailedEvent(image.index, code, message, image.seed))
        else:
            job.publish(FailedEvent(image.index, code, message, image.seed))
        metrics.JOBS.labels(code).inc()
        log.info("image failed", extra={"job_id": job.id, "image": image.index, "code": code})

    async def _release(self, image: Image, reason: str) -> billing_pb2.ReleaseResponse | None:
        release = asyncio.ensure_future(self.release(image.hold_id, reason))
        try:
            return await asyncio.shield(release)
        except asyncio.CancelledError:
            # A second cancel (shutdown) must not stop the refund: it goes on in the background.
            self.background.add(release)
            release.add_done_callback(self.background.discard)
            return None

    async def release(self, hold: str, reason: str) -> billing_pb2.ReleaseResponse | None:
        try:
            return await self.billing.release(hold, reason)
        except TalosError as error:
            if error.code == "not_found":  # a reserve that never reached billing: nothing to return
                return None
            # Billing returns an unresolved hold by itself once it expires.
            log.error("release failed; the hold will expire", extra={"hold": hold, "code": error.code})
            return None


def _shutdown_error() -> TalosError:
    return TalosError("unavailable", "the gateway shut down before the image was done; nothing was charged")
