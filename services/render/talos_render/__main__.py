"""``talos-render``: run a render node, or build the built-in test model.

    talos-render [--relay HOST:PORT] [--token TOKEN] [--model PATH|builtin] [--config-dir DIR]
    talos-render build-test-model DIR
    talos-render export-single-file MODEL_DIR OUT.safetensors [--flatten-first-text-encoder]

Every other setting comes from ``TALOS_RENDER_*`` environment variables (see config.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from talos_common import logs
from talos_common.service import fail, load_settings
from talos_common.service import main as run_service
from talos_render import config, modelcheck
from talos_render.config import PREFIX, Settings

log = logging.getLogger("talos_render")
PROGRAM = "talos-render"


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="talos-render", description="Run a TALOS render node.")
    parser.add_argument("--relay", help="relay HOST:PORT (TALOS_RENDER_RELAY)")
    parser.add_argument("--token", help="node token (TALOS_RENDER_TOKEN)")
    parser.add_argument(
        "--model", help="builtin, a diffusers folder or a .safetensors file (TALOS_RENDER_MODEL)"
    )
    parser.add_argument(
        "--config-dir", help="config folder for a single-file model (TALOS_RENDER_CONFIG_DIR)"
    )
    parser.add_argument("--device", help="auto, cpu or cuda (TALOS_RENDER_DEVICE)")
    parser.add_argument("--data-dir", help="where the built-in model is cached (TALOS_RENDER_DATA_DIR)")
    parser.add_argument(
        "--ca-file", help="verify the relay's TLS certificate against this CA bundle (TALOS_RENDER_CA_FILE)"
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="dial a relay that is not on loopback in plaintext: the token crosses in the clear "
        "(TALOS_RENDER_INSECURE)",
    )
    return parser


def build_test_model(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="talos-render build-test-model",
        description="Write the built-in tiny SDXL-architecture test model as a diffusers folder.",
    )
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    from talos_render import loading, tinymodel

    loading.quiet_libraries()
    folder = tinymodel.save(args.folder)
    print(f"built {tinymodel.NAME} v{tinymodel.VERSION} in {folder}")
    return 0


def export_single_file(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="talos-render export-single-file",
        description="Write a diffusers SDXL folder as one original-layout .safetensors checkpoint.",
    )
    parser.add_argument("model", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--flatten-first-text-encoder",
        action="store_true",
        help="omit the text_model. prefix, as a transformers-5 state dict would (to test the repair)",
    )
    args = parser.parse_args(argv)
    from talos_render import loading, singlefile

    loading.quiet_libraries()
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(str(args.model), local_files_only=True)
    singlefile.export(pipe, args.out, flatten_first_text_encoder=args.flatten_first_text_encoder)
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "build-test-model":
        sys.exit(build_test_model(argv[1:]))
    if argv and argv[0] == "export-single-file":
        sys.exit(export_single_file(argv[1:]))
    args = _serve_parser().parse_args(argv)
    settings = load_settings(PROGRAM, Settings, PREFIX)
    overrides = {
        "relay": args.relay,
        "token": args.token,
        "model": args.model,
        "config_dir": Path(args.config_dir) if args.config_dir else None,
        "device": args.device,
        "data_dir": Path(args.data_dir) if args.data_dir else None,
        "ca_file": Path(args.ca_file) if args.ca_file else None,
        "insecure": args.insecure,
    }
    settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    logs.configure("render", settings.log_level)
    try:
        config.check(settings)  # a bad size or choice fails here, not after the model has loaded
    except ValueError as exc:
        fail(PROGRAM, str(exc))
    try:
        modelcheck.precheck(settings)  # fail fast, before importing torch
    except modelcheck.ModelError as exc:
        log.error("the model cannot be loaded", extra={"error": str(exc)})
        fail(PROGRAM, str(exc))

    from talos_render import loading
    from talos_render.node import create_server

    try:
        loaded = loading.load(settings)
    except loading.ModelError as exc:
        log.error("the model cannot be loaded", extra={"error": str(exc)})
        fail(PROGRAM, str(exc))
    log.info(
        "model loaded",
        extra={"model": loaded.name, "source": loaded.source, "seconds": round(loaded.load_seconds, 2)},
    )
    run_service("render", Settings, PREFIX, lambda s: create_server(s, loaded), settings=settings)


if __name__ == "__main__":
    main()
