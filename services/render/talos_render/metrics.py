"""Prometheus metrics of one render node, on their own registry and HTTP port."""

from __future__ import annotations

from typing import Any

import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class Metrics:
    def __init__(self, device: torch.device | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs = Counter("talos_render_jobs", "Jobs by outcome", ["outcome"], registry=r)
        self.steps = Counter("talos_render_steps", "Denoising steps run", registry=r)
        self.steps_per_second = Gauge(
            "talos_render_steps_per_second", "Denoising steps per second of the last finished job", registry=r
        )
        self.job_seconds = Histogram(
            "talos_render_job_seconds",
            "Seconds from accepting a job to its terminal message",
            buckets=(0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60),
            registry=r,
        )
        self.active_jobs = Gauge("talos_render_active_jobs", "Jobs accepted and not yet finished", registry=r)
        self.queue = Gauge(
            "talos_render_queue_jobs", "Jobs accepted that have not run their first step yet", registry=r
        )
        self.relay_streams = Gauge(
            "talos_render_relay_streams", "Relay streams open and welcomed", registry=r
        )
        self.ready = Gauge("talos_render_ready", "1 once the model is loaded and warmed up", registry=r)
        self.seconds_per_step = Gauge(
            "talos_render_warmup_seconds_per_step",
            "Seconds per step at 1024x1024 measured at warm-up",
            registry=r,
        )
        self.gpu_memory = Gauge(
            "talos_render_gpu_memory_bytes", "CUDA memory of this process", ["kind"], registry=r
        )
        if device is not None and device.type == "cuda":
            self.gpu_memory.labels("allocated").set_function(lambda: torch.cuda.memory_allocated(device))
            self.gpu_memory.labels("reserved").set_function(lambda: torch.cuda.memory_reserved(device))
            self.gpu_memory.labels("peak").set_function(lambda: torch.cuda.max_memory_allocated(device))

    def serve(self, host: str, port: int) -> tuple[Any, int]:
        """Starts the /metrics HTTP server in a daemon thread; returns (server, real port)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server, int(server.server_port)
