"""What "same seed, same image" allows once a job shares its batch, as the tests check it.

Measured with the built-in test model on a CPU (docs/render.md, *Batching*): a job inside a
batch of 2 or 4 was at most 1 level (of 255) off its picture rendered alone, on fewer than 1
in 10,000 values (PSNR above 90 dB). The bound leaves room for another CPU's kernels.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image

from talos_render.engine import Engine

MAX_LEVELS = 2
MIN_PSNR_DB = 70.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def assert_same_picture(batched: np.ndarray, alone: np.ndarray) -> None:
    assert batched.shape == alone.shape
    levels = int(np.abs(batched.astype(np.int16) - alone.astype(np.int16)).max())
    assert levels <= MAX_LEVELS, f"{levels} levels off the seed's picture alone"
    assert psnr(batched, alone) >= MIN_PSNR_DB


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@contextmanager
def unet_batches(engine: Engine) -> Iterator[list[int]]:
    """The batch size of every UNet forward pass (observed with a hook, not replaced)."""
    seen: list[int] = []
    handle = engine.model.pipe.unet.register_forward_pre_hook(
        lambda _module, args, kwargs: seen.append(int((args[0] if args else kwargs["sample"]).shape[0])),
        with_kwargs=True,
    )
    try:
        yield seen
    finally:
        handle.remove()
