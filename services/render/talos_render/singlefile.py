"""Single-file SDXL checkpoints (the original Stability layout) with a local config folder.

Loading converts each part with diffusers' own converters and then loads it *strictly*: a
part whose weights are missing from the file is an error naming the file, never a silently
random (or silently borrowed) module. This matters because of a known trap: transformers 5
saves ``CLIPTextModel`` without the ``text_model.`` key prefix, and a checkpoint written from
such a state dict has ``conditioner.embedders.0.transformer.embeddings...`` keys, which
``from_single_file`` does not recognise and skips. We add the prefix back (and say so).

:func:`export` writes a diffusers pipeline back to that layout. The node never needs it; it
exists so the single-file path can be tested end to end with the built-in model
(``talos-render export-single-file``).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

UNET = "model.diffusion_model."
VAE = "first_stage_model."
TE1 = "conditioner.embedders.0.transformer."
TE2 = "conditioner.embedders.1.model."

CONFIG_FILES = (
    "model_index.json",
    "unet/config.json",
    "vae/config.json",
    "text_encoder/config.json",
    "text_encoder_2/config.json",
    "scheduler/scheduler_config.json",
)


class CheckpointError(ValueError):
    """The checkpoint or its config folder does not make a complete SDXL pipeline."""


# -- loading -------------------------------------------------------------------------------


def normalize(checkpoint: dict[str, torch.Tensor]) -> list[str]:
    """Repairs known key-layout problems in place; returns what it changed, for the log."""
    fixes: list[str] = []
    flat = [k for k in checkpoint if k.startswith(TE1) and not k.startswith(TE1 + "text_model.")]
    flat = [
        k for k in flat if k[len(TE1) :].split(".", 1)[0] in ("embeddings", "encoder", "final_layer_norm")
    ]
    if flat:
        for key in flat:
            checkpoint[TE1 + "text_model." + key[len(TE1) :]] = checkpoint.pop(key)
        fixes.append(f"added the text_model. prefix to {len(flat)} first-text-encoder keys")
    return fixes


@contextlib.contextmanager
def _skip_random_init() -> Iterator[None]:
    """Builds modules without random initialisation (every weight is loaded strictly after)."""
    names = [
        "uniform_",
        "normal_",
        "trunc_normal_",
        "kaiming_uniform_",
        "kaiming_normal_",
        "xavier_uniform_",
        "xavier_normal_",
        "orthogonal_",
    ]
    saved = {name: getattr(torch.nn.init, name) for name in names}

    def keep(tensor: torch.Tensor, *_args: Any, **_kwargs: Any) -> torch.Tensor:
        return tensor

    try:
        for name in names:
            setattr(torch.nn.init, name, keep)
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)


def _load_strict(module: torch.nn.Module, weights: dict[str, torch.Tensor], part: str, path: Path) -> None:
    if not weights:
        raise CheckpointError(f"{path} has no weights for the {part}")
    missing, unexpected = module.load_state_dict(weights, strict=False)
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise CheckpointError(f"{path}: the {part} lacks {len(missing)} weights ({shown})")
    if unexpected:
        log.warning("checkpoint keys not used", extra={"part": part, "count": len(unexpected)})


def check_config_dir(config_dir: Path) -> dict[str, Any]:
    if not config_dir.is_dir():
        raise CheckpointError(f"config folder {config_dir} does not exist")
    for name in CONFIG_FILES:
        if not (config_dir / name).is_file():
            raise CheckpointError(f"config folder {config_dir} lacks {name}")
    for name in ("tokenizer", "tokenizer_2"):
        if not (config_dir / name).is_dir():
            raise CheckpointError(f"config folder {config_dir} lacks {name}/")
    index = json.loads((config_dir / "model_index.json").read_text(encoding="utf-8"))
    return dict(index)


def load_pipeline(path: Path, config_dir: Path, dtype: torch.dtype) -> Any:
    """An SDXL pipeline from ``path`` (one .safetensors) and ``config_dir`` (configs, tokenizers)."""
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )
    from safetensors.torch import load_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    index = check_config_dir(config_dir)
    checkpoint = load_file(str(path))
    while "state_dict" in checkpoint:  # some trainers nest it
        checkpoint = checkpoint["state_dict"]  # type: ignore[assignment]
    for fix in normalize(checkpoint):
        log.warning("repaired checkpoint keys", extra={"fix": fix})
    for prefix, part in (
        (UNET, "UNet"),
        (VAE, "VAE"),
        (TE1, "first text encoder"),
        (TE2, "second text encoder"),
    ):
        if not any(key.startswith(prefix) for key in checkpoint):
            raise CheckpointError(f"{path} has no {part} weights (no {prefix}* keys): not an SDXL checkpoint")

    folder = str(config_dir)
    with _skip_random_init():
        unet_config = UNet2DConditionModel.load_config(folder, subfolder="unet", local_files_only=True)
        unet = UNet2DConditionModel.from_config(unet_config)
        _load_strict(unet, convert_ldm_unet_checkpoint(checkpoint, unet_config), "UNet", path)

        vae_config = AutoencoderKL.load_config(folder, subfolder="vae", local_files_only=True)
        vae = AutoencoderKL.from_config(vae_config)
        _load_strict(vae, convert_ldm_vae_checkpoint(checkpoint, vae_config), "VAE", path)

        te1_config = CLIPTextConfig.from_pretrained(folder, subfolder="text_encoder", local_files_only=True)
        text_encoder = CLIPTextModel(te1_config)
        te1 = convert_ldm_clip_checkpoint(checkpoint)
        te1 = {k: v for k, v in te1.items() if not k.startswith("text_projection")}
        if not hasattr(text_encoder, "text_model"):  # transformers >= 5.6 flattened CLIPTextModel
            te1 = {k.removeprefix("text_model."): v for k, v in te1.items()}
        _load_strict(text_encoder, te1, "first text encoder", path)

        te2_config = CLIPTextConfig.from_pretrained(folder, subfolder="text_encoder_2", local_files_only=True)
        text_encoder_2 = CLIPTextModelWithProjection(te2_config)
        te2 = convert_open_clip_checkpoint(text_encoder_2, checkpoint, prefix=TE2)
        _load_strict(text_encoder_2, te2, "second text encoder", path)

    def from_config_dir(name: str) -> Any:
        library, class_name = index[name]
        cls = getattr(importlib.import_module(library), class_name)
        return cls.from_pretrained(folder, subfolder=name, local_files_only=True)

    pipe: Any = StableDiffusionXLPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        text_encoder_2=text_encoder_2.eval(),
        tokenizer=from_config_dir("tokenizer"),
        tokenizer_2=from_config_dir("tokenizer_2"),
        unet=unet.eval(),
        scheduler=from_config_dir("scheduler"),
        force_zeros_for_empty_prompt=bool(index.get("force_zeros_for_empty_prompt", True)),
        add_watermarker=False,
    )
    return pipe.to(dtype=dtype)


# -- export (diffusers → original layout) --------------------------------------------------

_RESNET = (
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("time_emb_proj.", "emb_layers.1."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("conv_shortcut.", "skip_connection."),
)


def _rename(key: str, prefixes: list[tuple[str, str, str]]) -> str:
    for new, old, kind in prefixes:
        if key.startswith(new):
            rest = key[len(new) :]
            if kind == "unet_resnet":
                for a, b in _RESNET:
                    if rest.startswith(a):
                        rest = b + rest[len(a) :]
                        break
            elif kind == "vae_resnet":
                rest = rest.replace("conv_shortcut.", "nin_shortcut.")
            elif kind == "vae_attention":
                for a, b in (
                    ("group_norm.", "norm."),
                    ("to_q.", "q."),
                    ("to_k.", "k."),
                    ("to_v.", "v."),
                    ("to_out.0.", "proj_out."),
                ):
                    if rest.startswith(a):
                        rest = b + rest[len(a) :]
                        break
            return old + rest
    raise CheckpointError(f"no original-layout name for {key}")


def unet_to_original(state: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    layers = int(config["layers_per_block"])
    downs = list(config["down_block_types"])
    ups = list(config["up_block_types"])
    n = len(downs)
    table: list[tuple[str, str, str]] = [
        ("time_embedding.linear_1.", "time_embed.0.", ""),
        ("time_embedding.linear_2.", "time_embed.2.", ""),
        ("add_embedding.linear_1.", "label_emb.0.0.", ""),
        ("add_embedding.linear_2.", "label_emb.0.2.", ""),
        ("conv_in.", "input_blocks.0.0.", ""),
        ("conv_norm_out.", "out.0.", ""),
        ("conv_out.", "out.2.", ""),
        ("mid_block.resnets.0.", "middle_block.0.", "unet_resnet"),
        ("mid_block.attentions.0.", "middle_block.1.", ""),
        ("mid_block.resnets.1.", "middle_block.2.", "unet_resnet"),
    ]
    for i in range(n):
        for j in range(layers):
            k = (layers + 1) * i + j + 1
            table.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{k}.0.", "unet_resnet"))
            table.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{k}.1.", ""))
        if i < n - 1:
            table.append(
                (f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(layers + 1) * (i + 1)}.0.op.", "")
            )
        attention = "CrossAttn" in ups[i]
        for j in range(layers + 1):
            k = (layers + 1) * i + j
            table.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{k}.0.", "unet_resnet"))
            table.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{k}.1.", ""))
        if i < n - 1:
            k = (layers + 1) * i + layers
            table.append(
                (f"up_blocks.{i}.upsamplers.0.conv.", f"output_blocks.{k}.{2 if attention else 1}.conv.", "")
            )
    return {UNET + _rename(key, table): value for key, value in state.items()}


def vae_to_original(state: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    n = len(config["down_block_types"])
    table: list[tuple[str, str, str]] = [
        ("encoder.conv_norm_out.", "encoder.norm_out.", ""),
        ("decoder.conv_norm_out.", "decoder.norm_out.", ""),
        ("encoder.conv_in.", "encoder.conv_in.", ""),
        ("encoder.conv_out.", "encoder.conv_out.", ""),
        ("decoder.conv_in.", "decoder.conv_in.", ""),
        ("decoder.conv_out.", "decoder.conv_out.", ""),
        ("quant_conv.", "quant_conv.", ""),
        ("post_quant_conv.", "post_quant_conv.", ""),
    ]
    for side in ("encoder", "decoder"):
        table.append((f"{side}.mid_block.resnets.0.", f"{side}.mid.block_1.", "vae_resnet"))
        table.append((f"{side}.mid_block.resnets.1.", f"{side}.mid.block_2.", "vae_resnet"))
        table.append((f"{side}.mid_block.attentions.0.", f"{side}.mid.attn_1.", "vae_attention"))
    for i in range(n):
        table.append((f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block.", "vae_resnet"))
        table.append(
            (f"encoder.down_blocks.{i}.downsamplers.0.conv.", f"encoder.down.{i}.downsample.conv.", "")
        )
        table.append((f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{n - 1 - i}.block.", "vae_resnet"))
        table.append(
            (f"decoder.up_blocks.{i}.upsamplers.0.conv.", f"decoder.up.{n - 1 - i}.upsample.conv.", "")
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = _rename(key, table)
        if ".mid.attn_1." in name and name.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]  # the original attention projections are 1x1 convolutions
        out[VAE + name] = value
    return out


def text_encoder_to_original(
    state: dict[str, torch.Tensor], flatten: bool = False
) -> dict[str, torch.Tensor]:
    """The first (OpenAI CLIP) encoder; ``flatten`` reproduces the transformers-5 layout trap."""
    out = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        bare = key.removeprefix("text_model.")
        out[TE1 + (bare if flatten else "text_model." + bare)] = value
    return out


def text_encoder_2_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The second (OpenCLIP) encoder, with q/k/v fused into in_proj as OpenCLIP keeps them."""
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        bare = key.removeprefix("text_model.")
        if bare == "text_projection.weight":
            out[TE2 + "text_projection"] = value.T.contiguous()
        elif bare == "embeddings.token_embedding.weight":
            out[TE2 + "token_embedding.weight"] = value
        elif bare == "embeddings.position_embedding.weight":
            out[TE2 + "positional_embedding"] = value
        elif bare.startswith("final_layer_norm."):
            out[TE2 + "ln_final." + bare.split(".", 1)[1]] = value
        elif bare.startswith("encoder.layers."):
            _, _, number, rest = bare.split(".", 3)
            block = f"{TE2}transformer.resblocks.{number}."
            if rest.startswith("self_attn.") and rest.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                _, proj, kind = rest.split(".")
                fused.setdefault(block + kind, {})[proj] = value
                continue
            for a, b in (
                ("self_attn.out_proj.", "attn.out_proj."),
                ("layer_norm1.", "ln_1."),
                ("layer_norm2.", "ln_2."),
                ("mlp.fc1.", "mlp.c_fc."),
                ("mlp.fc2.", "mlp.c_proj."),
            ):
                if rest.startswith(a):
                    out[block + b + rest[len(a) :]] = value
                    break
            else:
                raise CheckpointError(f"no original-layout name for {key}")
        else:
            raise CheckpointError(f"no original-layout name for {key}")
    for name, parts in fused.items():
        block, kind = name.rsplit(".", 1)
        out[f"{block}.attn.in_proj_{kind}"] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]])
    return out


def export(pipe: Any, out: Path, flatten_first_text_encoder: bool = False) -> Path:
    """Writes ``pipe``'s weights as one original-layout SDXL .safetensors file."""
    from safetensors.torch import save_file

    state: dict[str, torch.Tensor] = {}
    state.update(unet_to_original(pipe.unet.state_dict(), pipe.unet.config))
    state.update(vae_to_original(pipe.vae.state_dict(), pipe.vae.config))
    state.update(text_encoder_to_original(pipe.text_encoder.state_dict(), flatten_first_text_encoder))
    state.update(text_encoder_2_to_original(pipe.text_encoder_2.state_dict()))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(out))
    return out
