"""The relay: render nodes dial in, jobs go down their streams, results come back up.

The rest of the gateway uses only what :mod:`talos_gateway.relay.contract` defines, plus:

- ``Relay(settings, authenticate_node, active_nodes=None)``: the
  :class:`~talos_gateway.relay.contract.RelayPort` (``admit``, ``run``), with ``status()``,
  ``drain(grace)``, ``close()``, ``metrics_registry`` and ``peer_address``;
- ``start_relay_server(relay, settings) -> (grpc.aio.Server, port)``: the node-facing server
  (with ``settings.redis_url``, after joining the relay network: Redis, the peer server);
- :func:`~talos_gateway.relay.timing.attempt_time_limit` and
  :func:`~talos_gateway.relay.timing.job_deadline`: the one time-limit formula.
"""

from talos_gateway.relay.core import Relay
from talos_gateway.relay.servicer import RelayServicer, start_relay_server

__all__ = ["Relay", "RelayServicer", "start_relay_server"]
