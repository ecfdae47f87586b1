"""Accepting jobs: every accepted image ends exactly once, delivered-and-charged or failed-and-refunded.

One request, in order::

    authenticate (billing.Authenticate, cached briefly by key hash) → rate limits
    → validate → 18+ check → moderation.CheckPrompt → relay.admit
    → billing.ReserveMany (one hold per image)            (accepted here)
    → one task per image (:mod:`talos_gateway.pipeline`)

Everything before the holds answers the request itself with an error and holds nothing.
From then on each image runs in its own task; whatever ends it (an error, a timeout, a
cancel, the client going away, the gateway shutting down) settles its hold before its end
event is published. Jobs live in memory only: the prompt is dropped once rendered, an image
once delivered, and the record itself (id, owner, outcome, the hash of the body for
idempotency) ``result_ttl_seconds`` after the job ended. Nothing is logged but ids, codes and
timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from talos.api.v1.contract import Generation
from talos_common.errors import TalosError
from talos_gateway import metrics, styles
from talos_gateway.auth import Authenticator, Principal
from talos_gateway.config import Settings
from talos_gateway.downstream import Billing, Moderation
from talos_gateway.job import FailedEvent, Job
from talos_gateway.pipeline import Pipeline, spendable
from talos_gateway.relay.contract import RelayPort, RenderSpec

log = logging.getLogger(__name__)

# Moderation categories that mean "this account is cooling down", not "this prompt is bad".
COOLDOWN_CATEGORIES = frozenset({"cooldown", "probing_cooldown", "rate_limited"})
POLICY_UNAVAILABLE = "policy_unavailable"


@dataclass
class _IdempotencyEntry:
    body_hash: str
    job_id: str | None = None
    waiters: list[asyncio.Future[Job]] = field(default_factory=list)


class JobRegistry:
    """All jobs of this gateway replica and the limits on accepting them."""

    def __init__(
        self, settings: Settings, billing: Billing, moderation: Moderation, relay: RelayPort
    ) -> None:
        self.settings = settings
        self.billing = billing
        self.moderation = moderation
        self.relay = relay
        self.pipeline = Pipeline(settings, billing, moderation, relay)
        self.auth = Authenticator(billing, settings.auth_cache_seconds, settings.rate_limit_per_minute)
        self.jobs: dict[str, Job] = {}
        self._idempotency: dict[tuple[str, str], _IdempotencyEntry] = {}
        self._active_by_key: dict[str, int] = {}
        self.accepting = True
        self._reaper: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()

    # -- lifecycle --
    def start(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_forever(), name="job-reaper")

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None

    def active_jobs(self) -> list[Job]:
        return [job for job in self.jobs.values() if not job.done]

    def _image_tasks(self) -> list[asyncio.Task[None]]:
        return [
            image.task
            for job in self.jobs.values()
            for image in job.images
            if image.task is not None and not image.task.done()
        ]

    async def drain(self, grace: float) -> None:
        """Stops accepting; lets images end within ``grace``; fails and refunds the rest."""
        self.accepting = False
        tasks = self._image_tasks()
        if tasks:
            log.info("draining jobs", extra={"images": len(tasks), "grace_seconds": grace})
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for job in list(self.jobs.values()):
                job.cancel("shutdown")
            if pending:
                await asyncio.wait(pending, timeout=self.settings.downstream_timeout_seconds * 4 + 1)
        background = self._background | self.pipeline.background
        if background:
            await asyncio.wait(list(background), timeout=self.settings.downstream_timeout_seconds * 4)

    # -- lookups --
    def get(self, principal: Principal, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None or job.account_id != principal.account_id:
            raise TalosError("not_found", "no such job for this account")
        return job

    async def cancel(self, principal: Principal, job_id: str) -> bool:
        """Cancels a running job and waits for its holds to be settled; False when it had ended."""
        job = self.get(principal, job_id)
        if job.done:
            return False
        job.cancel("cancelled")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(job.ended.wait(), self.settings.downstream_timeout_seconds * 4 + 1)
        return any(isinstance(end, FailedEvent) and end.code == "cancelled" for end in job.ends())

    def attach(self, job: Job) -> None:
        """A connection that owns the job (Generate, a non-202 HTTP request) follows it."""
        job.bound += 1

    def detach(self, job: Job) -> None:
        """That connection is done or gone; the last one to go before the end cancels the job."""
        job.bound -= 1
        if job.bound <= 0 and job.connection_bound:
            job.cancel("client_gone")

    # -- submit --
    async def submit(
        self, principal: Principal, request: Generation, idempotency_key: str | None, *, bound: bool
    ) -> Job:
        """Accepts a job (its holds are placed) or raises the reason it was refused, holding nothing."""
        if not self.accepting:
            raise TalosError("no_capacity", "this gateway is shutting down; retry in a moment", retry_after=5)
        if idempotency_key is None:
            return await self._accept(principal, request, bound)
        index = (principal.account_id, idempotency_key)
        body_hash = request.body_hash()
        entry = self._idempotency.get(index)
        if entry is not None:
            if entry.body_hash != body_hash:
                raise TalosError(
                    "idempotency_conflict", "this Idempotency-Key was already used with a different body"
                )
            if entry.job_id is None:
                waiter: asyncio.Future[Job] = asyncio.get_running_loop().create_future()
                entry.waiters.append(waiter)
                job = await waiter
            else:
                existing = self.jobs.get(entry.job_id)
                if existing is None:  # expired between the lookups
                    self._idempotency.pop(index, None)
                    return await self.submit(principal, request, idempotency_key, bound=bound)
                job = existing
            if bound and job.fully_delivered:
                raise TalosError(
                    "idempotency_conflict",
                    "the job for this Idempotency-Key already delivered its images; results are not kept",
                )
            return job
        entry = _IdempotencyEntry(body_hash)
        self._idempotency[index] = entry
        try:
            job = await self._accept(principal, request, bound)
        except BaseException as error:
            self._idempotency.pop(index, None)
            for waiter in entry.waiters:
                if not waiter.done():
                    waiter.set_exception(
                        error if isinstance(error, TalosError) else TalosError("internal", "internal error")
                    )
            raise
        entry.job_id = job.id
        for waiter in entry.waiters:
            if not waiter.done():
                waiter.set_result(job)
        job.idempotency_index = index  # so the record expires with the job
        return job

    async def _accept(self, principal: Principal, request: Generation, bound: bool) -> Job:
        started = time.perf_counter()
        active = self._active_by_key.get(principal.key_hash, 0)
        if active >= self.settings.max_concurrent_jobs_per_key:
            raise _rejected(
                TalosError(
                    "rate_limited",
                    f"this API key already has {active} jobs running; wait for one to end",
                    retry_after=self.settings.concurrent_retry_after_seconds,
                )
            )
        # Count the job from here, so concurrent submits cannot pass the limit together.
        self._active_by_key[principal.key_hash] = active + 1
        accepted = False
        try:
            if request.nsfw and not principal.age_confirmed:
                state = await self.billing.get_account(principal.account_id)
                if not state.age_confirmed:
                    raise TalosError(
                        "age_confirmation_required",
                        "18+ output needs a one-time age confirmation: POST /v1/account/age-confirmation",
                    )
            seeds = request.seeds(request.seed if request.seed is not None else styles.random_seed())
            specs = [styles.render_spec(request, seed) for seed in seeds]
            # The hard limit answers first, so a refused prompt is refused whatever the capacity.
            await self._check_prompt(principal, request, specs[0])
            self.relay.admit(principal.account_id)
            job = Job(str(uuid.uuid4()), principal, request, seeds, specs)
            job.spendable = await self._reserve(job)
            job.accepted_at = started
            job.connection_bound = bound
            self.jobs[job.id] = job
            for image in job.images:
                image.task = asyncio.create_task(
                    self.pipeline.run(job, image), name=f"job-{job.id}-{image.index}"
                )
            self._spawn(self._finish_when_ended(job))
            accepted = True
            metrics.JOBS_ACTIVE.inc()
            log.info(
                "job accepted",
                extra={
                    "job_id": job.id,
                    "account_id": principal.account_id,
                    "images": job.n,
                    "steps": request.steps,
                    "size": request.size,
                    "nsfw": request.nsfw,
                },
            )
            return job
        except TalosError as error:
            raise _rejected(error) from None
        finally:
            if not accepted:
                self._release_slot(principal.key_hash)

    def _release_slot(self, digest: str) -> None:
        left = self._active_by_key.get(digest, 0) - 1
        if left > 0:
            self._active_by_key[digest] = left
        else:
            self._active_by_key.pop(digest, None)

    async def _finish_when_ended(self, job: Job) -> None:
        await job.ended.wait()
        self._release_slot(job.key_hash)
        metrics.JOBS_ACTIVE.dec()

    async def _check_prompt(self, principal: Principal, request: Generation, spec: RenderSpec) -> None:
        verdict = await self.moderation.check_prompt(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            final_prompt=spec.prompt,
            final_negative=spec.negative_prompt,
            account_id=principal.account_id,
        )
        cooldown = int(verdict.cooldown_seconds)
        if cooldown > 0 and (not verdict.blocked or verdict.category in COOLDOWN_CATEGORIES):
            raise TalosError(
                "rate_limited",
                f"too many prompts were refused for this account; wait {cooldown} s before the next one",
                retry_after=cooldown,
            )
        if verdict.blocked:
            if verdict.category == POLICY_UNAVAILABLE:
                raise TalosError(
                    "unavailable", "the prompt check is unavailable; nothing was charged", retry_after=5
                )
            raise TalosError(
                "content_policy_violation",
                "this prompt is not allowed by the content policy (no sexual content involving minors); "
                "nothing was charged",
            )

    async def _reserve(self, job: Job) -> int:
        """Holds every image's price at once (all or none); the spendable credits left."""
        holds = [image.hold_id for image in job.images]
        try:
            reply = await self.billing.reserve_many(job.account_id, holds)
        except TalosError as error:
            if error.code in ("timeout", "unavailable", "internal"):
                # The holds may exist although the answer was lost: return them (Release is idempotent).
                for hold in holds:
                    self._spawn(self.pipeline.release(hold, "reserve_failed"))
            if error.code == "not_found":
                raise TalosError("invalid_api_key", "the account of this API key no longer exists") from None
            raise
        return spendable(reply.account)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- expiry --
    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.settings.result_ttl_seconds / 4))
            self.reap()

    def reap(self, now: float | None = None) -> None:
        """Forgets jobs whose time is up and whose every hold is settled."""
        now = time.monotonic() if now is None else now
        ttl = self.settings.result_ttl_seconds
        for job_id, job in list(self.jobs.items()):
            settled = all(image.task is None or image.task.done() for image in job.images)
            if job.ended_at is not None and now - job.ended_at >= ttl and settled:
                job.drop_content()
                del self.jobs[job_id]
                if job.idempotency_index is not None:
                    self._idempotency.pop(job.idempotency_index, None)
        metrics.JOBS_HELD.set(sum(1 for job in self.jobs.values() if job.done))
        self.auth.prune(now)


def _rejected(error: TalosError) -> TalosError:
    metrics.REJECTED.labels(error.code).inc()
    return error
