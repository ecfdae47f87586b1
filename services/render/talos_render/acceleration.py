"""The CUDA fast path: bf16 everywhere (set at load), SDPA with fused QKV projections,
channels-last, TF32, optional float8 linear layers, ``torch.compile`` of the UNet and the VAE
decoder, the UNet captured in CUDA graphs, and the attention backend picked by measurement.

Nothing here runs on a CPU: the built-in test model on a CPU takes the plain eager path.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from talos_render.config import Settings, compile_wanted
from talos_render.loading import LoadedModel, ModelError

log = logging.getLogger(__name__)

# Setting value -> torch.nn.attention.SDPBackend member name.
ATTENTION_BACKENDS = {
    "flash": "FLASH_ATTENTION",
    "cudnn": "CUDNN_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "math": "MATH",
}
# Measured at warm-up when the setting is "auto"; math is never the fastest on a GPU.
MEASURED = ("flash", "cudnn", "efficient")


@dataclass(frozen=True)
class Acceleration:
    """How the engine uses a CUDA device (ignored on a CPU)."""

    compile: bool | None = None  # None: when a C compiler is found
    compile_mode: str = "default"
    cuda_graphs: bool = True
    attention: str = "auto"
    fp8: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Acceleration:
        return cls(
            compile=compile_wanted(settings),
            compile_mode=settings.compile_mode,
            cuda_graphs=settings.cuda_graphs,
            attention=settings.attention.strip().lower(),
            fp8=settings.fp8,
        )

    @classmethod
    def eager(cls) -> Acceleration:
        return cls(compile=False, cuda_graphs=False)


def c_compiler() -> str | None:
    """Triton builds a small C helper at run time; without a compiler, compiling fails late."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def compile_enabled(acceleration: Acceleration, device: torch.device) -> bool:
    if device.type != "cuda" or acceleration.compile is False:
        return False
    if c_compiler() is None:
        if acceleration.compile:
            raise ModelError("TALOS_RENDER_COMPILE=on needs a C compiler (cc or gcc) at run time")
        log.warning("no C compiler found: torch.compile is off (CUDA graphs stay on)")
        return False
    return True


def optimize(model: LoadedModel, acceleration: Acceleration) -> None:
    """The eager-level fast path, applied once at start (CUDA only)."""
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
    if acceleration.fp8:
        quantize_fp8(pipe.unet)


def quantize_fp8(unet: Any) -> None:
    """Float8 dynamic-activation, float8-weight linear layers (per-row scales) via torchao."""
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) < (8, 9):
        raise ModelError(f"TALOS_RENDER_FP8 needs compute capability 8.9 or newer, not {major}.{minor}")
    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_
    except ImportError as exc:
        raise ModelError(f"TALOS_RENDER_FP8 needs torchao: {exc}") from exc

    def worth_it(module: torch.nn.Module, _name: str) -> bool:
        # float8 GEMMs want dimensions divisible by 16; small layers gain nothing.
        return (
            isinstance(module, torch.nn.Linear)
            and module.in_features % 16 == 0
            and module.out_features % 16 == 0
            and module.in_features >= 256
        )

    quantize_(unet, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()), filter_fn=worth_it)
    log.info("UNet linear layers quantized to float8")


def configure_compiler(sizes: int) -> None:
    """Static sizes, a symbolic batch: every marked batch dimension is dynamic, nothing else."""
    import torch._dynamo.config as dynamo
    import torch._inductor.config as inductor

    dynamo.automatic_dynamic_shapes = False
    dynamo.recompile_limit = max(dynamo.recompile_limit, 2 * sizes + 4)
    inductor.conv_1x1_as_mm = True
    inductor.epilogue_fusion = False
    # Coordinate-descent tuning of every Triton kernel would lengthen the warm-up a lot for a
    # few percent; the node has to be ready in minutes.


def compiled(function: Callable[..., Any], mode: str, *, dynamic: bool | None) -> Callable[..., Any]:
    return torch.compile(function, mode=mode, fullgraph=True, dynamic=dynamic)


def sdpa_backends(order: list[str]) -> list[Any]:
    from torch.nn.attention import SDPBackend

    return [getattr(SDPBackend, ATTENTION_BACKENDS[name]) for name in order]


def attention_order(first: str) -> list[str]:
    """The chosen backend first, the others after it for shapes it cannot take."""
    rest = [name for name in (*MEASURED, "math") if name != first]
    return [first, *rest]


def measure_attention(run: Callable[[], Any], candidates: tuple[str, ...] = MEASURED) -> dict[str, float]:
    """Milliseconds of ``run`` (one UNet pass) under each SDPA backend alone; a backend that
    cannot run the model's shapes is left out. Warm-up only: it synchronises the device."""
    from torch.nn.attention import sdpa_kernel

    timings: dict[str, float] = {}
    for name in candidates:
        backend = sdpa_backends([name])
        try:
            with sdpa_kernel(backend):
                run()  # first call: cuDNN autotuning, lazy initialisation
                torch.cuda.synchronize()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(3):
                    run()
                end.record()
                end.synchronize()
            timings[name] = start.elapsed_time(end) / 3
        except RuntimeError as exc:
            log.info("attention backend unavailable", extra={"backend": name, "error": str(exc)[:200]})
    return timings
