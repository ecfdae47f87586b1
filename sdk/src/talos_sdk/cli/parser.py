"""The ``talos`` command line's arguments.

Every generation option is a field of ``talos.api.v1.GenerateRequest`` and takes its flag,
type, choices and help text (description, bounds, default) from the contract's declaration
(``talos.api.v1.contract.GRPC_FIELDS``), so no bound is written here. Every command is built the
same way: its own arguments, then ``--json`` and the connection flags (also accepted before the
command), with the shared epilog.
"""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from talos.api.v1 import contract
from talos_sdk import _channel, _core
from talos_sdk._version import __version__
from talos_sdk.cli.exits import exit_codes_text

# Flags that are not simply --field-name (the second names are the flags of earlier versions).
FLAG_NAMES: dict[str, tuple[str, ...]] = {
    contract.N.name: ("-n", "--images"),
    contract.NEGATIVE_PROMPT.name: ("--negative-prompt", "--negative"),
    contract.OUTPUT_FORMAT.name: ("--output-format", "--format"),
}
_TYPES = {"integer": int, "number": float}

EPILOG = f"""\
environment:
  {_core.ENV_API_KEY}     API key (or --api-key)
  {_channel.ENV_ADDRESS}     gateway gRPC address (or --address; default {_channel.DEFAULT_ADDRESS})
  {_channel.ENV_TLS}         1: always TLS; 0: plaintext; auto (default): TLS unless the address is loopback
  {_channel.ENV_CA_FILE}     PEM file of the roots to trust instead of the system's (or --ca-file)

{exit_codes_text()}
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps names such as digital-art whole when wrapping help text."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def field_help(spec: contract.Field) -> str:
    """A field's help text: its description and, in brackets, its bounds and default."""
    bounds = spec.bounds_text()
    text = f"{spec.description} ({bounds})" if bounds else spec.description
    return text.replace("%", "%%")


def flag_names(spec: contract.Field) -> tuple[str, ...]:
    return FLAG_NAMES.get(spec.name, ("--" + spec.name.replace("_", "-"),))


def add_field(parser: argparse.ArgumentParser | Any, spec: contract.Field) -> None:
    """One request field as an option whose value is None when not given (the API's default)."""
    kwargs: dict[str, Any] = {"dest": spec.name, "default": None, "help": field_help(spec)}
    if spec.kind == "boolean":
        kwargs["action"] = "store_true"
    else:
        kwargs["metavar"] = spec.name.upper()
        if spec.kind in _TYPES:
            kwargs["type"] = _TYPES[spec.kind]
        if spec.accepted:
            kwargs["choices"] = spec.accepted
    parser.add_argument(*flag_names(spec), **kwargs)


def add_connection(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Connection flags, valid both before and after the command (``suppress``: after it, so a
    flag given before is not reset)."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("connection")
    group.add_argument("--api-key", default=default(None), help=f"API key (default: ${_core.ENV_API_KEY})")
    group.add_argument(
        "--address",
        default=default(None),
        help=f"gateway gRPC host:port (default: ${_channel.ENV_ADDRESS} or {_channel.DEFAULT_ADDRESS})",
    )
    security = group.add_mutually_exclusive_group()
    security.add_argument(
        "--tls",
        dest="tls",
        action="store_const",
        const=True,
        default=default(None),
        help=f"always connect with TLS (default: ${_channel.ENV_TLS}, else TLS unless the address is"
        " loopback)",
    )
    security.add_argument(
        "--insecure",
        dest="tls",
        action="store_const",
        const=False,
        default=default(None),
        help="connect without TLS even to a remote address: the API key then travels in plaintext",
    )
    group.add_argument(
        "--ca-file",
        default=default(None),
        metavar="PATH",
        help=f"PEM roots to trust instead of the system's; implies TLS (default: ${_channel.ENV_CA_FILE})",
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=default(_core.DEFAULT_TIMEOUT),
        help=f"deadline of each request in seconds (default {_core.DEFAULT_TIMEOUT:g})",
    )


def _command(commands: Any, name: str, func: Any, help: str, description: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=help, description=description, epilog=EPILOG, formatter_class=HelpFormatter
    )
    parser.set_defaults(func=func)
    return parser


def _generate_arguments(gen: argparse.ArgumentParser) -> None:
    gen.add_argument("prompt", help=field_help(contract.PROMPT))
    gen.add_argument(
        "-o",
        "--output",
        help="image file to write ('-' for stdout, one image only; default talos-SEED.EXT); "
        "with several images the index goes before the extension: out.png gives out-0.png, out-1.png...; "
        "the extension picks the format unless --output-format is given",
    )
    generation = gen.add_argument_group("generation (the API's defaults when absent)")
    for spec in contract.GRPC_FIELDS:
        if spec is not contract.PROMPT:
            add_field(generation, spec)
    add_field(generation, contract.IDEMPOTENCY_KEY)
    gen.add_argument(
        "--max-retries",
        type=int,
        default=0,
        help="retry no_capacity / rate_limited this many times, waiting as the server asks (default 0)",
    )
    gen.add_argument(
        "--job-timeout",
        type=float,
        default=_core.DEFAULT_STREAM_TIMEOUT,
        help=f"deadline of the whole job in seconds (default {_core.DEFAULT_STREAM_TIMEOUT:g})",
    )
    gen.add_argument("-q", "--quiet", action="store_true", help="no progress display")


def build_parser(handlers: dict[str, Any]) -> argparse.ArgumentParser:
    """The parser; ``handlers`` maps each command name to the function that runs it."""
    parser = argparse.ArgumentParser(
        prog="talos",
        description="TALOS image generation from the command line.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"talos-sdk {__version__}")
    add_connection(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    gen = _command(
        commands,
        "generate",
        handlers["generate"],
        help="generate images and write them to files",
        description="Generate images from one prompt: shows progress on stderr, writes each image,\n"
        "prints its seed, the images refunded and the credits charged.",
    )
    _generate_arguments(gen)
    _command(
        commands,
        "account",
        handlers["account"],
        help="show balance, allowance and age confirmation",
        description="Show the key's account: balance, daily allowance, price and age confirmation.",
    )
    _command(
        commands,
        "options",
        handlers["options"],
        help="show styles, sizes, ranges and price (no key needed)",
        description="Show what a request may contain, as the gateway answers it.",
    )
    can = _command(
        commands,
        "cancel",
        handlers["cancel"],
        help="cancel a running job",
        description="Cancel a job this key owns; the holds of its unfinished images are released.",
    )
    can.add_argument("job_id", help="the job id (shown when a job starts)")
    age = _command(
        commands,
        "confirm-age",
        handlers["confirm-age"],
        help="confirm once that you are 18 or older (needed for --nsfw)",
        description="Record the one-time confirmation that the account holder is 18 or older.",
    )
    age.add_argument("--yes", action="store_true", help="I confirm that I am 18 or older")

    for command in commands.choices.values():
        command.add_argument("--json", action="store_true", help="print the result as one JSON object")
        add_connection(command, suppress=True)
    return parser
