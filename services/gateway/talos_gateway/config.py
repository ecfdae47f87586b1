"""Gateway settings, read once from ``TALOS_GATEWAY_*`` environment variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PREFIX = "TALOS_GATEWAY_"
MiB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    http_port: int = 8080
    grpc_port: int = 50051
    relay_port: int = 50052
    # TLS for the listeners that leave the cluster: a certificate chain and its key, as files
    # (a Secret cert-manager renews in place; new connections get the new one). Both empty:
    # plaintext, for loopback and in-cluster use only.
    grpc_tls_cert_file: Path | None = None
    grpc_tls_key_file: Path | None = None
    relay_tls_cert_file: Path | None = None
    relay_tls_key_file: Path | None = None
    billing_addr: str = "127.0.0.1:50061"
    moderation_addr: str = "127.0.0.1:50062"
    log_level: str = "info"
    # Deadline on every call to billing and moderation.
    downstream_timeout_seconds: float = 5.0
    # HTTP bodies and public gRPC messages above this are refused unread.
    max_request_bytes: int = 64 * 1024
    # A finished result waits this long in memory for its client, then is dropped.
    result_ttl_seconds: float = 60.0
    # A delivered image's charge is retried this long while billing cannot answer; after that
    # (or once billing's own hold expiry passed) the image was free.
    capture_retry_seconds: float = 120.0
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
    # Relay network
    # Redis shared by the gateway replicas of one relay network (e.g. redis://redis:6379/0):
    # every job can then reach every node, whichever replica each landed on. Empty: one
    # replica, its queue in memory, nothing else to run.
    redis_url: str = ""
    # Replicas sharing a Redis and this name form one network (its keys start talos:<name>:).
    relay_network: str = "relay"
    # This replica's id in the network; empty: a random one at each start.
    replica_id: str = ""
    # The internal port other replicas fetch this replica's jobs on (PeerService, in-cluster
    # plaintext); 0 takes a free port. Only opened with redis_url.
    peer_port: int = 50053
    # host:port other replicas reach this replica's peer port at (in Kubernetes: the pod IP);
    # empty: the bound host (this machine's address when bound to every interface) and port.
    peer_advertise: str = ""
    # A replica renews its registration (itself and its nodes) this often; one silent for
    # replica_ttl_seconds has left the network, with its tickets.
    replica_heartbeat_seconds: float = 1.0
    replica_ttl_seconds: float = 5.0
    # A replica with a free node looks at the network queue at least this often (announcements
    # of new tickets normally wake it at once), and refreshes its view of the network.
    claim_every_seconds: float = 1.0
    # Connected nodes are checked with billing this often; revoked ones are disconnected.
    node_revocation_check_seconds: float = 5.0
