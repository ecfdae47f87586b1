"""What billing accepts: the size of every id, amount and list, checked before any work.

Id lengths come from the columns that store them, so a limit is declared once.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import String

from talos_billing.schema import accounts, holds, node_tokens
from talos_common.errors import TalosError


def _length(column: object) -> int:
    kind = getattr(column, "type", None)
    assert isinstance(kind, String) and kind.length, column
    return int(kind.length)


MAX_JOB_ID = _length(holds.c.job_id)
MAX_ACCOUNT_ID = _length(accounts.c.id)
MAX_NODE_ID = _length(node_tokens.c.node_id)
MAX_NAME = _length(node_tokens.c.name)
MAX_REASON = _length(holds.c.reason)
MAX_CREDITS = 10**12
# Images one ReserveMany may hold at once (the gateway asks for a few).
MAX_RESERVE_MANY = 16
# Node ids one ActiveNodes call may ask about: every node connected to one gateway.
MAX_ACTIVE_NODES = 10_000


def check_id(value: str, name: str, limit: int) -> str:
    if not value or len(value) > limit or not value.isprintable() or value.strip() != value:
        raise TalosError("invalid_request", f"{name} must be 1 to {limit} printable characters", field=name)
    return value


def check_credits(value: int, name: str, *, positive: bool) -> int:
    if value < (1 if positive else 0) or value > MAX_CREDITS:
        low = "positive" if positive else "zero or more"
        raise TalosError("invalid_request", f"{name} must be {low} and at most {MAX_CREDITS}", field=name)
    return value


def check_name(value: str) -> str:
    if len(value) > MAX_NAME or not value.isprintable():
        raise TalosError("invalid_request", f"name must be at most {MAX_NAME} printable characters")
    return value


def check_job_ids(job_ids: Sequence[str]) -> tuple[str, ...]:
    """1 to :data:`MAX_RESERVE_MANY` distinct, well-formed job ids."""
    if not 1 <= len(job_ids) <= MAX_RESERVE_MANY:
        raise TalosError(
            "invalid_request", f"job_ids must hold 1 to {MAX_RESERVE_MANY} job ids", field="job_ids"
        )
    for job_id in job_ids:
        check_id(job_id, "job_ids", MAX_JOB_ID)
    if len(set(job_ids)) != len(job_ids):
        raise TalosError("invalid_request", "job_ids must not repeat a job id", field="job_ids")
    return tuple(job_ids)


def check_node_ids(node_ids: Sequence[str]) -> list[str]:
    """At most :data:`MAX_ACTIVE_NODES` ids, none empty or longer than a node id can be.

    Only sizes are checked (this runs every few seconds on thousands of ids): an id of
    the right size that names no node is simply not active.
    """
    if len(node_ids) > MAX_ACTIVE_NODES:
        raise TalosError(
            "invalid_request", f"node_ids must hold at most {MAX_ACTIVE_NODES} node ids", field="node_ids"
        )
    if node_ids and not 1 <= min(map(len, node_ids)) <= max(map(len, node_ids)) <= MAX_NODE_ID:
        raise TalosError(
            "invalid_request", f"each node id must be 1 to {MAX_NODE_ID} characters", field="node_ids"
        )
    return list(node_ids)
