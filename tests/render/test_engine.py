"""The generation engine on the CPU with the built-in test model."""

from __future__ import annotations

import asyncio
import io
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from talos.relay.v1 import relay_pb2
from talos_render import tinymodel
from talos_render.engine import Cancelled, Engine, RenderRequest, encode
from talos_render.loading import LoadedModel
from talos_render.outbound import Outbound

from .pictures import unet_batches


def request(**changes: object) -> RenderRequest:
    base: dict[str, object] = {
        "prompt": "a lighthouse on a cliff at dusk",
        "negative_prompt": "blurry",
        "width": 256,
        "height": 256,
        "steps": 4,
        "guidance": 5.0,
        "seed": 1234,
        "output_format": "png",
        "preview_every": 0,
    }
    base.update(changes)
    return RenderRequest(**base)  # type: ignore[arg-type]


def silent(_step: int, _total: int, _preview: bytes) -> None:
    pass


def test_tokenizers_carry_the_real_clip_vocabulary(loaded: LoadedModel) -> None:
    vocab, merges = tinymodel.clip_vocabulary()
    assert len(vocab) == 49408 and len(merges) == 48894
    # The ids OpenAI's CLIP gives "a photo of a cat": start, a, photo, of, a, cat, end.
    expected = [49406, 320, 1125, 539, 320, 2368, 49407]
    for tokenizer in (loaded.pipe.tokenizer, loaded.pipe.tokenizer_2):
        assert tokenizer("a photo of a cat").input_ids == expected
        assert tokenizer.model_max_length == 77
    assert loaded.pipe.tokenizer_2.pad_token == "!"  # as SDXL's second tokenizer


def test_builtin_model_is_built_the_same_every_time(loaded: LoadedModel) -> None:
    fresh = tinymodel.build_pipeline()
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        built = getattr(fresh, part).state_dict()
        cached = getattr(loaded.pipe, part).state_dict()
        assert built.keys() == cached.keys()
        assert all(torch.equal(built[k], cached[k]) for k in built), part
    assert loaded.name == tinymodel.NAME
    assert loaded.pipe.unet.config.addition_embed_type == "text_time"


def test_same_seed_gives_byte_identical_pixels(engine: Engine) -> None:
    first, _ = engine.render_pixels(request(), silent, threading.Event())
    second, _ = engine.render_pixels(request(), silent, threading.Event())
    other, _ = engine.render_pixels(request(seed=1235), silent, threading.Event())
    assert first.shape == (256, 256, 3) and first.dtype == np.uint8
    assert np.array_equal(first, second)
    assert encode(first, "png") == encode(second, "png")
    assert not np.array_equal(first, other)
    assert first.std() > 5  # a picture, not a flat colour


def test_node_pipeline_gives_what_stock_diffusers_gives(engine: Engine) -> None:
    """The node's own loop (latents out, its own decode) matches the stock pipeline bit for bit."""
    pixels, _ = engine.render_pixels(request(), silent, threading.Event())
    with torch.inference_mode():
        stock = engine.model.pipe(
            prompt="a lighthouse on a cliff at dusk",
            negative_prompt="blurry",
            width=256,
            height=256,
            num_inference_steps=4,
            guidance_scale=5.0,
            generator=torch.Generator("cpu").manual_seed(1234),
            output_type="np",
        ).images[0]
    assert np.array_equal(pixels, (stock * 255).round().astype("uint8"))


def test_progress_runs_one_to_n_in_order_with_previews(engine: Engine) -> None:
    events: list[tuple[int, int, bytes]] = []
    engine.render_pixels(
        request(steps=7, preview_every=2),
        lambda step, total, preview: events.append((step, total, preview)),
        threading.Event(),
    )
    assert [step for step, _, _ in events] == [1, 2, 3, 4, 5, 6, 7]
    assert {total for _, total, _ in events} == {7}
    with_preview = [step for step, _, preview in events if preview]
    assert with_preview == [2, 4, 6]
    for _, _, preview in events:
        if preview:
            image = Image.open(io.BytesIO(preview))
            assert image.format == "JPEG" and max(image.size) == 64


def test_previews_follow_the_aspect_ratio(engine: Engine) -> None:
    previews: list[bytes] = []
    engine.render_pixels(
        request(width=192, height=256, steps=2, preview_every=1),
        lambda _s, _t, preview: previews.append(preview) if preview else None,
        threading.Event(),
    )
    assert [Image.open(io.BytesIO(p)).size for p in previews] == [(48, 64)]


def test_a_cancel_stops_the_loop_within_one_step(engine: Engine) -> None:
    cancel = threading.Event()
    steps: list[int] = []

    def on_progress(step: int, _total: int, _preview: bytes) -> None:
        steps.append(step)
        if step == 3:
            cancel.set()

    with unet_batches(engine) as batches, pytest.raises(Cancelled):
        engine.render_pixels(request(steps=30), on_progress, cancel)
    assert steps == [1, 2, 3]
    assert len(batches) == 3  # no UNet pass after the cancel


async def test_a_cancel_from_the_event_loop_stops_a_running_job(engine: Engine) -> None:
    """The relay's CancelJob arrives on the loop while the worker thread denoises."""
    loop = asyncio.get_running_loop()
    cancel = threading.Event()
    at_cancel: list[int] = []
    steps: list[int] = []
    second_step = asyncio.Event()

    def on_progress(step: int, _total: int, _preview: bytes) -> None:
        steps.append(step)
        if step == 2:
            loop.call_soon_threadsafe(second_step.set)

    job = asyncio.create_task(engine.render(request(steps=40), on_progress, cancel))
    await asyncio.wait_for(second_step.wait(), 60)  # the loop is free while the job runs
    at_cancel.append(steps[-1])
    cancel.set()
    with pytest.raises(Cancelled):
        await job
    assert steps[-1] <= at_cancel[0] + 1
    assert steps[-1] < 40


def test_guidance_one_skips_the_unconditional_pass(engine: Engine) -> None:
    with unet_batches(engine) as batches:
        engine.render_pixels(request(guidance=1.0, steps=3), silent, threading.Event())
    assert batches == [1, 1, 1]
    with unet_batches(engine) as batches:
        engine.render_pixels(request(guidance=5.0, steps=3), silent, threading.Event())
    assert batches == [2, 2, 2]


async def test_all_three_sizes_come_out_exactly_that_size(engine: Engine) -> None:
    for (width, height), fmt in zip(
        [(1024, 1024), (832, 1216), (1216, 832)], ["png", "webp", "jpeg"], strict=True
    ):
        output = await engine.render(
            request(width=width, height=height, steps=2, output_format=fmt), silent, threading.Event()
        )
        image = Image.open(io.BytesIO(output.image))
        assert image.size == (width, height)
        assert (output.width, output.height) == (width, height)
        assert image.format == {"png": "PNG", "webp": "WEBP", "jpeg": "JPEG"}[fmt]
        assert output.render_seconds > 0


def test_single_file_checkpoint_loads_and_renders_the_same(
    engine: Engine, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Export the built-in model as an original-layout checkpoint whose first text encoder
    has transformers-5 keys (no text_model. prefix), load it back: same weights, same picture."""
    from talos_render import loading, singlefile
    from talos_render.config import Settings

    checkpoint = singlefile.export(
        engine.model.pipe, tmp_path / "tiny.safetensors", flatten_first_text_encoder=True
    )
    from safetensors import safe_open

    with safe_open(str(checkpoint), "pt") as f:
        keys = list(f.keys())
    assert "conditioner.embedders.0.transformer.embeddings.token_embedding.weight" in keys
    model = loading.load(Settings(model=str(checkpoint), config_dir=tiny_model_dir, device="cpu"))
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        expected = getattr(engine.model.pipe, part).state_dict()
        got = getattr(model.pipe, part).state_dict()
        assert expected.keys() == got.keys(), part
        assert all(torch.equal(expected[k], got[k]) for k in expected), part
    other = Engine(model)
    try:
        ours, _ = other.render_pixels(request(), silent, threading.Event())
    finally:
        other.close()
    reference, _ = engine.render_pixels(request(), silent, threading.Event())
    # Same weights; a GEMM may still round differently when a tensor sits at another address.
    difference = np.abs(ours.astype(int) - reference.astype(int))
    assert difference.max() <= 2 and difference.mean() < 0.05


def test_a_checkpoint_missing_a_part_is_refused_naming_the_file(
    engine: Engine, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file, save_file

    from talos_render import loading, singlefile
    from talos_render.config import Settings

    full = singlefile.export(engine.model.pipe, tmp_path / "full.safetensors")
    state = {
        k: v for k, v in load_file(str(full)).items() if not k.startswith("first_stage_model.decoder.up.0")
    }
    broken = tmp_path / "no-decoder-block.safetensors"
    save_file(state, str(broken))
    with pytest.raises(loading.ModelError, match=r"no-decoder-block\.safetensors") as error:
        loading.load(Settings(model=str(broken), config_dir=tiny_model_dir, device="cpu"))
    assert "VAE" in str(error.value)
    with pytest.raises(loading.ModelError, match="TALOS_RENDER_CONFIG_DIR"):
        loading.load(Settings(model=str(full), device="cpu"))


def test_progress_is_coalesced_for_a_slow_stream_but_the_terminal_is_kept() -> None:
    """The render thread never waits: unsent progress is replaced by newer progress (keeping
    the newest preview), and the job's terminal message always follows its last progress."""

    async def scenario() -> list[relay_pb2.NodeMessage]:
        outbound = Outbound(relay_pb2.Hello(model="m"), asyncio.get_running_loop())
        slot = outbound.job("job-1")

        def render_thread() -> None:
            for step in range(1, 51):
                slot.offer_progress(step, 50, b"jpeg-%d" % step if step % 10 == 0 and step < 50 else b"")
            slot.finish(relay_pb2.NodeMessage(failed=relay_pb2.JobFailed(job_id="job-1", reason="cancelled")))

        thread = threading.Thread(target=render_thread)
        thread.start()
        thread.join(10)  # nobody consumes meanwhile: the thread finished all 50 steps anyway
        assert not thread.is_alive()
        outbound.close()
        return [message async for message in outbound.messages()]

    messages = asyncio.run(scenario())
    kinds = [m.WhichOneof("msg") for m in messages]
    assert kinds == ["hello", "progress", "failed"]
    assert messages[1].progress.step == 50 and messages[1].progress.preview_jpeg == b"jpeg-40"
