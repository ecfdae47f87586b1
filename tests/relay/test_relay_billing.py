"""The relay with real billing: node tokens issued, checked and revoked by the billing service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from talos.billing.v1 import billing_pb2, billing_pb2_grpc
from talos_common.errors import from_rpc_error
from talos_dev.procs import ServiceProcess, python_module
from talos_gateway.relay.contract import Finished

from .conftest import MakeRelay, TokenTable, collect, spec
from .peer import PeerNode


@pytest.fixture(scope="module")
def billing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("billing")
    env = {"TALOS_BILLING_HOST": "127.0.0.1", "TALOS_BILLING_PORT": "0", "TALOS_BILLING_DATA_DIR": str(data)}
    proc = ServiceProcess("billing", python_module("talos_billing"), env, data / "billing.log")
    proc.start(timeout=120)
    try:
        yield str(proc.ready["grpc"])
    finally:
        proc.stop()


class BillingTokens(TokenTable):
    """Node tokens from the billing service; the relay checks them with AuthenticateNode."""

    def __init__(self, stub: billing_pb2_grpc.BillingServiceStub) -> None:
        super().__init__()
        self.stub = stub

    async def create(self, name: str) -> tuple[str, str]:
        reply = await self.stub.CreateNodeToken(billing_pb2.CreateNodeTokenRequest(name=name), timeout=10)
        return reply.node_id, reply.token

    async def revoke(self, node_id: str) -> bool:
        reply = await self.stub.RevokeNodeToken(
            billing_pb2.RevokeNodeTokenRequest(node_id=node_id), timeout=10
        )
        return bool(reply.revoked)

    async def authenticate(self, token: str) -> str:
        self.calls += 1
        try:
            reply = await self.stub.AuthenticateNode(
                billing_pb2.AuthenticateNodeRequest(token=token), timeout=5
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        return str(reply.node_id)


@pytest.fixture
async def billing_tokens(billing: str) -> AsyncIterator[BillingTokens]:
    async with grpc.aio.insecure_channel(billing) as channel:
        yield BillingTokens(billing_pb2_grpc.BillingServiceStub(channel))


async def test_billing_tokens_let_nodes_in_and_keep_others_out(
    make_relay: MakeRelay, billing_tokens: BillingTokens
) -> None:
    h = await make_relay(billing_tokens)
    node_id, token = await billing_tokens.create("relay-test-node")
    good = PeerNode(h.address, token)
    forged = PeerNode(h.address, token[:-2] + ("xx" if not token.endswith("xx") else "yy"))
    h.nodes += [good, forged]
    await good.start()
    await forged.start()
    assert good.links[0].node_id == node_id
    error = forged.links[0].error
    assert error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED
    events = await collect(h.relay.run("job-b", "acct", spec()))
    assert isinstance(events[-1], Finished) and events[-1].node_id == node_id
    assert forged.received == []

    # Once revoked, the token opens no new stream.
    assert await billing_tokens.revoke(node_id)
    again = PeerNode(h.address, token)
    h.nodes.append(again)
    await again.start()
    error = again.links[0].error
    assert error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_billing_down_means_unavailable_not_unauthenticated(make_relay: MakeRelay) -> None:
    async def unreachable(token: str) -> str:
        async with grpc.aio.insecure_channel("127.0.0.1:1") as channel:
            stub = billing_pb2_grpc.BillingServiceStub(channel)
            try:
                await stub.AuthenticateNode(billing_pb2.AuthenticateNodeRequest(token=token), timeout=1)
            except grpc.aio.AioRpcError as exc:
                raise from_rpc_error(exc) from None
        raise AssertionError("port 1 answered")

    table = TokenTable()
    table.authenticate = unreachable  # type: ignore[method-assign]
    h = await make_relay(table)
    node = PeerNode(h.address, "tok_anything")
    h.nodes.append(node)
    await node.start()
    error = node.links[0].error
    assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_revoked_token_ends_the_open_stream_within_seconds(
    make_relay: MakeRelay, billing_tokens: BillingTokens
) -> None:
    async def active_nodes(node_ids: list[str]) -> list[str]:
        reply = await billing_tokens.stub.ActiveNodes(
            billing_pb2.ActiveNodesRequest(node_ids=node_ids), timeout=5
        )
        return list(reply.active_node_ids)

    h = await make_relay(billing_tokens, active_nodes=active_nodes, node_revocation_check_seconds=0.5)
    doomed_id, doomed_token = await billing_tokens.create("doomed-node")
    _, kept_token = await billing_tokens.create("kept-node")
    doomed, kept = PeerNode(h.address, doomed_token), PeerNode(h.address, kept_token)
    h.nodes += [doomed, kept]
    await doomed.start()
    await kept.start()
    await h.wait_status("nodes_connected", 2)
    assert await billing_tokens.revoke(doomed_id)
    await asyncio.wait_for(doomed.links[0].ended.wait(), timeout=10)
    error = doomed.links[0].error
    assert error is not None and error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "revoked" in (error.details() or "")
    assert not kept.links[0].ended.is_set()
    await h.wait_status("nodes_connected", 1)
