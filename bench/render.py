"""Render speed: this node's engine against stock diffusers, alone and with concurrent jobs.

    .venv/bin/python bench/render.py [--device auto|cpu|cuda] [--repeats 3] [--steps 30]
        [--concurrent 2,4] [--compile auto|on|off] [--no-cuda-graphs] [--attention auto] [--fp8]

On a CPU it runs the built-in test model (the tiny SDXL-architecture model) in float32, at
1024x1024 by default. On CUDA it builds the full-size SDXL architecture (UNet 2.6B, both CLIP
text encoders, the SDXL VAE) with seeded random weights, so it needs no download and does the
same arithmetic as the real model; the node runs bf16 with its CUDA path (SDPA backend chosen
by measurement, fused QKV, channels-last, torch.compile when a C compiler is there, CUDA
graphs per batch bucket), stock diffusers runs fp16 with SDPA and its default settings (it
upcasts the SDXL VAE to fp32 to decode).

In one run it measures:

* node, one job at a time: seconds per image from submission to decoded pixels in host memory
  (its loop with progress and a preview every 5 steps, the VAE decode), median of ``--repeats``;
* node, N jobs submitted at once for each N of ``--concurrent``: wall seconds until all N are
  decoded, as images per second, and each job's own seconds;
* drift: each of those jobs' pixels against the same seed rendered alone (max abs difference,
  PSNR), which is what "same seed, same image" means once jobs share a batch;
* stock diffusers, one image at a time: ``pipe(...)`` returning a PIL image, median of
  ``--repeats`` after a warm-up; a stock server renders one request at a time, so its
  throughput is 1 / that.

Encoding the PNG is not included on either side.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from talos_render import loading, tinymodel
from talos_render.acceleration import Acceleration
from talos_render.config import Settings
from talos_render.engine import Engine, RenderRequest

# One 1024x1024 image, 30 steps with CFG, on the SDXL architecture.
COMPUTE_TFLOP_PER_IMAGE = 416.0
# Dense bf16 tensor throughput, by GPU name.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}
# Targets on an H100/H200 (docs/render.md): seconds per image alone, images/s with 8 jobs,
# and the factor over stock diffusers both must reach.
TARGET_SECONDS = 0.8
TARGET_IMAGES_PER_SECOND = 1.8
TARGET_OVER_STOCK = 2.5

PROMPT = "a lighthouse on a cliff at dusk, dramatic sky, detailed"
NEGATIVE = "blurry, low quality"
SEED = 42


def versions() -> dict[str, str]:
    import diffusers
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, {os.cpu_count()} CPU cores"
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    if os.environ.get("BENCH_PEAK_TFLOPS"):
        return float(os.environ["BENCH_PEAK_TFLOPS"])
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_TFLOPS.items():
        if key in name:
            return value
    return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


# -- the full-size SDXL architecture with random weights (GPU) ------------------------------


def full_size_pipeline(dtype: torch.dtype, device: torch.device, seed: int = 0) -> Any:
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    def text_config(hidden: int, layers: int, heads: int, act: str, projection: int) -> Any:
        return CLIPTextConfig(
            vocab_size=49408,
            hidden_size=hidden,
            intermediate_size=hidden * 4,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            max_position_embeddings=77,
            hidden_act=act,
            projection_dim=projection,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )

    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(
            sample_size=128,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(320, 640, 1280),
            layers_per_block=2,
            transformer_layers_per_block=(1, 2, 10),
            attention_head_dim=(5, 10, 20),
            cross_attention_dim=2048,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
            norm_num_groups=32,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=4,
            norm_num_groups=32,
            sample_size=1024,
            scaling_factor=0.13025,
            force_upcast=True,
        )
        text_encoder = CLIPTextModel(text_config(768, 12, 12, "quick_gelu", 768))
        text_encoder_2 = CLIPTextModelWithProjection(text_config(1280, 32, 20, "gelu", 1280))
    pipe: Any = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tinymodel.build_tokenizer("<|endoftext|>"),
        tokenizer_2=tinymodel.build_tokenizer("!"),
        unet=unet,
        scheduler=tinymodel.scheduler(),
        add_watermarker=False,
    )
    pipe.to(device=device, dtype=dtype)
    for part in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        part.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


# -- the node's engine ----------------------------------------------------------------------


def node_engine(
    args: argparse.Namespace, device: torch.device, model_dir: Path | None, max_batch: int
) -> Engine:
    if device.type == "cuda":
        pipe = full_size_pipeline(torch.bfloat16, device)
        model = loading.LoadedModel(
            pipe=pipe,
            name="sdxl-architecture-random",
            source="random",
            device=device,
            dtype=torch.bfloat16,
            latent_rgb=loading.SDXL_LATENT_RGB,
        )
    else:
        assert model_dir is not None
        model = loading.load(Settings(model=str(model_dir), device="cpu", cpu_threads=args.threads))
    compile_setting = {"auto": None, "on": True, "off": False}[args.compile]
    acceleration = Acceleration(
        compile=compile_setting,
        compile_mode=args.compile_mode,
        cuda_graphs=not args.no_cuda_graphs,
        attention=args.attention,
        fp8=args.fp8,
    )
    engine = Engine(model, max_batch=max_batch, batch_window_ms=args.window_ms, acceleration=acceleration)
    started = time.perf_counter()
    engine.warmup([(args.size, args.size)], steps=3)
    print(f"node warm-up {time.perf_counter() - started:.1f}s; {json.dumps(engine.report)}", flush=True)
    return engine


def request_for(args: argparse.Namespace, seed: int) -> RenderRequest:
    return RenderRequest(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        width=args.size,
        height=args.size,
        steps=args.steps,
        guidance=args.guidance,
        seed=seed,
        preview_every=args.preview_every,
    )


def node_alone(engine: Engine, args: argparse.Namespace, count: int) -> tuple[list[float], list[np.ndarray]]:
    """``count`` jobs one after another (seeds SEED, SEED+1, ...): seconds each, and pixels."""
    seconds, pixels = [], []
    for index in range(count):
        started = time.perf_counter()
        image, _ = engine.render_pixels(request_for(args, SEED + index), lambda *_: None, threading.Event())
        seconds.append(time.perf_counter() - started)
        pixels.append(image)
    return seconds, pixels


def mark_done(done_at: list[float], index: int, _future: Any) -> None:
    done_at[index] = time.perf_counter()


def node_together(
    engine: Engine, args: argparse.Namespace, count: int
) -> tuple[float, list[float], list[np.ndarray]]:
    """``count`` jobs submitted at once: wall seconds for all, each job's seconds, pixels."""
    done_at: list[float] = [0.0] * count
    started = time.perf_counter()
    futures = []
    for index in range(count):
        future = engine.submit(request_for(args, SEED + index), lambda *_: None, threading.Event())
        future.add_done_callback(functools.partial(mark_done, done_at, index))
        futures.append(future)
    pixels = [future.result().pixels for future in futures]
    wall = time.perf_counter() - started
    return wall, [t - started for t in done_at], pixels


def time_node(
    args: argparse.Namespace, device: torch.device, model_dir: Path | None, results: dict[str, Any]
) -> None:
    counts = sorted({int(c) for c in args.concurrent.split(",") if c.strip()})
    engine = node_engine(args, device, model_dir, max([*counts, 1]))
    try:
        references = max([*counts, args.repeats])
        seconds, alone = node_alone(engine, args, references)
        node_s = statistics.median(seconds)
        results["node_seconds"] = node_s
        runs = ", ".join(f"{t:.3f}" for t in seconds)
        print(f"node alone: {node_s:.3f} s/image (median of {len(seconds)}: {runs})", flush=True)
        together: dict[str, Any] = {}
        for count in counts:
            walls, per_job, drift_max, drift_psnr, drift_share = [], [], 0, math.inf, 0.0
            for _ in range(args.rounds):
                wall, each, pixels = node_together(engine, args, count)
                walls.append(wall)
                per_job += each
                for index, image in enumerate(pixels):
                    diff = np.abs(image.astype(np.int16) - alone[index].astype(np.int16))
                    drift_max = max(drift_max, int(diff.max()))
                    drift_share = max(drift_share, float((diff != 0).mean()))
                    drift_psnr = min(drift_psnr, psnr(image, alone[index]))
            wall = statistics.median(walls)
            together[str(count)] = {
                "wall_seconds": wall,
                "images_per_second": count / wall,
                "job_seconds_median": statistics.median(per_job),
                "drift_max_abs": drift_max,
                "drift_min_psnr_db": drift_psnr,
                "drift_values_changed": drift_share,
            }
            print(
                f"node, {count} at once: {wall:.3f} s for all = {count / wall:.3f} images/s "
                f"({wall / count:.3f} s/image; each job {statistics.median(per_job):.3f} s median); "
                f"drift against alone: max abs {drift_max}, min PSNR {drift_psnr:.1f} dB, "
                f"at most {100 * drift_share:.4f} % of values changed",
                flush=True,
            )
        results["together"] = together
        results["engine"] = engine.report
        if device.type == "cuda":
            results["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            print(f"peak GPU memory {results['peak_memory_gib']:.1f} GiB", flush=True)
    finally:
        engine.close()


def time_stock(
    args: argparse.Namespace, device: torch.device, model_dir: Path | None, results: dict[str, Any]
) -> None:
    from diffusers import StableDiffusionXLPipeline

    if device.type == "cuda":
        stock = full_size_pipeline(torch.float16, device)
    else:
        stock = StableDiffusionXLPipeline.from_pretrained(str(model_dir), local_files_only=True)
        stock.set_progress_bar_config(disable=True)  # the tqdm bar only; everything else is default

    def stock_run() -> None:
        with torch.no_grad():
            stock(
                prompt=PROMPT,
                negative_prompt=NEGATIVE,
                width=args.size,
                height=args.size,
                num_inference_steps=args.steps,
                guidance_scale=args.guidance,
                generator=torch.Generator("cpu").manual_seed(SEED),
            )

    stock_run()  # warm-up
    times = []
    for _ in range(args.repeats):
        sync(device)
        started = time.perf_counter()
        stock_run()
        sync(device)
        times.append(time.perf_counter() - started)
    stock_s = statistics.median(times)
    results["stock_seconds"] = stock_s
    print(f"stock: {stock_s:.3f} s/image (runs {', '.join(f'{t:.3f}' for t in times)})", flush=True)


def summary(results: dict[str, Any], device: torch.device, concurrent: str) -> None:
    node_s = results["node_seconds"]
    stock_s = results.get("stock_seconds")
    together = results.get("together", {})
    widest = max(together, key=int) if together else None
    if stock_s:
        results["speedup_alone"] = stock_s / node_s
        print(
            f"alone: node is {stock_s / node_s:.2f}x stock diffusers ({node_s:.3f} vs {stock_s:.3f} s/image)"
        )
        if widest is not None:
            ips = together[widest]["images_per_second"]
            results["speedup_throughput"] = ips * stock_s
            print(
                f"{widest} at once: node {ips:.3f} images/s is {ips * stock_s:.2f}x stock's "
                f"{1 / stock_s:.3f} images/s (one request at a time)"
            )
    if device.type == "cuda" and widest is not None:
        ips = together[widest]["images_per_second"]
        over = [results.get("speedup_alone", 0.0), results.get("speedup_throughput", 0.0)]
        met = node_s <= TARGET_SECONDS and ips >= TARGET_IMAGES_PER_SECOND and min(over) >= TARGET_OVER_STOCK
        print(
            f"targets (H100/H200): <= {TARGET_SECONDS} s/image alone, >= {TARGET_IMAGES_PER_SECOND} images/s "
            f"with 8 at once, both >= {TARGET_OVER_STOCK}x stock: {'met' if met else 'NOT met'}"
            + ("" if widest == "8" else f" (measured with {widest}, not 8: --concurrent {concurrent})")
        )
    peak = peak_tflops(device)
    if peak is not None:
        limit = COMPUTE_TFLOP_PER_IMAGE / peak
        results["compute_limit_seconds"] = limit
        print(
            f"compute limit {limit:.3f} s/image ({COMPUTE_TFLOP_PER_IMAGE:.0f} TFLOP at {peak:.0f} TFLOP/s)"
        )
    elif device.type != "cuda":
        print("compute limit: only meaningful for the full-size model on a GPU, not the tiny model on a CPU")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1, help="rounds of each concurrent measurement")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--preview-every", type=int, default=5, help="node previews (0 = none)")
    parser.add_argument(
        "--concurrent", default="", help="comma-separated job counts (default 2,4,8 on CUDA, 2,4 on a CPU)"
    )
    parser.add_argument("--window-ms", type=float, default=10.0, help="the node's batch window")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--compile-mode", default="default")
    parser.add_argument("--no-cuda-graphs", action="store_true")
    parser.add_argument("--attention", default="auto", help="auto, flash, cudnn, efficient or math")
    parser.add_argument("--fp8", action="store_true", help="float8 UNet linear layers (torchao)")
    parser.add_argument("--skip-stock", action="store_true")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads for both sides (0 = torch default)"
    )
    args = parser.parse_args()

    device = loading.resolve_device(args.device)
    if not args.concurrent:
        args.concurrent = "2,4,8" if device.type == "cuda" else "2,4"
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    loading.quiet_libraries()
    model_dir: Path | None = None
    scratch = None
    if device.type == "cpu":
        scratch = tempfile.TemporaryDirectory(prefix="talos-bench-")
        model_dir = tinymodel.cached(Path(scratch.name))
    print(f"machine: {machine(device)}", flush=True)
    print(f"versions: {json.dumps(versions())}", flush=True)
    what = (
        "built-in tiny SDXL-architecture test model, float32"
        if device.type == "cpu"
        else ("full-size SDXL architecture, random weights")
    )
    print(f"model: {what}; {args.size}x{args.size}, {args.steps} steps, guidance {args.guidance}", flush=True)
    results: dict[str, Any] = {"device": machine(device), "versions": versions(), "steps": args.steps}
    try:
        time_node(args, device, model_dir, results)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if not args.skip_stock:
            time_stock(args, device, model_dir, results)
        summary(results, device, args.concurrent)
    finally:
        print("RESULT " + json.dumps(results, default=str), flush=True)
        if scratch is not None:
            scratch.cleanup()


if __name__ == "__main__":
    main()
