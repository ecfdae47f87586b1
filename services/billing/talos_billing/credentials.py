"""Accounts and who may act for them: API keys and render node tokens.

Keys and tokens are shown once and stored only as hashes (:mod:`talos_billing.keys`);
nothing here logs one. These writes move no credits beyond an account's opening grant, so
they are plain transactions beside the batch engine, not operations in it.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, bindparam, insert, select, update

from talos_billing import keys
from talos_billing import statements as sql
from talos_billing.db import Database
from talos_billing.limits import (
    MAX_ACCOUNT_ID,
    MAX_NODE_ID,
    check_credits,
    check_id,
    check_name,
    check_node_ids,
)
from talos_billing.rules import AccountView, account_view, day_of, grant_posting
from talos_billing.schema import accounts, api_keys, node_tokens
from talos_common.errors import TalosError

log = logging.getLogger("talos_billing.credentials")

_AUTHENTICATE = (
    select(api_keys.c.key_hash, accounts)
    .join(accounts, accounts.c.id == api_keys.c.account_id)
    .where(api_keys.c.key_hash == bindparam("hash"), api_keys.c.revoked_at.is_(None))
)
_AUTHENTICATE_NODE = select(node_tokens).where(
    node_tokens.c.token_hash == bindparam("hash"), node_tokens.c.revoked_at.is_(None)
)


@dataclass(frozen=True)
class NodeIdentity:
    """Who a render node is."""

    node_id: str
    name: str


class Credentials:
    """Accounts, API keys and node tokens on one database."""

    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self.db = db
        self.clock = clock
        # One statement, one bound list, whatever the number of ids (see statements.IdList).
        self._active_nodes = select(node_tokens.c.node_id).where(
            node_tokens.c.node_id.in_(sql.ids("nodes", db.name)), node_tokens.c.revoked_at.is_(None)
        )

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- accounts and API keys --------------------------------------------------------------
    async def create_account(self, credits: int = 0, daily_allowance: int = 0) -> tuple[str, str]:
        """A new account with its first API key; returns (account_id, api_key)."""
        check_credits(credits, "credits", positive=False)
        check_credits(daily_allowance, "daily_allowance", positive=False)
        account_id = keys.new_account_id()
        api_key = keys.new_api_key()
        key_hash = keys.digest(api_key)
        now_ms = self._now_ms()

        def create(conn: Connection) -> None:
            conn.execute(
                insert(accounts).values(
                    id=account_id,
                    balance=credits,
                    daily_allowance=daily_allowance,
                    allowance_day=day_of(now_ms),
                    allowance_used=0,
                    created_at=now_ms,
                )
            )
            conn.execute(insert(api_keys).values(key_hash=key_hash, account_id=account_id, created_at=now_ms))
            if credits:
                posting = grant_posting(f"grant:{uuid.uuid4().hex}", account_id, credits)
                conn.execute(sql.INSERT_LEDGER, posting.entries(now_ms))

        await self.db.write(create)
        log.info(
            "account created",
            extra={"account_id": account_id, "credits": credits, "daily_allowance": daily_allowance},
        )
        return account_id, api_key

    async def create_api_key(self, account_id: str) -> str:
        check_id(account_id, "account_id", MAX_ACCOUNT_ID)
        api_key = keys.new_api_key()
        row = {"key_hash": keys.digest(api_key), "account_id": account_id, "created_at": self._now_ms()}

        def create(conn: Connection) -> None:
            if conn.execute(sql.READ_ACCOUNT, {"id": account_id}).first() is None:
                raise TalosError("not_found", "no such account")
            conn.execute(insert(api_keys).values(row))

        await self.db.write(create)
        log.info("api key created", extra={"account_id": account_id})
        return api_key

    async def revoke_api_keys(self, account_id: str) -> int:
        check_id(account_id, "account_id", MAX_ACCOUNT_ID)
        now_ms = self._now_ms()

        def revoke(conn: Connection) -> int:
            if conn.execute(sql.READ_ACCOUNT, {"id": account_id}).first() is None:
                raise TalosError("not_found", "no such account")
            result = conn.execute(
                update(api_keys)
                .where(api_keys.c.account_id == account_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now_ms)
            )
            return int(result.rowcount or 0)

        revoked = await self.db.write(revoke)
        log.info("api keys revoked", extra={"account_id": account_id, "revoked": revoked})
        return revoked

    async def authenticate(self, api_key: str) -> AccountView:
        if not keys.plausible(api_key, keys.API_KEY_PREFIX):
            raise TalosError("invalid_api_key", "unknown or revoked API key")
        presented = keys.digest(api_key)
        row = await self.db.read(functools.partial(sql.first, _AUTHENTICATE, {"hash": presented}))
        if row is None or not keys.matches(row.key_hash, presented):
            raise TalosError("invalid_api_key", "unknown or revoked API key")
        return self._view(row)

    async def get_account(self, account_id: str) -> AccountView:
        check_id(account_id, "account_id", MAX_ACCOUNT_ID)
        row = await self.db.read(functools.partial(sql.first, sql.READ_ACCOUNT, {"id": account_id}))
        if row is None:
            raise TalosError("not_found", "no such account")
        return self._view(row)

    def _view(self, row: Row[Any]) -> AccountView:
        return account_view(
            row.id,
            row.balance,
            row.daily_allowance,
            row.allowance_day,
            row.allowance_used,
            row.age_confirmed_at,
            day_of(self._now_ms()),
        )

    # -- node tokens ------------------------------------------------------------------------
    async def create_node_token(self, name: str = "") -> tuple[str, str]:
        check_name(name)
        node_id = keys.new_node_id()
        token = keys.new_node_token()
        statement = insert(node_tokens).values(
            node_id=node_id, name=name or node_id, token_hash=keys.digest(token), created_at=self._now_ms()
        )
        await self.db.write(lambda conn: conn.execute(statement))
        log.info("node token created", extra={"node_id": node_id})
        return node_id, token

    async def authenticate_node(self, token: str) -> NodeIdentity:
        if not keys.plausible(token, keys.NODE_TOKEN_PREFIX):
            raise TalosError("invalid_api_key", "unknown or revoked node token")
        presented = keys.digest(token)
        row = await self.db.read(functools.partial(sql.first, _AUTHENTICATE_NODE, {"hash": presented}))
        if row is None or not keys.matches(row.token_hash, presented):
            raise TalosError("invalid_api_key", "unknown or revoked node token")
        return NodeIdentity(row.node_id, row.name)

    async def revoke_node_token(self, node_id: str) -> bool:
        check_id(node_id, "node_id", MAX_NODE_ID)
        now_ms = self._now_ms()

        def revoke(conn: Connection) -> bool:
            exists = conn.execute(
                select(node_tokens.c.node_id).where(node_tokens.c.node_id == node_id)
            ).first()
            if exists is None:
                raise TalosError("not_found", "no such node")
            result = conn.execute(
                update(node_tokens)
                .where(node_tokens.c.node_id == node_id, node_tokens.c.revoked_at.is_(None))
                .values(revoked_at=now_ms)
            )
            return bool(result.rowcount)

        revoked = await self.db.write(revoke)
        log.info("node token revoked", extra={"node_id": node_id, "revoked": revoked})
        return revoked

    async def active_nodes(self, node_ids: Sequence[str]) -> list[str]:
        """Of ``node_ids``, those whose token exists and is not revoked, in the order given.

        One indexed query however many ids (the gateway asks every few seconds about
        every node connected to it, to close the streams of revoked ones).
        """
        wanted = list(dict.fromkeys(check_node_ids(node_ids)))
        if not wanted:
            return []
        found = await self.db.read(functools.partial(sql.scalars, self._active_nodes, {"nodes": wanted}))
        active = set(found)
        return [node_id for node_id in wanted if node_id in active]
