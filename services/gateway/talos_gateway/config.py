"""Gateway settings, read once from ``TALOS_GATEWAY_*`` environment variables."""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "TALOS_GATEWAY_"
MiB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    http_port: int = 8080
    grpc_port: int = 50051
    relay_port: int = 50052
    billing_addr: str = "127.0.0.1:50061"
    moderation_addr: str = "127.0.0.1:50062"
    log_level: str = "info"
    # Deadline on every call to billing and moderation.
    downstream_timeout_seconds: float = 5.0
    # HTTP bodies and public gRPC messages above this are refused unread.
    max_request_bytes: int = 64 * 1024
    # A finished result waits this long in memory for its client, then is dropped.
    result_ttl_seconds: float = 60.0
    # Per API key: requests per minute, and jobs at once.
    rate_limit_per_minute: int = 120
    max_concurrent_jobs_per_key: int = 4
    # Retry-After sent with a 429 for too many jobs at once.
    concurrent_retry_after_seconds: float = 2.0
    # An API key's account is cached this long (by the key's hash) before billing is asked again.
    auth_cache_seconds: float = 5.0
    # An SSE stream with nothing to say sends a comment this often, so proxies keep it open.
    sse_heartbeat_seconds: float = 15.0
    # On SIGTERM: stop accepting, let jobs in flight finish this long, fail and refund the rest.
    drain_grace_seconds: float = 30.0
    # Relay: node link, queue, retries, quarantine, untrusted results.
    relay_max_message_bytes: int = 32 * MiB
    max_image_bytes: int = 24 * MiB
    queue_bound: int = 256
    max_attempts: int = 3
    heartbeat_seconds: float = 10.0
    node_silence_seconds: float = 35.0
    quarantine_after_failures: int = 3
    quarantine_seconds: float = 300.0
    # A job's time limit on a node: base plus per step per megapixel.
    job_timeout_base_seconds: float = 30.0
    job_timeout_per_step_megapixel_seconds: float = 2.0
    # How long a queued job may wait for a node before it fails (and is refunded).
    queue_timeout_seconds: float = 120.0
    # Relay (added by the relay): a node must answer a RenderJob (accept or reject) this fast.
    accept_timeout_seconds: float = 10.0
    # Relay: queued jobs that no connected node could run (none left, all quarantined) fail after this.
    no_node_grace_seconds: float = 5.0
    # Relay: one account may hold at most this many jobs in the queue (the rest get no_capacity).
    queue_bound_per_account: int = 64
    # Relay: nodes send a preview every this many steps (0: none); previews over the cap are dropped.
    relay_preview_every: int = 5
    relay_max_preview_bytes: int = 256 * 1024
