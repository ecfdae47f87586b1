"""Seconds per 1024x1024, 30-step image with CFG: this node's pipeline vs stock diffusers.

    .venv/bin/python bench/render.py [--repeats 3] [--steps 30] [--compile] [--device auto|cpu|cuda]

On a CPU it runs the built-in test model (the tiny SDXL-architecture model), both pipelines
in float32. On CUDA it builds the full-size SDXL architecture (UNet 2.6B, both CLIP text
encoders, the SDXL VAE) with seeded random weights, so it needs no download and does the
same arithmetic as the real model; the node runs bf16 everywhere with SDPA, fused QKV,
channels-last (and torch.compile with --compile), stock diffusers runs fp16 with SDPA and
its default settings (it upcasts the SDXL VAE to fp32 to decode).

Both sides are timed from the call to decoded pixels in host memory (the node: its loop and
VAE decode to a uint8 array; stock: ``pipe(...)`` returning a PIL image). Encoding the PNG is
not included on either side. Each figure is the median of ``--repeats`` runs after warm-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from talos_render import loading, tinymodel
from talos_render.config import Settings
from talos_render.engine import Engine, RenderRequest

# One 1024x1024 image, 30 steps with CFG, on the SDXL architecture (issue 3's figure).
COMPUTE_TFLOP_PER_IMAGE = 416.0
# Dense bf16 tensor throughput, by GPU name.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}

PROMPT = "a lighthouse on a cliff at dusk, dramatic sky, detailed"
NEGATIVE = "blurry, low quality"


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


def median_seconds(run: Any, repeats: int, device: torch.device) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        sync(device)
        started = time.perf_counter()
        run()
        sync(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


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


# -- the two contestants --------------------------------------------------------------------


def node_contestant(args: argparse.Namespace, device: torch.device, model_dir: Path | None) -> Engine:
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
    compile_mode = args.compile_mode if args.compile and device.type == "cuda" else None
    engine = Engine(model, compile_mode=compile_mode)
    started = time.perf_counter()
    engine.warmup([(args.size, args.size)], steps=3, compiled=compile_mode is not None)
    print(f"node warm-up {time.perf_counter() - started:.1f}s", flush=True)
    return engine


def stock_contestant(device: torch.device, model_dir: Path | None) -> Any:
    from diffusers import StableDiffusionXLPipeline

    if device.type == "cuda":
        return full_size_pipeline(torch.float16, device)
    pipe = StableDiffusionXLPipeline.from_pretrained(str(model_dir), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)  # the tqdm bar only; everything else is default
    return pipe


def time_node(
    args: argparse.Namespace,
    device: torch.device,
    model_dir: Path | None,
    request: RenderRequest,
    results: dict[str, Any],
) -> float:
    engine = node_contestant(args, device, model_dir)
    previews = 0

    def node_run() -> None:
        nonlocal previews
        previews = 0

        def on_progress(_step: int, _total: int, preview: bytes) -> None:
            nonlocal previews
            previews += bool(preview)

        engine.render_pixels(request, on_progress, threading.Event())

    try:
        node_s, node_all = median_seconds(node_run, args.repeats, device)
        results["node_seconds"] = node_s
        runs = ", ".join(f"{t:.3f}" for t in node_all)
        print(f"node:  {node_s:.3f} s/image (runs {runs}; {previews} previews)", flush=True)
        # What one preview costs, against one denoising step (the A/B of whole images is noisier).
        _, loop_seconds = engine.render_pixels(
            dataclasses.replace(request, preview_every=0), lambda *_: None, threading.Event()
        )
        step_ms = 1000 * loop_seconds / request.steps
        scale = engine.model.vae_scale_factor
        latents = torch.randn(1, 4, args.size // scale, args.size // scale, device=device)
        preview_ms, _ = median_seconds(
            lambda: engine.previewer.jpeg(latents, args.size, args.size), 50, device
        )
        preview_ms *= 1000
        results["step_ms"] = step_ms
        results["preview_ms"] = preview_ms
        share = 100 * preview_ms / step_ms
        line = f"one step {step_ms:.1f} ms; one preview {preview_ms:.2f} ms ({share:.1f} % of a step"
        if args.preview_every:
            line += (
                f"; {share / args.preview_every:.2f} % of the loop at one every {args.preview_every} steps"
            )
        print(line + ")", flush=True)
        if device.type == "cuda":
            results["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    finally:
        engine.close()
    return node_s


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--preview-every", type=int, default=5, help="node previews (0 = none)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the node's UNet and VAE (CUDA)")
    parser.add_argument("--compile-mode", default="max-autotune-no-cudagraphs")
    parser.add_argument("--skip-stock", action="store_true")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads for both sides (0 = torch default)"
    )
    args = parser.parse_args()

    device = loading.resolve_device(args.device)
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
    if device.type == "cpu":
        what = "built-in tiny SDXL-architecture test model, float32"
    else:
        what = "full-size SDXL architecture, random weights"
    print(f"model: {what}; {args.size}x{args.size}, {args.steps} steps, guidance {args.guidance}", flush=True)

    request = RenderRequest(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        width=args.size,
        height=args.size,
        steps=args.steps,
        guidance=args.guidance,
        seed=42,
        preview_every=args.preview_every,
    )
    results: dict[str, Any] = {"device": machine(device), "versions": versions(), "steps": args.steps}

    node_s = time_node(args, device, model_dir, request, results)
    if device.type == "cuda":
        torch.cuda.empty_cache()

    if not args.skip_stock:
        stock = stock_contestant(device, model_dir)

        def stock_run() -> None:
            with torch.no_grad():
                stock(
                    prompt=PROMPT,
                    negative_prompt=NEGATIVE,
                    width=args.size,
                    height=args.size,
                    num_inference_steps=args.steps,
                    guidance_scale=args.guidance,
                    generator=torch.Generator("cpu").manual_seed(42),
                )

        stock_run()  # warm-up
        stock_s, stock_all = median_seconds(stock_run, args.repeats, device)
        results["stock_seconds"] = stock_s
        results["speedup"] = stock_s / node_s
        print(f"stock: {stock_s:.3f} s/image (runs {', '.join(f'{t:.3f}' for t in stock_all)})")
        print(f"node is {stock_s / node_s:.2f}x stock diffusers")

    peak = peak_tflops(device)
    if peak is not None:
        limit = COMPUTE_TFLOP_PER_IMAGE / peak
        results["compute_limit_seconds"] = limit
        results["node_over_limit"] = node_s / limit
        print(
            f"compute limit {limit:.3f} s/image ({COMPUTE_TFLOP_PER_IMAGE:.0f} TFLOP at {peak:.0f} TFLOP/s); "
            f"node at {node_s / limit:.2f}x the limit"
        )
    elif device.type == "cuda":
        print("compute limit: unknown GPU; set BENCH_PEAK_TFLOPS to compare")
    else:
        print(
            f"compute limit: {COMPUTE_TFLOP_PER_IMAGE:.0f} TFLOP per image is the full-size model's; "
            "the ratio to it is only meaningful on a GPU run, not for the tiny model on a CPU"
        )
    print("RESULT " + json.dumps(results), flush=True)
    if scratch is not None:
        scratch.cleanup()


if __name__ == "__main__":
    main()
