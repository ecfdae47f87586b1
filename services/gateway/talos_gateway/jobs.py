"""The job pipeline: every accepted job ends exactly once, delivered-and-charged or failed-and-refunded.

One job, in order::

    authenticate (billing.Authenticate, cached briefly by key hash) → rate limits
    → validate → 18+ check → moderation.CheckPrompt → relay.admit → billing.Reserve   (accepted here)
    → relay.run (queued / started / progress events) → moderation.ClassifyImage (18+ off only)
    → billing.Capture → completed                      | any failure → billing.Release → failed

Everything before ``billing.Reserve`` answers the request itself with an error and holds
nothing. From the reserve on, the job runs in its own task; whatever ends it (an error, a
timeout, a cancel, the client going away, the gateway shutting down) releases the hold before
the one terminal event is published. Jobs live in memory only: the prompt is dropped once
rendered, the image once delivered (at most ``result_ttl_seconds`` after completion), and the
record itself (id, owner, outcome, the hash of the body for Idempotency-Key) once that TTL
has passed. Nothing is logged but ids, codes and timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from talos.billing.v1 import billing_pb2
from talos_common.errors import TalosError
from talos_common.logs import redact
from talos_gateway import metrics
from talos_gateway.config import Settings
from talos_gateway.downstream import Billing, Moderation
from talos_gateway.relay.contract import Finished, Progress, Queued, RelayPort, RenderSpec, Started
from talos_gateway.styles import PRICE_PER_IMAGE, GenerationRequest, random_seed

log = logging.getLogger(__name__)

# Codes a client may see on a failed job; anything else is reported as internal.
PUBLIC_FAILURE_CODES = frozenset(
    {"output_blocked", "no_capacity", "unavailable", "timeout", "internal", "cancelled"}
)
# Moderation categories that mean "this account is cooling down", not "this prompt is bad".
COOLDOWN_CATEGORIES = frozenset({"cooldown", "probing_cooldown", "rate_limited"})
POLICY_UNAVAILABLE = "policy_unavailable"
# ``Bearer <key>`` in the HTTP Authorization header and the gRPC authorization metadata alike.
_BEARER = re.compile(r"^\s*bearer\s+(\S+)\s*$", re.IGNORECASE)


# -- events ------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueuedEvent:
    position: int
    eta_seconds: float


@dataclass(frozen=True)
class StartedEvent:
    pass


@dataclass(frozen=True)
class ProgressEvent:
    step: int
    total_steps: int
    preview_jpeg: bytes


@dataclass(frozen=True)
class CompletedEvent:
    image: bytes
    output_format: str
    width: int
    height: int
    seed: int
    credits_charged: int
    balance: int  # spendable after the charge: allowance remaining + balance


@dataclass(frozen=True)
class FailedEvent:
    code: str
    message: str


JobEvent = QueuedEvent | StartedEvent | ProgressEvent | CompletedEvent | FailedEvent
TERMINAL = (CompletedEvent, FailedEvent)


def spendable(account: billing_pb2.AccountState) -> int:
    """What the public API calls the balance after a charge: allowance left today plus balance."""
    return int(account.allowance_remaining) + int(account.balance)


def next_utc_midnight() -> int:
    """When a daily allowance resets, for an account whose state does not say (epoch seconds)."""
    now = int(time.time())
    return now - now % 86400 + 86400


# -- principals, rate limits -------------------------------------------------------------


def key_hash(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    account_id: str
    key_hash: str
    # As billing said when the key was last checked; a confirmation is never withdrawn.
    age_confirmed: bool = False


class TokenBucket:
    """Per-key request rate: ``per_minute`` requests, refilled continuously."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(max(1, per_minute))
        self.rate = self.capacity / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
            raise TalosError(
                "rate_limited",
                f"too many requests for this API key; retry in {max(1, round(wait))} s",
                retry_after=wait,
            )
        self._buckets[key] = (tokens - 1.0, now)

    def prune(self, now: float) -> None:
        full_after = self.capacity / self.rate
        for key, (_, last) in list(self._buckets.items()):
            if now - last > full_after:
                del self._buckets[key]


class Billable(Protocol):
    async def authenticate(self, api_key: str) -> billing_pb2.AccountState: ...


class Authenticator:
    """Resolves a key to its account (cached briefly by key hash) and applies the request rate."""

    MAX_CACHED = 10_000

    def __init__(self, billing: Billable, cache_seconds: float, per_minute: int) -> None:
        self.billing = billing
        self.cache_seconds = cache_seconds
        self.limiter = TokenBucket(per_minute)
        self._cache: dict[str, tuple[float, Principal]] = {}

    async def authenticate_bearer(self, header: str | None, carrier: str) -> Principal:
        """Authenticates ``Bearer <key>`` as sent in ``carrier`` (named in the error if malformed)."""
        match = _BEARER.match(header) if header else None
        if header and not match:
            raise TalosError("invalid_api_key", f"{carrier} must be 'Bearer <key>'")
        return await self.authenticate(match.group(1) if match else None)

    async def authenticate(self, api_key: str | None) -> Principal:
        if not api_key:
            raise TalosError("invalid_api_key", "missing API key: send 'Authorization: Bearer <key>'")
        digest = key_hash(api_key)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            principal = cached[1]
        else:
            try:
                state = await self.billing.authenticate(api_key)
            except TalosError as error:
                if error.code in ("invalid_api_key", "not_found", "invalid_request"):
                    log.info("api key refused", extra={"key": redact(api_key)})
                    raise TalosError("invalid_api_key", "the API key is unknown or revoked") from None
                raise
            principal = Principal(state.account_id, digest, state.age_confirmed)
            if len(self._cache) >= self.MAX_CACHED:
                self.prune(now)
                if len(self._cache) >= self.MAX_CACHED:
                    self._cache.pop(next(iter(self._cache)))
            self._cache[digest] = (now + self.cache_seconds, principal)
        self.limiter.take(digest, now)
        return principal

    def prune(self, now: float) -> None:
        for digest, (expires, _) in list(self._cache.items()):
            if expires <= now:
                del self._cache[digest]
        self.limiter.prune(now)


# -- one job -------------------------------------------------------------------------------


class Job:
    """A job's state in memory: its latest events, its task, and who may see it."""

    def __init__(
        self,
        job_id: str,
        principal: Principal,
        request: GenerationRequest,
        seed: int,
        spec: RenderSpec,
    ) -> None:
        self.id = job_id
        self.account_id = principal.account_id
        self.key_hash = principal.key_hash
        self.created = int(time.time())
        self.size = request.size
        self.output_format = request.output_format
        self.nsfw = request.nsfw
        self.steps = request.steps
        self.seed = seed
        self.spec: RenderSpec | None = spec  # dropped once the node has the job's result
        self.task: asyncio.Task[None] | None = None
        self.cancel_reason: str | None = None
        self.connection_bound = False  # created by a call that owns it (Generate, non-202 HTTP)
        self.ended = asyncio.Event()
        self.ended_at: float | None = None
        self.delivered = False
        self.bound = 0  # connections whose going away cancels the job
        # Latest event per slot: a reconnect replays queued/started, the latest progress, the end.
        self._slots: dict[str, tuple[int, JobEvent]] = {}
        self._seq = 0
        self._changed = asyncio.Event()
        self._watchers = 0
        self.accepted_at = time.perf_counter()
        self.render_seconds = 0.0
        self.result: Finished | None = None  # between the render and the end only
        self.idempotency_index: tuple[str, str] | None = None

    def cancel(self, reason: str) -> None:
        """Asks the job's task to stop (once); the task releases the hold and reports it."""
        if self.done or self.cancel_reason is not None or self.task is None:
            return
        self.cancel_reason = reason
        self.task.cancel()

    # -- events --
    def publish(self, event: JobEvent) -> None:
        if self.done:
            return
        slot = {
            QueuedEvent: "queued",
            StartedEvent: "started",
            ProgressEvent: "progress",
            CompletedEvent: "terminal",
            FailedEvent: "terminal",
        }[type(event)]
        if slot == "started":
            self._slots.pop("queued", None)
        self._seq += 1
        self._slots[slot] = (self._seq, event)
        if isinstance(event, TERMINAL):
            self.ended_at = time.monotonic()
            self.spec = None
            self.result = None
            self.ended.set()
        self._changed.set()
        self._changed = asyncio.Event()

    @property
    def done(self) -> bool:
        return "terminal" in self._slots

    @property
    def terminal(self) -> JobEvent | None:
        entry = self._slots.get("terminal")
        return entry[1] if entry else None

    def events_after(self, seq: int) -> list[tuple[int, JobEvent]]:
        return sorted((entry for entry in self._slots.values() if entry[0] > seq), key=lambda e: e[0])

    async def wait_change(self, seq: int, wait_seconds: float | None) -> bool:
        if self._seq > seq:
            return True
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), wait_seconds)
        except TimeoutError:
            return False
        return True

    async def follow(self, heartbeat: float | None = None) -> AsyncIterator[JobEvent | None]:
        """The current state, then every change until the terminal event; None on a quiet heartbeat."""
        if self.delivered:
            raise TalosError("not_found", "this job's result was already delivered; results are not kept")
        self._watchers += 1
        try:
            seq = 0
            while True:
                pending = self.events_after(seq)
                for entry_seq, event in pending:
                    seq = entry_seq
                    yield event
                    if isinstance(event, TERMINAL):
                        return
                if not pending and not await self.wait_change(seq, heartbeat):
                    yield None
        finally:
            self._watchers -= 1
            if self.delivered and self._watchers == 0:
                self._drop_image()

    def mark_delivered(self) -> None:
        """The completed event reached a client: the image goes once no one else is reading it.

        The record (id, owner, outcome) stays until its TTL; later watchers get not_found.
        """
        entry = self._slots.get("terminal")
        if entry is None or not isinstance(entry[1], CompletedEvent):
            return
        self.delivered = True
        if self._watchers == 0:
            self._drop_image()

    def _drop_image(self) -> None:
        entry = self._slots.get("terminal")
        if entry is not None and isinstance(entry[1], CompletedEvent) and entry[1].image:
            self._slots["terminal"] = (entry[0], _without_image(entry[1]))
        self._slots.pop("progress", None)

    def drop_content(self) -> None:
        """At the end of the TTL: the prompt and the image go, whoever still holds the job."""
        self.spec = None
        self.result = None
        self._drop_image()


def _without_image(event: CompletedEvent) -> CompletedEvent:
    return CompletedEvent(
        image=b"",
        output_format=event.output_format,
        width=event.width,
        height=event.height,
        seed=event.seed,
        credits_charged=event.credits_charged,
        balance=event.balance,
    )


@dataclass
class _IdempotencyEntry:
    body_hash: str
    job_id: str | None = None
    waiters: list[asyncio.Future[Job]] = field(default_factory=list)


# -- the registry and pipeline ------------------------------------------------------------


class JobRegistry:
    """All jobs of this gateway replica, the pipeline that runs them, and its limits."""

    def __init__(
        self,
        settings: Settings,
        billing: Billing,
        moderation: Moderation,
        relay: RelayPort,
    ) -> None:
        self.settings = settings
        self.billing = billing
        self.moderation = moderation
        self.relay = relay
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

    async def drain(self, grace: float) -> None:
        """Stops accepting; lets running jobs end within ``grace``; fails and refunds the rest."""
        self.accepting = False
        tasks = [job.task for job in self.active_jobs() if job.task is not None]
        if tasks:
            log.info("draining jobs", extra={"jobs": len(tasks), "grace_seconds": grace})
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for job in self.active_jobs():
                job.cancel("shutdown")
            if pending:
                await asyncio.wait(pending, timeout=self.settings.downstream_timeout_seconds * 4 + 1)
        if self._background:
            await asyncio.wait(list(self._background), timeout=self.settings.downstream_timeout_seconds * 4)

    # -- lookups --
    def get(self, principal: Principal, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None or job.account_id != principal.account_id:
            raise TalosError("not_found", "no such job for this account")
        return job

    async def cancel(self, principal: Principal, job_id: str) -> bool:
        """Cancels a running job and waits for its hold to be released; False when it had ended."""
        job = self.get(principal, job_id)
        if job.done:
            return False
        job.cancel("cancelled")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(job.ended.wait(), self.settings.downstream_timeout_seconds * 4 + 1)
        terminal = job.terminal
        return isinstance(terminal, FailedEvent) and terminal.code == "cancelled"

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
        self, principal: Principal, request: GenerationRequest, idempotency_key: str | None, *, bound: bool
    ) -> Job:
        """Accepts a job (its hold is placed) or raises the reason it was refused, holding nothing."""
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
            if bound and job.delivered:
                raise TalosError(
                    "idempotency_conflict",
                    "the job for this Idempotency-Key already delivered its result; results are not kept",
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

    async def _accept(self, principal: Principal, request: GenerationRequest, bound: bool) -> Job:
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
            seed = request.seed if request.seed is not None else random_seed()
            spec = request.spec(seed)
            # The hard limit answers first, so a refused prompt is refused whatever the capacity.
            await self._check_prompt(principal, request, spec)
            self.relay.admit(principal.account_id)
            job_id = str(uuid.uuid4())
            await self._reserve(job_id, principal.account_id)
            job = Job(job_id, principal, request, seed, spec)
            job.accepted_at = started
            job.connection_bound = bound
            self.jobs[job_id] = job
            job.task = asyncio.create_task(self._run(job), name=f"job-{job_id}")
            accepted = True
            metrics.JOBS_ACTIVE.inc()
            log.info(
                "job accepted",
                extra={
                    "job_id": job_id,
                    "account_id": principal.account_id,
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

    async def _check_prompt(self, principal: Principal, request: GenerationRequest, spec: RenderSpec) -> None:
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

    async def _reserve(self, job_id: str, account_id: str) -> None:
        try:
            await self.billing.reserve(job_id, account_id)
        except TalosError as error:
            if error.code in ("timeout", "unavailable", "internal"):
                # The hold may exist although the answer was lost: return it (Release is idempotent).
                self._spawn(self._release(job_id, "reserve_failed"))
            if error.code == "not_found":
                raise TalosError("invalid_api_key", "the account of this API key no longer exists") from None
            raise

    # -- the job task --
    def _deadline(self, spec: RenderSpec) -> float:
        s = self.settings
        megapixels = spec.width * spec.height / 1_000_000
        per_try = (
            s.job_timeout_base_seconds + s.job_timeout_per_step_megapixel_seconds * spec.steps * megapixels
        )
        return s.queue_timeout_seconds + s.max_attempts * per_try + 4 * s.downstream_timeout_seconds

    async def _run(self, job: Job) -> None:
        spec = job.spec
        assert spec is not None
        try:
            async with asyncio.timeout(self._deadline(spec)):
                result = await self._render(job, spec)
                job.result = result
                if job.nsfw:
                    metrics.CLASSIFY_SKIPPED.inc()
                else:
                    verdict = await self.moderation.classify_image(result.image)
                    if verdict.blocked:
                        raise TalosError(
                            "output_blocked",
                            "the picture was withheld: it looks like adult content and 18+ is off; "
                            "nothing was charged",
                        )
                captured = await self.billing.capture(job.id)
            self._complete(job, result, captured.account)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # we own this task: it goes on to release and report
            if job.cancel_reason == "shutdown":
                error = TalosError(
                    "unavailable", "the gateway shut down before the job ended; nothing was charged"
                )
            else:
                error = TalosError("cancelled", "the job was cancelled; nothing was charged")
            await self._fail(job, error, job.cancel_reason or "cancelled")
        except TimeoutError:
            await self._fail(
                job, TalosError("timeout", "the job took too long; nothing was charged"), "timeout"
            )
        except TalosError as error:
            await self._fail(job, error, error.code)
        except Exception:
            log.exception("job failed unexpectedly", extra={"job_id": job.id})
            await self._fail(job, TalosError("internal", "internal error; nothing was charged"), "internal")
        finally:
            self._finished(job)

    async def _render(self, job: Job, spec: RenderSpec) -> Finished:
        result: Finished | None = None
        events = self.relay.run(job.id, job.account_id, spec)
        try:
            async for event in events:
                if isinstance(event, Queued):
                    job.publish(QueuedEvent(event.position, float(event.eta_seconds)))
                elif isinstance(event, Started):
                    job.publish(StartedEvent())
                elif isinstance(event, Progress):
                    job.publish(ProgressEvent(event.step, event.total_steps, event.preview_jpeg))
                elif isinstance(event, Finished):
                    result = event
                    job.render_seconds = event.render_seconds
                    break
        finally:
            # Closing the relay's iterator early (cancel, timeout) cancels the job on its node.
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
        if result is None:
            raise TalosError("internal", "the render ended without a result; nothing was charged")
        job.spec = None  # the node is done with the prompt; nothing keeps it from here on
        return result

    def _complete(self, job: Job, result: Finished, account: billing_pb2.AccountState) -> None:
        job.publish(
            CompletedEvent(
                image=result.image,
                output_format=result.output_format,
                width=result.width,
                height=result.height,
                seed=job.seed,
                credits_charged=PRICE_PER_IMAGE,
                balance=spendable(account),
            )
        )
        metrics.JOBS.labels("completed").inc()
        overhead = time.perf_counter() - job.accepted_at - job.render_seconds
        metrics.OVERHEAD_SECONDS.observe(max(0.0, overhead))
        log.info(
            "job completed",
            extra={
                "job_id": job.id,
                "render_seconds": round(job.render_seconds, 3),
                "node_id": result.node_id,
            },
        )

    async def _fail(self, job: Job, error: TalosError, reason: str) -> None:
        released: billing_pb2.ReleaseResponse | None = None
        release = asyncio.ensure_future(self._release(job.id, reason))
        try:
            released = await asyncio.shield(release)
        except asyncio.CancelledError:
            # A second cancel (shutdown) must not stop the refund: it goes on in the background.
            self._background.add(release)
            release.add_done_callback(self._background.discard)
        result = job.result
        if (
            released is not None
            and released.hold.state == billing_pb2.HOLD_STATE_CAPTURED
            and result is not None
        ):
            # The capture went through although its answer was lost (or a cancel came after it):
            # the job was charged, so it is delivered. Charged means delivered, never failed.
            log.warning("capture had succeeded; delivering", extra={"job_id": job.id})
            self._complete(job, result, released.account)
            return
        code = error.code if error.code in PUBLIC_FAILURE_CODES else "internal"
        if error.code == "hold_expired":
            code, message = "timeout", "the job took too long and its hold expired; nothing was charged"
        else:
            message = error.message if code == error.code else "internal error; nothing was charged"
        job.publish(FailedEvent(code, message))
        metrics.JOBS.labels(code).inc()
        log.info("job failed", extra={"job_id": job.id, "code": code, "reason": reason})

    async def _release(self, job_id: str, reason: str) -> billing_pb2.ReleaseResponse | None:
        try:
            return await self.billing.release(job_id, reason)
        except TalosError as error:
            if error.code == "not_found":  # a reserve that never reached billing: nothing to return
                return None
            # Billing returns an unresolved hold by itself once it expires.
            log.error("release failed; the hold will expire", extra={"job_id": job_id, "code": error.code})
            return None

    def _finished(self, job: Job) -> None:
        self._release_slot(job.key_hash)
        metrics.JOBS_ACTIVE.dec()

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
        now = time.monotonic() if now is None else now
        ttl = self.settings.result_ttl_seconds
        for job_id, job in list(self.jobs.items()):
            if job.ended_at is not None and now - job.ended_at >= ttl:
                job.drop_content()
                del self.jobs[job_id]
                if job.idempotency_index is not None:
                    self._idempotency.pop(job.idempotency_index, None)
        metrics.JOBS_HELD.set(sum(1 for job in self.jobs.values() if job.done))
        self.auth.prune(now)


def _rejected(error: TalosError) -> TalosError:
    metrics.REJECTED.labels(error.code).inc()
    return error
