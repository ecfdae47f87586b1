"""Moderation settings, read once from ``TALOS_MODERATION_*`` environment variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PREFIX = "TALOS_MODERATION_"
MiB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 50062
    log_level: str = "info"
    # The prompt rules: a folder holding manifest.json, a manifest, or a single rule file; empty
    # means the folder shipped in the package (talos_moderation/policy/rules/). Missing,
    # unparseable or of the wrong shape: every prompt is blocked.
    rules_path: Path | None = None
    # Prompts longer than this are blocked unread (the gateway caps prompts far below it).
    max_prompt_chars: int = 20_000
    # open_nsfw probability at or above which an image is blocked with 18+ off.
    # See docs/moderation.md for why 0.35 and not the package's 0.5.
    nsfw_threshold: float = 0.35
    # Decoded size cap, checked from the header before any pixel is decoded.
    # Renders are at most ~1 MP (1216x832); 2048x2048 leaves room for upscaled outputs.
    max_image_pixels: int = 2048 * 2048
    # Encoded size cap; the gateway's own cap on node results is 24 MiB.
    max_image_bytes: int = 24 * MiB
    # onnxruntime threads per inference and how many inferences run at once.
    onnx_threads: int = 1
    classify_workers: int = 2
    # auto: CUDA when onnxruntime offers it, else CPU; cpu; cuda (fail at start without it).
    device: str = "auto"
    # Probing cooldown, per account: cooldown_burst blocks within cooldown_window_seconds start
    # a cooldown; each further burst escalates along cooldown_steps_seconds (last step repeats);
    # after cooldown_reset_seconds without a block the account starts from the first step again.
    cooldown_burst: int = 3
    cooldown_window_seconds: float = 600.0
    cooldown_steps_seconds: tuple[int, ...] = (180, 540, 900)
    cooldown_reset_seconds: float = 6 * 3600.0
    # Accounts tracked in memory at most (least recently blocked are forgotten first).
    cooldown_max_accounts: int = 100_000
    # On SIGTERM: calls in flight get this long to finish.
    drain_grace_seconds: float = 10.0
