"""The generation engine: one SDXL pipeline held on its device, one batching render worker.

Jobs are prepared (text encoding, scheduler, seed-derived noise) on a preparation thread,
denoised together by the render worker (:mod:`talos_render.batching`: jobs join and leave
the batch between steps), decoded by the VAE on a decode thread, and encoded (PNG, WebP or
JPEG) on an encoding pool. The asyncio loop never does any of it.

Same request and seed, same picture: a job's initial noise comes from a CPU generator seeded
with its seed, whatever it is batched with. Rendered alone it is stock diffusers' picture,
bit for bit; inside a batch it may differ by rounding (docs/render.md, *Batching*).
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from PIL import Image

from talos_render import acceleration as accel
from talos_render.acceleration import Acceleration
from talos_render.batching import BatchWorker
from talos_render.decode import Decoder, latents_to_pixels
from talos_render.jobs import Cancelled, Rendered, RenderOutput, RenderRequest, make_job
from talos_render.loading import LoadedModel
from talos_render.prepare import Preparer
from talos_render.previews import Previewer, ProgressCallback
from talos_render.unet_runner import EagerUNet, GraphedUNet, all_buckets

__all__ = ["FORMATS", "Cancelled", "Engine", "ProgressCallback", "RenderOutput", "RenderRequest", "encode"]

log = logging.getLogger(__name__)

FORMATS = {"png": "PNG", "webp": "WEBP", "jpeg": "JPEG"}


# The webp and jpeg quality when a job names none.
DEFAULT_QUALITY = {"WEBP": 90, "JPEG": 92}


def encode(pixels: np.ndarray, output_format: str, quality: int = 0) -> bytes:
    """Encodes an (H, W, 3) uint8 array. CPU-heavy (~0.1 s for 1024² PNG): call it off the loop.

    ``quality`` (1 to 100) is the webp/jpeg encoder's; 0 takes the default. PNG is lossless.
    """
    fmt = FORMATS.get(output_format.lower())
    if fmt is None:
        raise ValueError(f"unsupported output format {output_format!r}")
    image = Image.fromarray(pixels, "RGB")
    out = io.BytesIO()
    if fmt == "PNG":
        image.save(out, fmt)
    elif fmt == "WEBP":
        image.save(out, fmt, quality=quality or DEFAULT_QUALITY[fmt], method=4)
    else:
        image.save(out, fmt, quality=quality or DEFAULT_QUALITY[fmt])
    return out.getvalue()


class Engine:
    """Renders requests on a loaded model, up to ``max_batch`` of them in one UNet batch."""

    def __init__(
        self,
        model: LoadedModel,
        *,
        preview_size: int = 128,
        min_preview_every: int = 1,
        max_batch: int = 1,
        batch_window_ms: float = 0.0,
        acceleration: Acceleration | None = None,
        preview_threads: int = 2,
        on_step: Callable[[], None] | None = None,
    ) -> None:
        self.model = model
        self.max_batch = max(1, max_batch)
        self.min_preview_every = max(1, min_preview_every)
        self.acceleration = acceleration or Acceleration()
        self.cuda = model.device.type == "cuda"
        accel.optimize(model, self.acceleration)
        self.compile = accel.compile_enabled(self.acceleration, model.device)
        pipe = model.pipe
        self.previewer = Previewer(model.latent_rgb, model.device, preview_size)
        self.unet = EagerUNet(pipe.unet, None, None)
        self.decoder = Decoder(pipe.vae, model.device)
        self._preview_pool = ThreadPoolExecutor(
            max_workers=max(1, preview_threads), thread_name_prefix="preview"
        )
        self._encode_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="encode")
        self.worker = BatchWorker(
            self.unet,
            Preparer(pipe, model.device, model.dtype),
            self.decoder,
            self.previewer,
            device=model.device,
            max_batch=self.max_batch,
            window_seconds=batch_window_ms / 1000.0,
            on_step=on_step,
        )
        self.seconds_per_step = 0.0
        # What warm-up chose, for logs and benchmarks.
        self.report: dict[str, Any] = {"compiled": False, "cuda_graphs": False, "attention": "default"}

    def close(self) -> None:
        self.worker.close()
        self.decoder.close()
        self._preview_pool.shutdown(wait=True, cancel_futures=True)
        self._encode_pool.shutdown(wait=True, cancel_futures=True)

    def preview_interval(self, request: RenderRequest) -> int:
        if request.preview_every <= 0:
            return 0
        return max(request.preview_every, self.min_preview_every)

    # -- submitting ----------------------------------------------------------------------------
    def submit(
        self, request: RenderRequest, on_progress: ProgressCallback, cancel: threading.Event
    ) -> Future[Rendered]:
        """Queues a job; the future gives its pixels, or raises Cancelled (or the error)."""
        job = make_job(request, on_progress, cancel, self._preview_pool, self.preview_interval(request))
        self.worker.submit(job)
        return job.future

    def render_pixels(
        self, request: RenderRequest, on_progress: ProgressCallback, cancel: threading.Event
    ) -> tuple[np.ndarray, float]:
        """Blocking: (H×W×3 uint8 pixels, seconds the job spent in the denoising loop)."""
        rendered = self.submit(request, on_progress, cancel).result()
        return rendered.pixels, rendered.loop_seconds

    async def render(
        self, request: RenderRequest, on_progress: ProgressCallback, cancel: threading.Event
    ) -> RenderOutput:
        """Renders (batched with whatever else is running) and encodes off the event loop."""
        loop = asyncio.get_running_loop()
        fmt = request.output_format.lower() or "png"
        if fmt not in FORMATS:
            raise ValueError(f"unsupported output format {request.output_format!r}")
        rendered = await asyncio.wrap_future(self.submit(request, on_progress, cancel))
        if cancel.is_set():
            raise Cancelled()
        data = await loop.run_in_executor(
            self._encode_pool, encode, rendered.pixels, fmt, request.output_quality
        )
        height, width = rendered.pixels.shape[:2]
        return RenderOutput(
            image=data, output_format=fmt, width=width, height=height, render_seconds=rendered.loop_seconds
        )

    # -- warm-up -------------------------------------------------------------------------------
    async def warmup_async(self, sizes: Sequence[tuple[int, int]], steps: int) -> float:
        return await asyncio.to_thread(self.warmup, sizes, steps)

    def warmup(self, sizes: Sequence[tuple[int, int]], steps: int) -> float:
        """Runs before the node reports ready. On CUDA: picks the attention backend, compiles,
        captures the UNet for every size and row bucket, and renders once per size (which
        compiles the VAE decoder for it). On a CPU: one render at the first size. Returns the
        seconds per step of a job alone at the first size."""
        steps = max(2, steps)
        sizes = list(sizes)
        if self.cuda:
            self.worker.call(lambda: self._accelerate(sizes)).result()
            self._compile_decoder()
        seconds_per_step = 0.0
        for index, size in enumerate(sizes if self.cuda else sizes[:1]):
            for _ in range(2 if self.cuda and index == 0 else 1):
                loop_seconds = self._warm_render(size, steps)
                if index == 0:
                    seconds_per_step = loop_seconds / steps
        self.seconds_per_step = seconds_per_step
        return seconds_per_step

    def _warm_render(self, size: tuple[int, int], steps: int) -> float:
        width, height = size
        request = RenderRequest("warm-up", "", width, height, steps, 5.0, 0, preview_every=1)
        try:
            pixels, loop_seconds = self.render_pixels(request, lambda *_: None, threading.Event())
        except Exception:
            if not self.report.get("compiled_decoder"):
                raise
            log.exception("the compiled VAE decoder failed; decoding eagerly")
            self.decoder.eager()
            self.report["compiled_decoder"] = False
            pixels, loop_seconds = self.render_pixels(request, lambda *_: None, threading.Event())
        encode(pixels, "png")
        return loop_seconds

    def _compile_decoder(self) -> None:
        if not self.compile:
            return
        vae = self.model.pipe.vae
        decode = accel.compiled(
            lambda latents: latents_to_pixels(vae, latents, channels_last=True),
            self.acceleration.compile_mode,
            dynamic=False,
        )
        self.decoder.use(decode)
        self.report["compiled_decoder"] = True

    def _accelerate(self, sizes: list[tuple[int, int]]) -> None:
        """Render thread, before any job: attention choice, compile, CUDA graph capture."""
        started = time.perf_counter()
        like = self._sample_conditioning(sizes[0])
        latent_scale = int(self.model.vae_scale_factor)
        self._choose_attention(sizes[0], like, latent_scale)
        if self.compile:
            accel.configure_compiler(len(sizes))
            self.unet.forward = accel.compiled(self.unet.unet, self.acceleration.compile_mode, dynamic=None)
            self.unet.dynamic_batch = True
            self.report["compiled"] = True
        if self.acceleration.cuda_graphs:
            graphed = self._capture(sizes, like, latent_scale)
            if graphed is None and self.compile:
                log.warning("compiled UNet could not be captured; capturing the eager UNet")
                self.unet.forward = self.unet.unet
                self.unet.dynamic_batch = False
                self.report["compiled"] = False
                graphed = self._capture(sizes, like, latent_scale)
            if graphed is not None:
                self.worker.unet = graphed
                self.report["cuda_graphs"] = True
                self.report["graphs"] = len(sizes) * len(all_buckets(self.max_batch))
        elif self.compile:
            try:
                for size in sizes:
                    self.unet(*self._dummy_inputs(size, 2, like, latent_scale))
            except Exception:
                log.exception("compiling the UNet failed; running it eagerly")
                self.unet.forward = self.unet.unet
                self.unet.dynamic_batch = False
                self.report["compiled"] = False
        torch.cuda.synchronize()
        self.report["accelerate_seconds"] = round(time.perf_counter() - started, 1)
        log.info("UNet ready", extra=dict(self.report))

    def _capture(
        self, sizes: list[tuple[int, int]], like: dict[str, torch.Tensor], latent_scale: int
    ) -> GraphedUNet | None:
        graphed = GraphedUNet(
            self.unet, max_batch=self.max_batch, latent_scale=latent_scale, dtype=self.model.dtype
        )
        try:
            for size in sizes:
                for bucket in all_buckets(self.max_batch):
                    graphed.capture(size, bucket, like)
        except Exception:
            log.exception("CUDA graph capture failed")
            torch.cuda.synchronize()
            return None
        return graphed

    def _sample_conditioning(self, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Real conditioning tensors (of a warm-up prompt) to size the graphs' buffers."""
        width, height = size
        job = make_job(
            RenderRequest("warm-up", "", width, height, 2, 5.0, 0),
            lambda *_: None,
            threading.Event(),
            self._preview_pool,
            0,
        )
        self.worker.preparer.prepare(job)
        torch.cuda.synchronize()
        assert job.conditioning is not None
        cond = job.conditioning
        return {"embeds": cond.embeds, "pooled": cond.pooled, "time_ids": cond.time_ids}

    def _dummy_inputs(
        self, size: tuple[int, int], rows: int, like: dict[str, torch.Tensor], latent_scale: int
    ) -> tuple[torch.Tensor, ...]:
        width, height = size
        channels = int(self.model.pipe.unet.config.in_channels)
        device = self.model.device
        sample = torch.randn(rows, channels, height // latent_scale, width // latent_scale, device=device)
        return (
            sample.to(self.model.dtype),
            torch.full((rows,), 500.0, device=device),
            like["embeds"][:1].expand(rows, -1, -1).contiguous(),
            like["pooled"][:1].expand(rows, -1).contiguous(),
            like["time_ids"][:1].expand(rows, -1).contiguous(),
        )

    def _choose_attention(
        self, size: tuple[int, int], like: dict[str, torch.Tensor], latent_scale: int
    ) -> None:
        setting = self.acceleration.attention
        if setting == "auto":
            inputs = self._dummy_inputs(size, 2, like, latent_scale)
            timings = accel.measure_attention(
                lambda: self.unet.unet(
                    inputs[0],
                    inputs[1],
                    encoder_hidden_states=inputs[2],
                    added_cond_kwargs={"text_embeds": inputs[3], "time_ids": inputs[4]},
                    return_dict=False,
                )
            )
            self.report["attention_ms"] = {k: round(v, 2) for k, v in timings.items()}
            if not timings:
                return
            setting = min(timings, key=lambda name: timings[name])
        self.unet.attention = accel.sdpa_backends(accel.attention_order(setting))
        self.report["attention"] = setting
