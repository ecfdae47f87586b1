"""The CUDA fast path (bf16 everywhere, fused QKV, channels-last, compile). Skipped without a GPU."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from talos_render import loading
from talos_render.config import Settings
from talos_render.engine import Cancelled, Engine, RenderRequest

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


@pytest.fixture(scope="module")
def gpu_engine(render_data_dir: Path) -> Engine:
    model = loading.load(Settings(model="builtin", data_dir=render_data_dir, device="cuda"))
    return Engine(model)


def test_cuda_defaults_to_bf16_everywhere_with_the_fast_path(gpu_engine: Engine) -> None:
    pipe = gpu_engine.model.pipe
    assert gpu_engine.model.dtype == torch.bfloat16
    for part in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        assert {p.dtype for p in part.parameters()} == {torch.bfloat16}
        assert {p.device.type for p in part.parameters()} == {"cuda"}
    conv = pipe.unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert any("Fused" in type(p).__name__ for p in pipe.unet.attn_processors.values())


def test_cuda_render_sizes_previews_and_repeatability(gpu_engine: Engine) -> None:
    steps: list[tuple[int, bool]] = []
    first, _ = gpu_engine.render_pixels(
        request(), lambda s, _t, p: steps.append((s, bool(p))), threading.Event()
    )
    second, _ = gpu_engine.render_pixels(request(), lambda *_: None, threading.Event())
    assert first.shape == (1024, 1024, 3)
    assert steps == [(1, False), (2, True), (3, False), (4, False)]
    # cuDNN autotuning may pick other kernels between runs; the picture stays the same.
    assert np.abs(first.astype(int) - second.astype(int)).mean() < 1.0
    for width, height in ((832, 1216), (1216, 832)):
        pixels, _ = gpu_engine.render_pixels(
            request(width=width, height=height, steps=2), lambda *_: None, threading.Event()
        )
        assert pixels.shape == (height, width, 3)


def test_cuda_cancel_within_one_step(gpu_engine: Engine) -> None:
    cancel = threading.Event()
    seen: list[int] = []

    def on_progress(step: int, _total: int, _preview: bytes) -> None:
        seen.append(step)
        if step == 2:
            cancel.set()

    with pytest.raises(Cancelled):
        gpu_engine.render_pixels(request(steps=30), on_progress, cancel)
    assert seen == [1, 2]


@pytest.mark.slow
def test_cuda_compiled_mode_warms_up_every_size(render_data_dir: Path) -> None:
    model = loading.load(Settings(model="builtin", data_dir=render_data_dir, device="cuda"))
    engine = Engine(model, compile_mode="max-autotune-no-cudagraphs")
    sizes = [(1024, 1024), (832, 1216), (1216, 832)]
    assert engine.warmup(sizes, steps=2, compiled=True) > 0
    pixels, _ = engine.render_pixels(
        request(width=832, height=1216, steps=2), lambda *_: None, threading.Event()
    )
    encoded = io.BytesIO()
    Image.fromarray(pixels).save(encoded, "PNG")
    assert Image.open(io.BytesIO(encoded.getvalue())).size == (832, 1216)
    engine.close()
