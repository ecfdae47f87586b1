"""The relay: render nodes dial in, jobs go down their streams, results come back up.

The rest of the gateway uses only what :mod:`talos_gateway.relay.contract` defines, plus:

- ``Relay(settings, authenticate_node)``: the :class:`~talos_gateway.relay.contract.RelayPort`
  (``admit``, ``run``), with ``status()``, ``drain(grace)``, ``close()`` and ``metrics_registry``;
- ``start_relay_server(relay, settings) -> (grpc.aio.Server, port)``: the node-facing server.
"""

from talos_gateway.relay.core import Relay
from talos_gateway.relay.servicer import RelayServicer, start_relay_server

__all__ = ["Relay", "RelayServicer", "start_relay_server"]
