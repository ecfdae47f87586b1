"""The generation engine: one SDXL pipeline held on its device, one job per worker thread.

The denoising loop runs in a worker thread (never on the asyncio loop). After every step a
callback reports progress through a non-blocking function, adds a small JPEG preview every few
steps (a linear latent-to-RGB map of the predicted clean latents, never the VAE), and checks the
job's cancel flag, so a cancel stops the loop within one step and frees the device. The final
image is decoded by the VAE and encoded (PNG, WebP or JPEG) in another thread.

The same request and seed give the same pixels: the initial noise always comes from a CPU
generator seeded with the job's seed.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from talos_render.loading import LoadedModel

log = logging.getLogger(__name__)

FORMATS = {"png": "PNG", "webp": "WEBP", "jpeg": "JPEG"}

# Called from the worker thread after each step: (step, total_steps, preview_jpeg or b"").
# It must never block: the denoising loop waits for it.
ProgressCallback = Callable[[int, int, bytes], None]


@dataclass(frozen=True)
class RenderRequest:
    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance: float
    seed: int
    output_format: str = "png"
    preview_every: int = 0


@dataclass(frozen=True)
class RenderOutput:
    image: bytes
    output_format: str
    width: int
    height: int
    render_seconds: float


class Cancelled(Exception):
    """The job's cancel flag was set; the loop stopped after the step in progress."""


def encode(pixels: np.ndarray, output_format: str) -> bytes:
    """Encodes an (H, W, 3) uint8 array. CPU-heavy (~0.1 s for 1024² PNG): call it off the loop."""
    fmt = FORMATS.get(output_format.lower())
    if fmt is None:
        raise ValueError(f"unsupported output format {output_format!r}")
    image = Image.fromarray(pixels, "RGB")
    out = io.BytesIO()
    if fmt == "PNG":
        image.save(out, fmt)
    elif fmt == "WEBP":
        image.save(out, fmt, quality=90, method=4)
    else:
        image.save(out, fmt, quality=92)
    return out.getvalue()


class Previewer:
    """Latents → a small JPEG through a linear map, a few hundred microseconds a preview."""

    def __init__(self, latent_rgb: dict[str, Any], device: torch.device, size: int) -> None:
        self.factors = torch.tensor(latent_rgb["factors"], dtype=torch.float32, device=device)
        self.bias = torch.tensor(latent_rgb["bias"], dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.size = max(16, size)

    def rgb(self, latents: torch.Tensor) -> np.ndarray:
        lat = latents[:1].float()
        height, width = lat.shape[-2:]
        factor = max(1, math.ceil(max(height, width) / self.size))
        if factor > 1:
            lat = torch.nn.functional.avg_pool2d(lat, factor, ceil_mode=True)
        rgb = torch.einsum("bchw,cr->brhw", lat, self.factors) + self.bias
        rgb8 = ((rgb + 1.0) * 127.5).clamp(0, 255).round().to(torch.uint8)
        return rgb8[0].permute(1, 2, 0).contiguous().cpu().numpy()

    def jpeg(self, latents: torch.Tensor, width: int, height: int) -> bytes:
        image = Image.fromarray(self.rgb(latents), "RGB")
        scale = self.size / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if image.size != size:
            image = image.resize(size, Image.Resampling.BILINEAR)
        out = io.BytesIO()
        image.save(out, "JPEG", quality=70)
        return out.getvalue()


def optimize(model: LoadedModel, compile_mode: str | None) -> None:
    """The GPU fast path: bf16 everywhere (set at load), SDPA with fused QKV, channels-last,
    TF32 matmuls and, when asked, ``torch.compile`` of the UNet and the VAE decoder."""
    if model.device.type != "cuda":
        return
    pipe = model.pipe
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    from diffusers.models.attention_processor import AttnProcessor2_0

    pipe.unet.set_attn_processor(AttnProcessor2_0())
    pipe.vae.set_attn_processor(AttnProcessor2_0())
    try:
        pipe.fuse_qkv_projections()
    except Exception as exc:  # an exotic attention layout keeps the unfused path
        log.warning("fused QKV projections unavailable", extra={"error": str(exc)})
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.vae.to(memory_format=torch.channels_last)
    if model.dtype == torch.float16 and getattr(pipe.vae.config, "force_upcast", False):
        # SDXL's original VAE overflows in fp16; keep it in fp32 rather than upcast per image.
        pipe.vae.to(torch.float32)
    if compile_mode:
        import torch._inductor.config as inductor

        inductor.conv_1x1_as_mm = True
        inductor.coordinate_descent_tuning = True
        inductor.epilogue_fusion = False
        inductor.coordinate_descent_check_all_directions = True
        pipe.unet.compile(mode=compile_mode, fullgraph=True, dynamic=False)
        pipe.vae.decoder.compile(mode=compile_mode, fullgraph=True, dynamic=False)


class Engine:
    """Runs render requests on a loaded model, ``concurrency`` at a time."""

    def __init__(
        self,
        model: LoadedModel,
        *,
        preview_size: int = 128,
        min_preview_every: int = 1,
        concurrency: int = 1,
        compile_mode: str | None = None,
        on_step: Callable[[], None] | None = None,
    ) -> None:
        self.model = model
        self.min_preview_every = max(1, min_preview_every)
        self.previewer = Previewer(model.latent_rgb, model.device, preview_size)
        self.concurrency = max(1, concurrency)
        self._render_pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="render")
        self._encode_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="encode")
        self._on_step = on_step
        self.seconds_per_step = 0.0
        optimize(model, compile_mode)

    def close(self) -> None:
        self._render_pool.shutdown(wait=True, cancel_futures=True)
        self._encode_pool.shutdown(wait=True, cancel_futures=True)

    # -- the pipeline a job uses -------------------------------------------------------------
    def _job_pipeline(self) -> tuple[Any, dict[str, torch.Tensor]]:
        """A view of the shared pipeline with its own scheduler (schedulers keep per-run state),
        whose ``step`` also hands us the predicted clean latents for the previews."""
        base = self.model.pipe
        scheduler = type(base.scheduler).from_config(base.scheduler.config)
        components = {**base.components, "scheduler": scheduler}
        pipe = type(base)(
            **components,
            force_zeros_for_empty_prompt=base.config.force_zeros_for_empty_prompt,
            add_watermarker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        seen: dict[str, torch.Tensor] = {}
        step = scheduler.step

        def step_and_keep(*args: Any, **kwargs: Any) -> Any:
            out = step(*args, **kwargs)
            predicted = out[1] if isinstance(out, tuple) else getattr(out, "pred_original_sample", None)
            if isinstance(predicted, torch.Tensor):
                seen["x0"] = predicted
            return out

        scheduler.step = step_and_keep
        return pipe, seen

    def preview_interval(self, request: RenderRequest) -> int:
        if request.preview_every <= 0:
            return 0
        return max(request.preview_every, self.min_preview_every)

    # -- blocking work (worker threads) ------------------------------------------------------
    def render_pixels(
        self, request: RenderRequest, on_progress: ProgressCallback, cancel: threading.Event
    ) -> tuple[np.ndarray, float]:
        """Runs the denoising loop and the VAE; returns (H×W×3 uint8 pixels, loop seconds)."""
        if cancel.is_set():
            raise Cancelled()
        pipe, seen = self._job_pipeline()
        total = request.steps
        every = self.preview_interval(request)
        previewer = self.previewer

        def on_step_end(_pipe: Any, index: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            step = index + 1
            preview = b""
            if every and step % every == 0 and step < total:
                preview = previewer.jpeg(seen.get("x0", tensors["latents"]), request.width, request.height)
            if self._on_step is not None:
                self._on_step()
            on_progress(step, total, preview)
            if cancel.is_set():
                raise Cancelled()
            return {}

        generator = torch.Generator("cpu").manual_seed(int(request.seed))
        started = time.perf_counter()
        with torch.inference_mode():
            latents = pipe(
                prompt=request.prompt,
                negative_prompt=request.negative_prompt or None,
                width=request.width,
                height=request.height,
                num_inference_steps=request.steps,
                guidance_scale=request.guidance,
                generator=generator,
                output_type="latent",
                callback_on_step_end=on_step_end,
                callback_on_step_end_tensor_inputs=["latents"],
            ).images
            if self.model.device.type == "cuda":
                torch.cuda.synchronize(self.model.device)
            loop_seconds = time.perf_counter() - started
            pixels = self.decode(latents)
        return pixels, loop_seconds

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        vae = self.model.pipe.vae
        config = vae.config
        latents = latents.to(next(vae.post_quant_conv.parameters()).dtype)
        mean = getattr(config, "latents_mean", None)
        std = getattr(config, "latents_std", None)
        if mean is not None and std is not None:
            channels = latents.shape[1]
            mean_t = torch.tensor(mean).view(1, channels, 1, 1).to(latents.device, latents.dtype)
            std_t = torch.tensor(std).view(1, channels, 1, 1).to(latents.device, latents.dtype)
            latents = latents * std_t / config.scaling_factor + mean_t
        else:
            latents = latents / config.scaling_factor
        if self.model.device.type == "cuda":
            latents = latents.contiguous(memory_format=torch.channels_last)
        image = vae.decode(latents, return_dict=False)[0]
        pixels = ((image.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
        return np.ascontiguousarray(pixels[0].permute(1, 2, 0).cpu().numpy())

    # -- the asyncio face --------------------------------------------------------------------
    async def render(
        self, request: RenderRequest, on_progress: ProgressCallback, cancel: threading.Event
    ) -> RenderOutput:
        """Renders in a worker thread and encodes in another; the event loop keeps serving."""
        loop = asyncio.get_running_loop()
        fmt = request.output_format.lower() or "png"
        if fmt not in FORMATS:
            raise ValueError(f"unsupported output format {request.output_format!r}")
        pixels, seconds = await loop.run_in_executor(
            self._render_pool, self.render_pixels, request, on_progress, cancel
        )
        if cancel.is_set():
            raise Cancelled()
        data = await loop.run_in_executor(self._encode_pool, encode, pixels, fmt)
        height, width = pixels.shape[:2]
        return RenderOutput(image=data, output_format=fmt, width=width, height=height, render_seconds=seconds)

    async def warmup_async(self, sizes: Sequence[tuple[int, int]], steps: int, compiled: bool) -> float:
        """:meth:`warmup` on the render thread pool (compiled graphs stay on the threads that run jobs)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._render_pool, self.warmup, sizes, steps, compiled)

    def warmup(self, sizes: Sequence[tuple[int, int]], steps: int, compiled: bool) -> float:
        """Runs before the node reports ready: one generation per size bucket when compiled
        (each shape compiles once), else one at the first size; returns seconds per step."""
        steps = max(2, steps)
        buckets = list(sizes) if compiled else list(sizes[:1])
        repeats = 2 if self.model.device.type == "cuda" else 1
        seconds_per_step = 0.0
        for index, (width, height) in enumerate(buckets):
            for _ in range(repeats if index == 0 else 1):
                request = RenderRequest(
                    prompt="warm-up",
                    negative_prompt="",
                    width=width,
                    height=height,
                    steps=steps,
                    guidance=5.0,
                    seed=0,
                    preview_every=1,
                )
                pixels, loop_seconds = self.render_pixels(request, lambda *_: None, threading.Event())
                encode(pixels, "png")
                if index == 0:
                    seconds_per_step = loop_seconds / steps
        self.seconds_per_step = seconds_per_step
        return seconds_per_step
