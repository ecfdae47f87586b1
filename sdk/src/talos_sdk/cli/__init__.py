"""The ``talos`` command line: generate images, show the account and the options, cancel a job."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc

from talos_sdk import _channel
from talos_sdk.cli.commands import HANDLERS, UsageError
from talos_sdk.cli.exits import (
    EXIT_ACCOUNT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_OTHER,
    EXIT_PARTIAL,
    EXIT_POLICY,
    EXIT_TRANSIENT,
    EXIT_USAGE,
    exit_code_for,
)
from talos_sdk.cli.parser import build_parser as _build_parser
from talos_sdk.errors import TalosError

__all__ = [
    "EXIT_ACCOUNT",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_OTHER",
    "EXIT_PARTIAL",
    "EXIT_POLICY",
    "EXIT_TRANSIENT",
    "EXIT_USAGE",
    "build_parser",
    "exit_code_for",
    "main",
]

# Words of gRPC's own messages that mean the TLS handshake failed.
_HANDSHAKE_WORDS = ("ssl", "handshake", "certificate", "tls")


def build_parser() -> argparse.ArgumentParser:
    return _build_parser(HANDLERS)


def _unreachable_hint(args: argparse.Namespace, error: TalosError) -> str:
    """gRPC's own words name no setting: say which address was tried and what to change."""
    address = _channel.resolve_address(args.address)
    hint = f"\ntalos: could not reach the gateway at {address} (set --address or ${_channel.ENV_ADDRESS})"
    if any(word in error.message.lower() for word in _HANDSHAKE_WORDS):
        hint += (
            f"\ntalos: the TLS handshake failed: is the gateway's certificate signed by a CA you trust"
            f" (--ca-file or ${_channel.ENV_CA_FILE}), and does it speak TLS at all (--tls / --insecure)?"
        )
    return hint


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"talos: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except TalosError as exc:
        detail = f"talos: error: {exc}"
        if exc.field:
            detail += f" (field: {exc.field})"
        if exc.retry_after is not None:
            detail += f" (retry after {exc.retry_after:g}s)"
        if exc.transport and exc.grpc_code == grpc.StatusCode.UNAVAILABLE:
            detail += _unreachable_hint(args, exc)
        print(detail, file=sys.stderr)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OTHER
    except OSError as exc:
        print(f"talos: error: {exc}", file=sys.stderr)
        return EXIT_OTHER


if __name__ == "__main__":
    sys.exit(main())
