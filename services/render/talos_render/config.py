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
    # The relay is verified over TLS against this CA bundle, or the system roots when empty.
    # A relay on loopback is dialled in plaintext unless a CA file is given; anything else
    # only over TLS, unless insecure says plaintext (the token then crosses in the clear).
    ca_file: Path | None = None
    insecure: bool = False
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
    # torch.compile the UNet and the VAE decoder on CUDA: "auto" (on when a C compiler is
    # found, which Triton needs at run time), "on" (a start-up error without one) or "off".
    compile: str = "auto"
    # The inductor mode. CUDA graphs are captured by the node itself (``cuda_graphs``), one per
    # size and batch bucket, so modes that add their own (reduce-overhead, max-autotune) are refused.
    compile_mode: str = "default"
    # Capture the UNet in CUDA graphs, one per size and batch bucket, at warm-up (CUDA only).
    cuda_graphs: bool = True
    # SDPA backend for attention on CUDA: "auto" (the fastest of flash, cudnn and efficient,
    # measured at warm-up), or one of flash, cudnn, efficient, math.
    attention: str = "auto"
    # Float8 (dynamic activation and weight, per row) UNet linear layers through torchao (CUDA,
    # compute capability 8.9 or newer). Off until measured on the target GPU.
    fp8: bool = False
    # Sizes the node renders (WIDTHxHEIGHT); other sizes are refused as unsupported.
    sizes: tuple[str, ...] = ("1024x1024", "832x1216", "1216x832")
    # Jobs taken at once (across all relay streams), told to the relay in Hello.concurrency;
    # more are refused with JobRejected(reason="busy"). 0 = auto: max_batch on CUDA, 1 on a CPU.
    concurrency: int = 0
    # Jobs denoised together in one UNet batch (each with its own rows; CFG jobs take two).
    # Jobs taken beyond it wait for a free place, which opens between steps.
    max_batch: int = 8
    # How long an idle node waits after a job arrives for more to start with it (they may
    # still join later, between steps). Not used when concurrency is 1.
    batch_window_ms: float = 10.0
    # Threads that finish live previews (device-to-host copy wait, JPEG encoding).
    preview_threads: int = 2
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


# COMPILE's values: None = when a C compiler is found.
COMPILE_VALUES: dict[str, bool | None] = {
    "auto": None,
    "on": True,
    "true": True,
    "off": False,
    "false": False,
}
# Inductor modes that capture CUDA graphs of their own; the node captures its own instead.
MODES_WITH_CUDA_GRAPHS = ("reduce-overhead", "max-autotune")
ATTENTION_CHOICES = ("auto", "flash", "cudnn", "efficient", "math")


def concurrency(settings: Settings, device_type: str) -> int:
    """Jobs the node takes at once: the setting, or (0) max_batch on CUDA and 1 on a CPU."""
    if settings.concurrency > 0:
        return settings.concurrency
    return max(1, settings.max_batch) if device_type == "cuda" else 1


def check(settings: Settings) -> None:
    """Start-up validation of the settings that have a fixed set of values (ValueError names them)."""
    for size in settings.sizes:
        parse_size(size)
    if settings.ca_file is not None and not settings.ca_file.is_file():
        raise ValueError(f"{PREFIX}CA_FILE={settings.ca_file}: no such file")
    if settings.compile.strip().lower() not in COMPILE_VALUES:
        raise ValueError(f"{PREFIX}COMPILE={settings.compile!r}: use auto, on or off")
    if settings.compile_mode in MODES_WITH_CUDA_GRAPHS:
        raise ValueError(
            f"{PREFIX}COMPILE_MODE={settings.compile_mode!r} captures CUDA graphs of its own; the node "
            "captures them itself (TALOS_RENDER_CUDA_GRAPHS): use default or max-autotune-no-cudagraphs"
        )
    if settings.attention.strip().lower() not in ATTENTION_CHOICES:
        raise ValueError(
            f"{PREFIX}ATTENTION={settings.attention!r}: use one of {', '.join(ATTENTION_CHOICES)}"
        )
    if settings.max_batch < 1:
        raise ValueError(f"{PREFIX}MAX_BATCH={settings.max_batch}: at least 1")
    if settings.batch_window_ms < 0:
        raise ValueError(f"{PREFIX}BATCH_WINDOW_MS={settings.batch_window_ms}: not negative")


def compile_wanted(settings: Settings) -> bool | None:
    """True (on), False (off) or None (auto) from the COMPILE setting."""
    return COMPILE_VALUES.get(settings.compile.strip().lower())
