"""Who is asking: API keys resolved to accounts (cached briefly by key hash) and request rates."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass
from typing import Protocol

from talos.billing.v1 import billing_pb2
from talos_common.errors import TalosError
from talos_common.logs import redact

log = logging.getLogger(__name__)

# ``Bearer <key>`` in the HTTP Authorization header and the gRPC authorization metadata alike.
_BEARER = re.compile(r"^\s*bearer\s+(\S+)\s*$", re.IGNORECASE)


def key_hash(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def next_utc_midnight() -> int:
    """When a daily allowance resets, for an account whose state does not say (epoch seconds)."""
    now = int(time.time())
    return now - now % 86400 + 86400


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
