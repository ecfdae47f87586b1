"""ActiveNodes: which of the asked nodes still hold a live token, in one query, over gRPC."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event

from talos.billing.v1 import billing_pb2
from talos_billing.db import Database, PostgresDatabase, SqliteDatabase
from talos_billing.limits import MAX_ACTIVE_NODES, MAX_NODE_ID

from .conftest import TIMEOUT, Client, call_error


def active(*node_ids: str) -> billing_pb2.ActiveNodesRequest:
    return billing_pb2.ActiveNodesRequest(node_ids=list(node_ids))


@contextlib.contextmanager
def statements_run(db: Database) -> Iterator[list[str]]:
    """Every SQL statement the store sends while the block runs."""
    engines: list[Engine] = []
    if isinstance(db, SqliteDatabase):
        engines = [db.writer, db.reader]
    elif isinstance(db, PostgresDatabase):
        engines = [db.engine.sync_engine]
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


async def test_revoked_and_unknown_nodes_are_not_active(client: Client) -> None:
    stub = client.stub
    issued = [
        await stub.CreateNodeToken(billing_pb2.CreateNodeTokenRequest(name=f"gpu-{n}"), timeout=TIMEOUT)
        for n in range(3)
    ]
    ids = [node.node_id for node in issued]
    answer = await stub.ActiveNodes(active(ids[2], "node_unknown", ids[0], ids[1], ids[0]), timeout=TIMEOUT)
    assert list(answer.active_node_ids) == [ids[2], ids[0], ids[1]]  # the order asked, each once

    await stub.RevokeNodeToken(billing_pb2.RevokeNodeTokenRequest(node_id=ids[1]), timeout=TIMEOUT)
    answer = await stub.ActiveNodes(active(*ids), timeout=TIMEOUT)
    assert list(answer.active_node_ids) == [ids[0], ids[2]]
    assert list((await stub.ActiveNodes(active(), timeout=TIMEOUT)).active_node_ids) == []


async def test_ten_thousand_ids_take_one_query(client: Client) -> None:
    stub = client.stub
    live = [
        (await stub.CreateNodeToken(billing_pb2.CreateNodeTokenRequest(), timeout=TIMEOUT)).node_id
        for _ in range(3)
    ]
    asked = [f"node_{n:011x}" for n in range(MAX_ACTIVE_NODES - len(live))]
    asked[10:10] = live[:1]
    asked.append(live[1])
    asked.insert(5000, live[2])
    assert len(asked) == MAX_ACTIVE_NODES
    with statements_run(client.billing.store.db) as seen:
        answer = await stub.ActiveNodes(active(*asked), timeout=TIMEOUT)
    assert list(answer.active_node_ids) == [live[0], live[2], live[1]]
    queries = [s for s in seen if s != "BEGIN"]  # SQLite's readers open a read transaction
    assert len(queries) == 1 and "node_tokens" in queries[0], seen


async def test_sizes_are_checked(client: Client) -> None:
    stub = client.stub
    issued = await stub.CreateNodeToken(billing_pb2.CreateNodeTokenRequest(), timeout=TIMEOUT)
    too_many = [issued.node_id] * (MAX_ACTIVE_NODES + 1)
    for node_ids in (too_many, [issued.node_id, ""], [issued.node_id, "n" * (MAX_NODE_ID + 1)]):
        error = await call_error(stub.ActiveNodes(active(*node_ids), timeout=TIMEOUT))
        assert error.code == "invalid_request"


def test_the_contract_states_billings_limit() -> None:
    proto = Path(billing_pb2.__file__).with_name("billing.proto").read_text()
    request = proto[proto.index("message ActiveNodesRequest") :]
    assert f"The node ids to check: at most {MAX_ACTIVE_NODES:,}." in request[: request.index("}")]
