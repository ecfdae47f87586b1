"""The audit: the invariants of the books, checked on one snapshot.

* every ledger entry, and every operation's entries, sum to zero;
* each account's balance is what the ledger says it is;
* the holds account carries exactly the open holds, revenue exactly the captured ones,
  and the allowance account what the held and captured holds took of it;
* one capture operation per captured hold;
* each account's allowance used today is what its holds of that day still take.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, func, select

from talos_billing.rules import SYS_ALLOWANCE, SYS_HOLDS, SYS_REVENUE, EntryKind, HoldState
from talos_billing.schema import accounts, holds, ledger


@dataclass
class AuditReport:
    """Invariants of the ledger; ``ok`` when every one holds."""

    problems: list[str] = field(default_factory=list)
    ledger_sum: int = 0
    entries: int = 0
    held: int = 0
    revenue: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def check_books(conn: Connection) -> AuditReport:
    """The audit's checks, on one snapshot of the books."""
    report = AuditReport()
    totals = (conn.execute(select(func.coalesce(func.sum(ledger.c.amount), 0), func.count()))).one()
    report.ledger_sum, report.entries = int(totals[0]), int(totals[1])
    if report.ledger_sum != 0:
        report.problems.append(f"ledger entries sum to {report.ledger_sum}, not 0")
    unbalanced = conn.execute(
        select(ledger.c.txn, func.sum(ledger.c.amount))
        .group_by(ledger.c.txn)
        .having(func.sum(ledger.c.amount) != 0)
        .limit(20)
    )
    for txn, total in unbalanced:
        report.problems.append(f"operation {txn} sums to {total}")
    by_account = (
        select(ledger.c.account, func.sum(ledger.c.amount).label("total"))
        .group_by(ledger.c.account)
        .subquery()
    )
    mismatched = conn.execute(
        select(accounts.c.id, accounts.c.balance, func.coalesce(by_account.c.total, 0))
        .select_from(accounts.outerjoin(by_account, by_account.c.account == accounts.c.id))
        .where(accounts.c.balance != func.coalesce(by_account.c.total, 0))
        .limit(20)
    )
    for account_id, balance, total in mismatched:
        report.problems.append(f"account {account_id} balance {balance} but ledger says {total}")

    def ledger_total(account: str) -> int:
        value = (
            conn.execute(
                select(func.coalesce(func.sum(ledger.c.amount), 0)).where(ledger.c.account == account)
            )
        ).scalar()
        return int(value or 0)

    def hold_total(column: Any, *states: HoldState) -> int:
        value = (
            conn.execute(
                select(func.coalesce(func.sum(column), 0)).where(
                    holds.c.state.in_([state.value for state in states])
                )
            )
        ).scalar()
        return int(value or 0)

    report.held = hold_total(holds.c.amount, HoldState.HELD)
    if (held_ledger := ledger_total(SYS_HOLDS)) != report.held:
        report.problems.append(f"holds in ledger {held_ledger} but open holds total {report.held}")
    report.revenue = hold_total(holds.c.amount, HoldState.CAPTURED)
    if (revenue_ledger := ledger_total(SYS_REVENUE)) != report.revenue:
        report.problems.append(
            f"revenue in ledger {revenue_ledger} but captured holds total {report.revenue}"
        )
    allowance_spent = hold_total(holds.c.from_allowance, HoldState.HELD, HoldState.CAPTURED)
    if (allowance_ledger := ledger_total(SYS_ALLOWANCE)) != -allowance_spent:
        report.problems.append(
            f"allowance in ledger {allowance_ledger} but holds took {allowance_spent} of it"
        )
    captured = conn.execute(
        select(func.count()).where(holds.c.state == HoldState.CAPTURED.value).select_from(holds)
    )
    captures = conn.execute(
        select(func.count(func.distinct(ledger.c.txn))).where(ledger.c.kind == EntryKind.CAPTURE.value)
    )
    if (n_held := int(captured.scalar() or 0)) != (n_txn := int(captures.scalar() or 0)):
        report.problems.append(f"{n_held} captured holds but {n_txn} capture operations")
    # Allowance used on an account's day = what its holds of that day still take.
    by_day = (
        select(
            holds.c.account_id,
            holds.c.allowance_day,
            func.sum(holds.c.from_allowance).label("spent"),
        )
        .where(holds.c.state.in_((HoldState.HELD.value, HoldState.CAPTURED.value)))
        .group_by(holds.c.account_id, holds.c.allowance_day)
        .subquery()
    )
    wrong_allowance = conn.execute(
        select(accounts.c.id, accounts.c.allowance_used, func.coalesce(by_day.c.spent, 0))
        .select_from(
            accounts.outerjoin(
                by_day,
                and_(
                    by_day.c.account_id == accounts.c.id,
                    by_day.c.allowance_day == accounts.c.allowance_day,
                ),
            )
        )
        .where(accounts.c.allowance_used != func.coalesce(by_day.c.spent, 0))
        .limit(20)
    )
    for account_id, used, spent in wrong_allowance:
        report.problems.append(f"account {account_id} allowance used {used} but its holds take {spent}")
    return report
