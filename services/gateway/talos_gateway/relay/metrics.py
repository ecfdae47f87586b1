"""The relay's Prometheus metrics, on a registry of its own.

Each :class:`~talos_gateway.relay.core.Relay` owns one :class:`prometheus_client.CollectorRegistry`
(``relay.metrics_registry``), so two relays in one process (tests, benchmarks) never clash.
The gateway exposes it at ``/metrics`` next to its own, e.g.
``generate_latest(REGISTRY) + generate_latest(relay.metrics_registry)``.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

DISPATCH_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)


class RelayMetrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        nodes_connected: Callable[[], float],
        nodes_idle: Callable[[], float],
        nodes_quarantined: Callable[[], float],
        queue_length: Callable[[], float],
        jobs_running: Callable[[], float],
    ) -> None:
        self.registry = registry
        gauges = {
            "talos_relay_nodes_connected": (
                "Render nodes with an open stream to this relay.",
                nodes_connected,
            ),
            "talos_relay_nodes_idle": ("Connected nodes with a free slot and not quarantined.", nodes_idle),
            "talos_relay_nodes_quarantined": (
                "Connected nodes in quarantine (they get no work).",
                nodes_quarantined,
            ),
            "talos_relay_queue_length": ("Jobs waiting for a node.", queue_length),
            "talos_relay_jobs_running": ("Jobs on a node right now.", jobs_running),
        }
        for name, (doc, fn) in gauges.items():
            Gauge(name, doc, registry=registry).set_function(fn)
        self.dispatch_seconds = Histogram(
            "talos_relay_dispatch_seconds",
            "From a job entering the queue to its RenderJob going down a node's stream.",
            buckets=DISPATCH_BUCKETS,
            registry=registry,
        )
        self.validation_seconds = Histogram(
            "talos_relay_result_validation_seconds",
            "Decoding and checking one result image.",
            buckets=DISPATCH_BUCKETS,
            registry=registry,
        )
        self.requeues = Counter(
            "talos_relay_requeues",
            "Jobs put back in the queue after an attempt did not deliver, by reason.",
            ["reason"],
            registry=registry,
        )
        self.node_faults = Counter(
            "talos_relay_node_faults",
            "Faults counted against nodes (they lead to quarantine), by reason.",
            ["reason"],
            registry=registry,
        )
        self.quarantines = Counter(
            "talos_relay_quarantines", "Times a node was put into quarantine.", registry=registry
        )
        self.jobs = Counter(
            "talos_relay_jobs", "Jobs that ended, by outcome.", ["outcome"], registry=registry
        )
