"""The CUDA path (bf16, fused QKV, channels-last, batching, compile, CUDA graphs, the attention
choice, a render thread that never synchronises). Skipped without a GPU."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from talos_render import loading
from talos_render.acceleration import Acceleration, c_compiler
from talos_render.config import Settings
from talos_render.engine import Cancelled, Engine, RenderRequest
from talos_render.unet_runner import GraphedUNet

from .pictures import psnr

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def request(**changes: object) -> RenderRequest:
    fields: dict[str, object] = {
        "prompt": "a lighthouse on a cliff at dusk",
        "negative_prompt": "",
        "width": 1024,
        "height": 1024,
        "steps": 4,
        "guidance": 5.0,
        "seed": 99,
        "preview_every": 2,
    }
    fields.update(changes)
    return RenderRequest(**fields)  # type: ignore[arg-type]


def gpu_model(data_dir: Path) -> loading.LoadedModel:
    # One model per engine: the fast path rewires the pipeline's attention in place.
    return loading.load(Settings(model="builtin", data_dir=data_dir, device="cuda"))


@pytest.fixture(scope="module")
def gpu_engine(render_data_dir: Path) -> Iterator[Engine]:
    engine = Engine(
        gpu_model(render_data_dir), max_batch=4, batch_window_ms=60_000, acceleration=Acceleration.eager()
    )
    yield engine
    engine.close()


def render_alone(engine: Engine, req: RenderRequest, on_progress: Any = None) -> np.ndarray:
    # The window ends early only when the batch is full; a job alone must not wait for it.
    window, engine.worker.window = engine.worker.window, 0.0
    try:
        pixels, _ = engine.render_pixels(req, on_progress or (lambda *_: None), threading.Event())
    finally:
        engine.worker.window = window
    return pixels


def render_together(
    engine: Engine, requests: list[RenderRequest], cancel_index: int | None = None
) -> tuple[list[Any], list[list[int]]]:
    steps: list[list[int]] = [[] for _ in requests]
    cancels = [threading.Event() for _ in requests]
    futures = []
    for index, req in enumerate(requests):

        def on_progress(step: int, _total: int, _preview: bytes, index: int = index) -> None:
            steps[index].append(step)
            if index == cancel_index and step == 2:
                cancels[index].set()

        futures.append(engine.submit(req, on_progress, cancels[index]))
    results: list[Any] = []
    for future in futures:
        try:
            results.append(future.result(timeout=300).pixels)
        except Cancelled:
            results.append(None)
    return results, steps


class RenderThreadSyncs:
    """Records the synchronising CUDA calls torch reports (sync debug mode), by thread."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __enter__(self) -> RenderThreadSyncs:
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("always")
        warnings.showwarning = self._record
        torch.cuda.set_sync_debug_mode("warn")
        return self

    def _record(self, message: Any, *_args: Any, **_kwargs: Any) -> None:
        self.seen.append((threading.current_thread().name, str(message)))

    def __exit__(self, *exc: Any) -> None:
        torch.cuda.set_sync_debug_mode("default")
        self._warnings.__exit__(*exc)

    @property
    def on_render_thread(self) -> list[str]:
        return [message for thread, message in self.seen if thread == "render"]


def test_cuda_defaults_to_bf16_everywhere_with_the_fast_path(gpu_engine: Engine) -> None:
    pipe = gpu_engine.model.pipe
    assert gpu_engine.model.dtype == torch.bfloat16
    for part in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        assert {p.dtype for p in part.parameters()} == {torch.bfloat16}
        assert {p.device.type for p in part.parameters()} == {"cuda"}
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert any("Fused" in type(p).__name__ for p in pipe.unet.attn_processors.values())


def test_cuda_render_sizes_previews_and_repeatability(gpu_engine: Engine) -> None:
    steps: list[tuple[int, bool]] = []
    first = render_alone(gpu_engine, request(), lambda s, _t, p: steps.append((s, bool(p))))
    second = render_alone(gpu_engine, request())
    assert first.shape == (1024, 1024, 3)
    assert steps == [(1, False), (2, True), (3, False), (4, False)]
    # cuDNN autotuning may pick other kernels between runs; the picture stays the same.
    assert np.abs(first.astype(int) - second.astype(int)).mean() < 1.0
    for width, height in ((832, 1216), (1216, 832)):
        pixels = render_alone(gpu_engine, request(width=width, height=height, steps=2))
        assert pixels.shape == (height, width, 3)


def test_cuda_batch_of_four_keeps_each_seed_and_its_progress(gpu_engine: Engine) -> None:
    requests = [request(seed=300 + i, steps=6, prompt=f"a harbour, take {i}") for i in range(4)]
    references = [render_alone(gpu_engine, r) for r in requests]
    with RenderThreadSyncs() as syncs:
        results, steps = render_together(gpu_engine, requests)
    assert syncs.on_render_thread == []
    figures = []
    for pixels, reference, seen in zip(results, references, steps, strict=True):
        assert seen == [1, 2, 3, 4, 5, 6]
        levels = int(np.abs(pixels.astype(np.int16) - reference.astype(np.int16)).max())
        figures.append((levels, round(psnr(pixels, reference), 1)))
    print(f"GPU drift, batch of 4 against alone (max levels, PSNR dB): {figures}")
    # Other seeds are ~10 dB apart; a batch must not change what a seed draws.
    assert min(p for _, p in figures) >= 30.0


def test_cuda_cancel_one_of_four(gpu_engine: Engine) -> None:
    requests = [request(seed=400 + i, steps=10, preview_every=0) for i in range(4)]
    results, steps = render_together(gpu_engine, requests, cancel_index=1)
    assert results[1] is None and steps[1] == [1, 2]
    for index in (0, 2, 3):
        assert results[index] is not None and steps[index] == list(range(1, 11))


@pytest.mark.slow
def test_cuda_compiled_graphs_cover_every_size_and_bucket(render_data_dir: Path, gpu_engine: Engine) -> None:
    sizes = [(512, 512), (384, 640)]
    engine = Engine(
        gpu_model(render_data_dir), max_batch=2, batch_window_ms=60_000, acceleration=Acceleration()
    )
    try:
        assert engine.warmup(sizes, steps=2) > 0
        report = engine.report
        print(f"compiled engine: {report}")
        assert report["cuda_graphs"] is True
        assert report["compiled"] is (c_compiler() is not None)
        graphed = engine.worker.unet
        assert isinstance(graphed, GraphedUNet)
        assert all(graphed.captured(size, bucket) for size in sizes for bucket in (2, 4))
        requests = [
            request(width=384, height=640, seed=9, steps=5),
            request(width=384, height=640, seed=10, guidance=1.0, steps=3),
        ]
        with RenderThreadSyncs() as syncs:
            results, steps = render_together(engine, requests)
        assert syncs.on_render_thread == []
        assert graphed.misses == 0
        assert steps == [[1, 2, 3, 4, 5], [1, 2, 3]]
        assert results[0].shape == (640, 384, 3) and results[1].shape == (640, 384, 3)
        eager = render_alone(gpu_engine, requests[0])
        print(f"compiled+graphs vs eager, same seed: PSNR {psnr(results[0], eager):.1f} dB")
        assert psnr(results[0], eager) >= 25.0
    finally:
        engine.close()
