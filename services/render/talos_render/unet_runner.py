"""One batched UNet pass, eager or replayed from a CUDA graph.

On CUDA the UNet (compiled or not) is captured once per size and *row bucket* at warm-up: the
rows of a batch (two per CFG job, one per guidance-1 job) are padded up to the next even
count, at least 2, so ``max_batch`` buckets cover every batch a size can see. Padding rows
keep whatever the buffer held (finite values from an earlier pass) and their outputs are
ignored: rows never mix in a UNet (group norms, attention and convolutions are per sample).
All graphs share one memory pool; they never run at the same time and their outputs are used
before the next replay.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

Size = tuple[int, int]  # (width, height)


def attention_backends(backends: list[Any]) -> Any:
    """``sdpa_kernel`` allowing ``backends``, tried in this order where torch can order them."""
    from torch.nn.attention import sdpa_kernel

    if "set_priority" in inspect.signature(sdpa_kernel).parameters:
        return sdpa_kernel(backends, set_priority=True)
    return sdpa_kernel(backends)


def rows_bucket(rows: int, max_rows: int) -> int:
    """The graph a batch of ``rows`` rows runs in: the next even count, at least 2."""
    bucket = max(2, rows + (rows % 2))
    if bucket > max_rows:
        raise ValueError(f"{rows} rows exceed the largest bucket ({max_rows})")
    return bucket


def all_buckets(max_batch: int) -> list[int]:
    return list(range(2, 2 * max(1, max_batch) + 1, 2))


class EagerUNet:
    """Calls the UNet (or its compiled forward) as it is, under the chosen attention backends."""

    def __init__(self, unet: Any, forward: Callable[..., Any] | None, attention: list[Any] | None) -> None:
        self.unet = unet
        self.forward = forward or unet
        self.attention = attention
        # Compiled: one graph for every batch size (marks live on tensor objects, so each call
        # marks its own inputs; a batch of one row is still specialised by the compiler).
        self.dynamic_batch = False

    @contextlib.contextmanager
    def attention_context(self) -> Iterator[None]:
        if not self.attention:
            yield
            return
        with attention_backends(self.attention):
            yield

    def call(self, sample: Any, timesteps: Any, embeds: Any, pooled: Any, time_ids: Any) -> torch.Tensor:
        if self.dynamic_batch:
            for tensor in (sample, timesteps, embeds, pooled, time_ids):
                torch._dynamo.maybe_mark_dynamic(tensor, 0)
        with self.attention_context():
            out = self.forward(
                sample,
                timesteps,
                encoder_hidden_states=embeds,
                added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids},
                return_dict=False,
            )[0]
        return out

    __call__ = call

    def describe(self) -> str:
        return "eager"


@dataclass(eq=False)
class _Buffers:
    sample: torch.Tensor
    timesteps: torch.Tensor
    embeds: torch.Tensor
    pooled: torch.Tensor
    time_ids: torch.Tensor

    def view(self, rows: int) -> tuple[torch.Tensor, ...]:
        return (
            self.sample[:rows],
            self.timesteps[:rows],
            self.embeds[:rows],
            self.pooled[:rows],
            self.time_ids[:rows],
        )


class GraphedUNet:
    """The UNet replayed from CUDA graphs, one per (size, row bucket), captured at warm-up."""

    def __init__(self, eager: EagerUNet, *, max_batch: int, latent_scale: int, dtype: torch.dtype) -> None:
        self.eager = eager
        self.max_rows = 2 * max(1, max_batch)
        self.latent_scale = latent_scale
        self.dtype = dtype
        self.pool = torch.cuda.graph_pool_handle()
        self._buffers: dict[Size, _Buffers] = {}
        self._graphs: dict[tuple[Size, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.misses = 0  # passes no graph covered (warm-up covers every size and bucket)

    def describe(self) -> str:
        return f"cuda graphs ({len(self._graphs)} captured)"

    def _buffers_for(self, size: Size, like: dict[str, torch.Tensor]) -> _Buffers:
        buffers = self._buffers.get(size)
        if buffers is None:
            unet = self.eager.unet
            width, height = size
            device = like["embeds"].device
            sample = torch.randn(
                self.max_rows,
                int(unet.config.in_channels),
                height // self.latent_scale,
                width // self.latent_scale,
                device=device,
                dtype=self.dtype,
            )
            buffers = _Buffers(
                sample=sample,
                timesteps=torch.full((self.max_rows,), 500.0, device=device, dtype=torch.float32),
                embeds=like["embeds"][:1].expand(self.max_rows, -1, -1).clone(),
                pooled=like["pooled"][:1].expand(self.max_rows, -1).clone(),
                time_ids=like["time_ids"][:1].expand(self.max_rows, -1).clone(),
            )
            self._buffers[size] = buffers
        return buffers

    def captured(self, size: Size, bucket: int) -> bool:
        return (size, bucket) in self._graphs

    def capture(self, size: Size, bucket: int, like: dict[str, torch.Tensor]) -> None:
        """Runs the bucket eagerly (compiling it, autotuning cuDNN) on a side stream, then
        captures it. Warm-up only: this synchronises the device."""
        buffers = self._buffers_for(size, like)
        inputs = buffers.view(bucket)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self.eager(*inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            out = self.eager(*inputs)
        self._graphs[(size, bucket)] = (graph, out)

    def __call__(self, sample: Any, timesteps: Any, embeds: Any, pooled: Any, time_ids: Any) -> torch.Tensor:
        rows = int(sample.shape[0])
        size = (int(sample.shape[-1]) * self.latent_scale, int(sample.shape[-2]) * self.latent_scale)
        bucket = rows_bucket(rows, self.max_rows)
        entry = self._graphs.get((size, bucket))
        if entry is None:
            self.misses += 1
            log.warning("no CUDA graph for this batch; running eagerly", extra={"size": size, "rows": rows})
            return self.eager(sample, timesteps, embeds, pooled, time_ids)
        graph, out = entry
        buffers = self._buffers[size]
        buffers.sample[:rows].copy_(sample)
        buffers.timesteps[:rows].copy_(timesteps)
        buffers.embeds[:rows].copy_(embeds)
        buffers.pooled[:rows].copy_(pooled)
        buffers.time_ids[:rows].copy_(time_ids)
        graph.replay()
        return out[:rows]
