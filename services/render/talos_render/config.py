"""The render node's settings, read once from ``TALOS_RENDER_*`` environment variables.

``talos-render --relay HOST:PORT --token TOKEN --model PATH`` overrides the matching
variables; everything else is set through the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PREFIX = "TALOS_RENDER_"

BUILTIN = "builtin"


@dataclass(frozen=True)
class Settings:
    # The relay as HOST:PORT. A name may resolve to several addresses (one per gateway replica,
    # as a Kubernetes headless Service gives them): the node keeps one stream to each. Several
    # relays may be listed, separated by commas.
    relay: str = "127.0.0.1:50052"
    # The node token billing issued; sent as `authorization: Bearer <token>`, never logged.
    token: str = ""
    # "builtin" (the tiny test model), a diffusers folder, or a single .safetensors checkpoint.
    model: str = BUILTIN
    # For a single-file checkpoint: a local diffusers-layout folder with the configs and
    # tokenizers (model_index.json, unet/config.json, ...). Never fetched from a hub.
    config_dir: Path | None = None
    # Where the built-in test model is cached (weights only; never images or prompts).
    data_dir: Path = Path("var")
    # auto, cpu or cuda (or cuda:N).
    device: str = "auto"
    # torch's CPU threads (0 = torch's default, one per core). One is the default: the CPU
    # does little on a GPU node, and on a shared CPU, two OpenMP threads that keep waiting for
    # each other ran ten times slower than one (bench/RESULTS.md, Render).
    cpu_threads: int = 1
    # auto (bf16 on CUDA, float32 on a CPU), bf16, fp16 or fp32.
    dtype: str = "auto"
    # torch.compile the UNet (and VAE decoder) on CUDA; one warm-up per size at start.
    compile: bool = False
    # The torch.compile mode when compile is on.
    compile_mode: str = "max-autotune-no-cudagraphs"
    # Sizes the node renders (WIDTHxHEIGHT); other sizes are refused as unsupported.
    sizes: tuple[str, ...] = ("1024x1024", "832x1216", "1216x832")
    # Jobs run at once; more are refused with JobRejected(reason="busy").
    concurrency: int = 1
    # gRPC health service.
    health_host: str = "127.0.0.1"
    health_port: int = 50071
    # Prometheus metrics over HTTP.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9471
    # The smallest preview interval the node honours: a job asking for previews more often
    # gets one every this many steps (a job asking for none, 0, gets none).
    preview_every: int = 1
    # Longest side of a live preview in pixels.
    preview_size: int = 128
    # Steps a job may ask for at most.
    max_steps: int = 100
    # Steps of the warm-up generation at start (at 1024x1024 unless the model is builtin).
    warmup_steps: int = 2
    log_level: str = "info"
    # Reconnect back-off: doubles from min to max seconds, with jitter.
    reconnect_min_seconds: float = 0.25
    reconnect_max_seconds: float = 15.0
    # Seconds between DNS look-ups of the relay name.
    resolve_every_seconds: float = 30.0
    # On SIGTERM: seconds the job in hand may take to finish before it is handed back.
    shutdown_grace_seconds: float = 20.0


def parse_size(text: str) -> tuple[int, int]:
    """``"1024x1024"`` -> (1024, 1024); a ValueError naming the setting for anything else."""
    width, _, height = text.lower().partition("x")
    try:
        size = int(width), int(height)
    except ValueError:
        size = (0, 0)
    if min(size) < 1:
        raise ValueError(f"{PREFIX}SIZES: {text!r} is not WIDTHxHEIGHT (for example 1024x1024)")
    return size
