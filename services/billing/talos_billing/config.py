"""Billing settings, read once from ``TALOS_BILLING_*`` environment variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PREFIX = "TALOS_BILLING_"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 50061
    # The embedded SQLite store lives here as billing.db (created when missing).
    data_dir: Path = Path("var")
    # Empty: SQLite under data_dir. PostgreSQL: postgresql+asyncpg://user:password@host:5432/db
    database_url: str = ""
    # PostgreSQL only: the schema billing's tables live in (empty: the server's search_path).
    database_schema: str = ""
    # Connections to PostgreSQL (SQLite always writes through one connection).
    pool_size: int = 10
    # Credits per image.
    price: int = 18
    # An unresolved hold is released by billing itself this long after it was made.
    hold_ttl_seconds: float = 600.0
    # How often the sweeper looks for expired holds.
    sweep_seconds: float = 5.0
    # Ledger operations that arrive together commit in one transaction, at most this many.
    batch_max: int = 256
    # Batches in flight at once (PostgreSQL; SQLite has one writer): more overlap round trips
    # to a distant database, at the cost of smaller batches (more CPU per operation).
    batch_workers: int = 1
    # PostgreSQL: try each batch on a snapshot without locks first (retried with row locks
    # when a concurrent batch got there first); false locks from the start.
    optimistic_batches: bool = True
    # SQLite's synchronous pragma: FULL syncs every commit to disk (NORMAL survives a
    # process crash but may lose the last commits on power loss).
    sqlite_synchronous: str = "FULL"
    # On SIGTERM: stop accepting, let calls in flight finish this long.
    drain_grace_seconds: float = 10.0
    log_level: str = "info"

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'billing.db').resolve()}"
