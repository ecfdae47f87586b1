"""The gateway's pipeline in this test process: real billing and moderation servers on port 0.

Billing (SQLite in a temporary folder) and moderation (the test rule file, the real
classifier, or a test's own classifier verdicts) run as real gRPC servers in the test's event
loop; the gateway is built by its own ``create_server``; render nodes are
:class:`tests.relay.peer.PeerNode` test peers dialling the relay. A failure here points at
the gateway's own modules, not at process start-up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from talos.moderation.v1 import moderation_pb2, moderation_pb2_grpc
from talos_billing.config import Settings as BillingSettings
from talos_billing.service import Billing
from talos_billing.service import start as start_billing
from talos_common import server
from talos_gateway.app import Gateway, create_server
from talos_gateway.config import Settings as GatewaySettings
from talos_moderation.classifier import NsfwClassifier
from talos_moderation.config import MiB
from talos_moderation.config import Settings as ModerationSettings
from talos_moderation.service import SERVICE_NAME, ModerationServer, ModerationServicer, build_servicer
from tests.relay.peer import PeerNode

# Decides, per ClassifyImage call, whether the image is flagged (None: the real classifier says).
Verdict = Callable[[bytes], bool | None]


class VerdictServicer(ModerationServicer):
    """The real moderation servicer, except that a test may decide some image verdicts."""

    verdict: Verdict | None = None
    classified: list[int]  # sizes of the images classified, in order

    async def ClassifyImage(
        self, request: moderation_pb2.ClassifyImageRequest, context: grpc.aio.ServicerContext
    ) -> moderation_pb2.ImageVerdict:
        self.classified.append(len(request.image))
        decided = self.verdict(request.image) if self.verdict is not None else None
        if decided is None:
            return await super().ClassifyImage(request, context)
        category = "adult" if decided else "none"
        return moderation_pb2.ImageVerdict(blocked=decided, category=category, score=float(decided))


@dataclasses.dataclass
class Stack:
    billing: Billing
    moderation: ModerationServer
    gateway: Gateway
    nodes: list[PeerNode] = dataclasses.field(default_factory=list)

    @property
    def http_url(self) -> str:
        return self.gateway.addresses["http"]

    @property
    def grpc_addr(self) -> str:
        return self.gateway.addresses["grpc"]

    @property
    def relay_addr(self) -> str:
        return self.gateway.addresses["relay"]

    @property
    def servicer(self) -> VerdictServicer:
        servicer = self.moderation.servicer
        assert isinstance(servicer, VerdictServicer)
        return servicer

    async def account(self, credits: int = 1000, allowance: int = 0) -> tuple[str, str]:
        """A new account's (id, API key)."""
        return await self.billing.store.create_account(credits, allowance)

    async def spendable(self, account_id: str) -> int:
        view = await self.billing.store.get_account(account_id)
        return int(view.balance) + int(view.allowance_remaining)

    async def node(self, **kwargs: Any) -> PeerNode:
        _, token = await self.billing.store.create_node_token(kwargs.pop("name", "peer"))
        node = PeerNode(self.relay_addr, token, **kwargs)
        await node.start()
        self.nodes.append(node)
        return node

    async def stop(self) -> None:
        for node in self.nodes:
            await node.stop()
        await self.gateway.stop()
        await self.moderation.stop()
        await self.billing.stop()


async def _moderation(config: ModerationSettings, classifier: NsfwClassifier) -> ModerationServer:
    """Moderation as its create_server builds it, with the servicer a test can steer."""
    real, executor = build_servicer(config, classifier)
    servicer = VerdictServicer(real.policy, real.images, real.cooldowns, executor)
    servicer.classified = []
    grpc_server, health = server.build_server(
        register=[lambda s: moderation_pb2_grpc.add_ModerationServiceServicer_to_server(servicer, s)],
        service_names=[SERVICE_NAME],
        max_message_bytes=config.max_image_bytes + MiB,
    )
    port = server.bind(grpc_server, config.host, config.port)
    return ModerationServer(grpc_server, port, health, servicer, executor, config)


async def start_stack(
    tmp_path: Path,
    rules: Path,
    classifier: NsfwClassifier,
    *,
    nsfw_threshold: float = 0.35,
    **gateway: Any,
) -> Stack:
    billing = await start_billing(BillingSettings(port=0, data_dir=tmp_path, sqlite_synchronous="NORMAL"))
    moderation = await _moderation(
        ModerationSettings(port=0, rules_path=rules, nsfw_threshold=nsfw_threshold), classifier
    )
    await moderation.start()
    defaults: dict[str, Any] = {
        "http_port": 0,
        "grpc_port": 0,
        "relay_port": 0,
        "billing_addr": billing.address,
        "moderation_addr": moderation.addresses["grpc"],
        "relay_preview_every": 1,
    }
    settings = GatewaySettings(**{**defaults, **gateway})
    server = await create_server(settings)
    await server.start()
    return Stack(billing, moderation, server)
