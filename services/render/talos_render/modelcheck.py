"""Checks of a model path that need no torch, so a wrong path fails in a second at start."""

from __future__ import annotations

import json
from pathlib import Path

from talos_render.config import BUILTIN, Settings

# Pipeline parts a folder must have; a diffusers folder says where each lives in model_index.json.
PARTS = ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")


class ModelError(RuntimeError):
    """The model cannot be loaded; the message names the path and what is wrong."""


def check_diffusers_folder(folder: Path) -> None:
    """A diffusers SDXL folder: model_index.json naming every part, each part present."""
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise ModelError(f"model folder {folder} has no model_index.json (not a diffusers folder)")
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{index_path} is not valid JSON: {exc}") from exc
    if not isinstance(index, dict):
        raise ModelError(f"{index_path} is not a diffusers model index")
    missing = [part for part in PARTS if not isinstance(index.get(part), list) or index[part][0] is None]
    if missing:
        raise ModelError(f"model folder {folder} is not an SDXL pipeline: model_index.json lacks {missing}")
    for part in PARTS:
        if not (folder / part).is_dir():
            raise ModelError(f"model folder {folder} lacks the {part}/ subfolder")


def precheck(settings: Settings) -> None:
    """Everything about the model path that can be checked without loading it."""
    if settings.model.strip() == BUILTIN:
        return
    path = Path(settings.model).expanduser()
    if not path.exists():
        raise ModelError(f"model path {path} does not exist")
    if path.is_dir():
        check_diffusers_folder(path)
    elif path.suffix != ".safetensors":
        raise ModelError(f"model path {path} is neither a diffusers folder nor a .safetensors file")
    elif settings.config_dir is None:
        raise ModelError(
            f"model {path} is a single-file checkpoint: set TALOS_RENDER_CONFIG_DIR (or --config-dir) "
            "to a local diffusers-layout folder with its configs and tokenizers"
        )
    elif not settings.config_dir.is_dir():
        raise ModelError(f"config folder {settings.config_dir} (for {path}) does not exist")
