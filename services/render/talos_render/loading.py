"""Loads the model once, from local files only: the built-in test model, a diffusers folder,
or a single ``.safetensors`` checkpoint with a local config folder.

Nothing here may reach a model hub: ``HF_HUB_OFFLINE`` is set before diffusers or
transformers is imported and every call passes ``local_files_only=True``. A missing or broken
model is a :class:`ModelError` that names the path, raised at start, never at the first job.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import torch

from talos_render import tinymodel
from talos_render.config import BUILTIN, Settings
from talos_render.modelcheck import PARTS, ModelError, check_diffusers_folder, precheck

log = logging.getLogger(__name__)
# diffusers' schedulers call np.array() on tensors; numpy 2 warns about the copy keyword.
warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)

__all__ = ["PARTS", "LoadedModel", "ModelError", "load"]

DEFAULT_NAME = "aperture-hd"

# SDXL's latent-to-RGB map (rows: the 4 latent channels; columns: R, G, B), as used by
# ComfyUI's live previews; RGB comes out in [-1, 1].
SDXL_LATENT_RGB: dict[str, Any] = {
    "factors": [
        [0.3920, 0.4054, 0.4549],
        [-0.2634, -0.0196, 0.0653],
        [0.0568, 0.1687, -0.0755],
        [-0.3112, -0.2359, -0.2076],
    ],
    "bias": [0.1084, -0.0175, -0.0011],
}


@dataclass
class LoadedModel:
    pipe: Any  # StableDiffusionXLPipeline
    name: str
    source: str
    device: torch.device
    dtype: torch.dtype
    latent_rgb: dict[str, Any]
    load_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def vae_scale_factor(self) -> int:
        return int(self.pipe.vae_scale_factor)

    def describe_device(self) -> str:
        if self.device.type == "cuda":
            return f"cuda:{torch.cuda.get_device_name(self.device)}"
        return self.device.type


def quiet_libraries() -> None:
    """No progress bars or advisory chatter from diffusers/transformers on our JSON stderr."""
    from diffusers.utils import logging as dlogging
    from transformers.utils import logging as tlogging

    dlogging.set_verbosity_error()
    dlogging.disable_progress_bar()
    tlogging.set_verbosity_error()
    tlogging.disable_progress_bar()


def resolve_device(setting: str) -> torch.device:
    value = setting.strip().lower() or "auto"
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(value)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"TALOS_RENDER_DEVICE={setting!r} but no CUDA device is available")
    if device.type not in ("cpu", "cuda"):
        raise ModelError(f"TALOS_RENDER_DEVICE={setting!r}: only auto, cpu and cuda are supported")
    return device


def resolve_dtype(setting: str, device: torch.device) -> torch.dtype:
    value = setting.strip().lower() or "auto"
    if value == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
        "fp32": torch.float32,
        "float32": torch.float32,
    }
    if value not in table:
        raise ModelError(f"TALOS_RENDER_DTYPE={setting!r}: use auto, bf16, fp16 or fp32")
    return table[value]


def model_path(settings: Settings) -> Path:
    """The folder or file the node loads (building the built-in model on first use)."""
    if settings.model.strip() == BUILTIN:
        try:
            return tinymodel.cached(settings.data_dir)
        except tinymodel.VocabularyMissing as exc:
            raise ModelError(f"cannot build the built-in test model: {exc}") from exc
        except OSError as exc:
            raise ModelError(
                f"cannot build the built-in test model under {settings.data_dir / 'models'}: {exc}"
            ) from exc
    return Path(settings.model).expanduser()


def _marker(folder: Path) -> dict[str, Any]:
    path = folder / tinymodel.MARKER
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is not valid JSON: {exc}") from exc
    return data if isinstance(data, dict) else {}


def _from_folder(folder: Path, dtype: torch.dtype) -> Any:
    from diffusers import StableDiffusionXLPipeline

    check_diffusers_folder(folder)
    return StableDiffusionXLPipeline.from_pretrained(
        str(folder), dtype=dtype, local_files_only=True, use_safetensors=True, add_watermarker=False
    )


def load(settings: Settings) -> LoadedModel:
    """Loads, validates and places the pipeline on its device. Raises ModelError."""
    started = time.perf_counter()
    if settings.cpu_threads > 0:
        torch.set_num_threads(settings.cpu_threads)
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    precheck(settings)
    path = model_path(settings)
    quiet_libraries()
    marker: dict[str, Any] = {}
    try:
        if path.is_dir():
            marker = _marker(path)
            pipe = _from_folder(path, dtype)
        else:
            from talos_render import singlefile

            assert settings.config_dir is not None  # precheck made sure
            pipe = singlefile.load_pipeline(path, settings.config_dir, dtype)
    except ModelError:
        raise
    except Exception as exc:  # every loader failure becomes one clear line naming the path
        raise ModelError(f"cannot load the model from {path}: {type(exc).__name__}: {exc}") from exc
    validate(pipe, path)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    name = str(marker.get("name") or (tinymodel.NAME if settings.model == BUILTIN else DEFAULT_NAME))
    latent_rgb = marker.get("latent_rgb") or default_latent_rgb(pipe)
    return LoadedModel(
        pipe=pipe,
        name=name,
        source=str(path),
        device=device,
        dtype=dtype,
        latent_rgb=latent_rgb,
        load_seconds=time.perf_counter() - started,
    )


def default_latent_rgb(pipe: Any) -> dict[str, Any]:
    channels = int(pipe.unet.config.in_channels)
    if channels == 4:
        return SDXL_LATENT_RGB
    # An unknown latent space: show the first three channels as colours.
    factors = [[1.0 if row == col else 0.0 for col in range(3)] for row in range(channels)]
    return {"factors": factors, "bias": [0.0, 0.0, 0.0]}


def validate(pipe: Any, path: Path) -> None:
    """The pipeline is an SDXL pipeline with every weight really loaded."""
    for part in PARTS:
        if getattr(pipe, part, None) is None:
            raise ModelError(f"model {path} has no {part}")
    if getattr(pipe.unet.config, "addition_embed_type", None) != "text_time":
        raise ModelError(f"model {path} is not an SDXL-architecture UNet (addition_embed_type != text_time)")
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, part)
        for tensor_name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if tensor.device.type == "meta":
                raise ModelError(f"model {path}: {part} weight {tensor_name} was never loaded")
    cross = int(pipe.text_encoder.config.hidden_size) + int(pipe.text_encoder_2.config.hidden_size)
    if int(pipe.unet.config.cross_attention_dim) != cross:
        raise ModelError(
            f"model {path}: the UNet's cross_attention_dim {pipe.unet.config.cross_attention_dim} "
            f"does not match the text encoders ({cross})"
        )
