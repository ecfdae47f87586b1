"""``talos-render``: run a render node, or build the built-in test model.

    talos-render [serve] [--relay HOST:PORT] [--token TOKEN] [--model PATH|builtin] [--ca-file PEM]
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


COMMANDS = ("serve", "build-test-model", "export-single-file")


def build_parser() -> argparse.ArgumentParser:
    """One parser with a command per job, like ``talos`` and ``talos-admin``; ``serve`` is the default."""
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="A TALOS render node; settings not given here come from $TALOS_RENDER_*.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser("serve", help="run a render node (the default)")
    for flag, variable, text in (
        ("--relay", "RELAY", "relay HOST:PORT"),
        ("--token", "TOKEN", "node token"),
        ("--model", "MODEL", "builtin, a diffusers folder or a .safetensors file"),
        ("--config-dir", "CONFIG_DIR", "config folder for a single-file model"),
        ("--device", "DEVICE", "auto, cpu or cuda"),
        ("--data-dir", "DATA_DIR", "where the built-in model is cached"),
        ("--ca-file", "CA_FILE", "verify the relay's TLS certificate against this CA bundle"),
    ):
        serve.add_argument(flag, help=f"{text} (default: ${PREFIX}{variable})")
    serve.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="dial a relay that is not on loopback in plaintext: the token crosses in the clear "
        f"(default: ${PREFIX}INSECURE)",
    )
    build = commands.add_parser(
        "build-test-model", help="write the built-in tiny SDXL-architecture test model as a diffusers folder"
    )
    build.add_argument("folder", type=Path)
    export = commands.add_parser(
        "export-single-file", help="write a diffusers SDXL folder as one original-layout .safetensors file"
    )
    export.add_argument("model", type=Path)
    export.add_argument("out", type=Path)
    export.add_argument(
        "--flatten-first-text-encoder",
        action="store_true",
        help="omit the text_model. prefix, as a transformers-5 state dict would (to test the repair)",
    )
    return parser


def build_test_model(args: argparse.Namespace) -> int:
    from talos_render import loading, tinymodel

    loading.quiet_libraries()
    folder = tinymodel.save(args.folder)
    print(f"built {tinymodel.NAME} v{tinymodel.VERSION} in {folder}")
    return 0


def export_single_file(args: argparse.Namespace) -> int:
    from talos_render import loading, singlefile

    loading.quiet_libraries()
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(str(args.model), local_files_only=True)
    singlefile.export(pipe, args.out, flatten_first_text_encoder=args.flatten_first_text_encoder)
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["serve", *argv]  # flags alone: serve, as before commands existed
    args = build_parser().parse_args(argv)
    if args.command == "build-test-model":
        sys.exit(build_test_model(args))
    if args.command == "export-single-file":
        sys.exit(export_single_file(args))
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
