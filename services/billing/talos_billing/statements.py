"""The ledger's SQL, built once, and the translation between rows and working copies.

Each statement's text stays the same from call to call (so it is prepared once): a list of
ids is bound as ONE parameter, and many rows go as one executemany.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    Dialect,
    Row,
    Select,
    String,
    TypeDecorator,
    and_,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    union,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeEngine

from talos_billing.books import Account, Hold
from talos_billing.rules import HoldState
from talos_billing.schema import accounts, holds, ledger


class IdList(TypeDecorator[list[str]]):
    """A list of ids as one bound parameter: a text[] on PostgreSQL, a JSON array on SQLite.

    One parameter, whatever the length, keeps each statement's SQL the same from batch to
    batch, so it is prepared once (``IN (:a, :b, ...)`` would be a new statement per length).
    """

    impl = String
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.ARRAY(String))
        return dialect.type_descriptor(String())

    def process_bind_param(self, value: list[str] | None, dialect: Dialect) -> Any:
        values = list(value or ())
        return values if dialect.name == "postgresql" else json.dumps(values)


def ids(name: str, dialect: str) -> Select[Any]:
    """The ids bound as ``name``, as a one-column subquery (index-friendly on both stores)."""
    param = bindparam(name, type_=IdList())
    if dialect == "postgresql":
        return select(func.unnest(param))
    return select(literal_column("value")).select_from(func.json_each(param))


@dataclass(frozen=True)
class BatchReads:
    """How a batch reads what it will change (``accs``: account ids, ``jobs``: job ids)."""

    # One statement: the batch's accounts, each joined with the batch's holds on it.
    together: Select[Any]
    # Pessimistic, two statements: lock the accounts in id order, then the holds in job order
    # (an optimistic batch may change a hold without its account's lock; this waits for it).
    lock_accounts: Select[Any]
    holds: Select[Any]


def batch_reads(dialect: str) -> BatchReads:
    # The accounts of a batch: those named by its operations, and those its holds are on.
    account_ids = union(
        ids("accs", dialect), select(holds.c.account_id).where(holds.c.job_id.in_(ids("jobs", dialect)))
    )
    batch_holds = and_(holds.c.account_id == accounts.c.id, holds.c.job_id.in_(ids("jobs", dialect)))
    together = (
        select(
            *[column.label("a_" + column.name) for column in accounts.c],
            *[column.label("h_" + column.name) for column in holds.c],
        )
        .select_from(accounts.outerjoin(holds, batch_holds))
        .where(accounts.c.id.in_(account_ids))
    )
    return BatchReads(
        together=together,
        lock_accounts=select(accounts)
        .where(accounts.c.id.in_(account_ids))
        .order_by(accounts.c.id)
        .with_for_update(),
        holds=select(holds)
        .where(holds.c.job_id.in_(ids("jobs", dialect)))
        .order_by(holds.c.job_id)
        .with_for_update(),
    )


INSERT_HOLDS = insert(holds)
UPDATE_HOLD = (
    update(holds)
    .where(holds.c.job_id == bindparam("b_job_id"))
    .values(state=bindparam("b_state"), resolved_at=bindparam("b_resolved_at"), reason=bindparam("b_reason"))
)
UPDATE_ACCOUNT = (
    update(accounts)
    .where(accounts.c.id == bindparam("b_id"))
    .values(
        balance=bindparam("b_balance"),
        daily_allowance=bindparam("b_daily_allowance"),
        allowance_day=bindparam("b_allowance_day"),
        allowance_used=bindparam("b_allowance_used"),
        age_confirmed_at=bindparam("b_age_confirmed_at"),
    )
)
INSERT_LEDGER = insert(ledger)
READ_ACCOUNT = select(accounts).where(accounts.c.id == bindparam("id"))
READ_HOLD = select(holds).where(holds.c.job_id == bindparam("job_id"))
POSTED = select(ledger.c.txn).where(ledger.c.txn.in_(bindparam("txns", expanding=True))).distinct()
EXPIRED_HOLDS = (
    select(holds.c.job_id)
    .where(holds.c.state == HoldState.HELD.value, holds.c.expires_at <= bindparam("now"))
    .order_by(holds.c.expires_at)
    .limit(bindparam("limit"))
)


def first(statement: Select[Any], params: dict[str, Any], conn: Connection) -> Row[Any] | None:
    """The first row a read finds (for :meth:`Database.read`)."""
    return conn.execute(statement, params).first()


def scalars(statement: Select[Any], params: dict[str, Any], conn: Connection) -> Sequence[Any]:
    """The first column of every row a read finds (for :meth:`Database.read`)."""
    return conn.execute(statement, params).scalars().all()


# -- rows and working copies -------------------------------------------------------------
# A stored state number to its HoldState (a dict lookup; calling the enum costs a microsecond).
_HOLD_STATES = {int(state): state for state in HoldState}


def account_from(row: Row[Any], prefix: str = "") -> Account:
    mapping = row._mapping
    return Account(
        mapping[prefix + "id"],
        mapping[prefix + "balance"],
        mapping[prefix + "daily_allowance"],
        mapping[prefix + "allowance_day"],
        mapping[prefix + "allowance_used"],
        mapping[prefix + "age_confirmed_at"],
    )


def hold_from(row: Row[Any], prefix: str = "") -> Hold:
    mapping = row._mapping
    return Hold(
        mapping[prefix + "job_id"],
        mapping[prefix + "account_id"],
        mapping[prefix + "amount"],
        mapping[prefix + "from_allowance"],
        mapping[prefix + "from_balance"],
        mapping[prefix + "allowance_day"],
        _HOLD_STATES[mapping[prefix + "state"]],
        mapping[prefix + "created_at"],
        mapping[prefix + "expires_at"],
        mapping[prefix + "resolved_at"],
        mapping[prefix + "reason"],
    )


def account_params(account: Account) -> dict[str, Any]:
    return {
        "b_id": account.id,
        "b_balance": account.balance,
        "b_daily_allowance": account.daily_allowance,
        "b_allowance_day": account.allowance_day,
        "b_allowance_used": account.allowance_used,
        "b_age_confirmed_at": account.age_confirmed_at,
    }


def hold_row(hold: Hold) -> dict[str, Any]:
    return {
        "job_id": hold.job_id,
        "account_id": hold.account_id,
        "amount": hold.amount,
        "from_allowance": hold.from_allowance,
        "from_balance": hold.from_balance,
        "allowance_day": hold.allowance_day,
        "state": int(hold.state),
        "created_at": hold.created_at,
        "expires_at": hold.expires_at,
        "resolved_at": hold.resolved_at,
        "reason": hold.reason,
    }


def hold_params(hold: Hold) -> dict[str, Any]:
    return {
        "b_job_id": hold.job_id,
        "b_state": int(hold.state),
        "b_resolved_at": hold.resolved_at,
        "b_reason": hold.reason,
    }
