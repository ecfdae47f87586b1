"""The ``talos`` command line: generate an image, show the account and the options, cancel a job."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

import grpc

from talos_sdk import _core
from talos_sdk.client import Client
from talos_sdk.errors import TalosError
from talos_sdk.models import Account, Completed, Event, Failed, Options, Progress, Queued, Started

EXIT_OK = 0
EXIT_OTHER = 1
EXIT_USAGE = 2
EXIT_POLICY = 3
EXIT_ACCOUNT = 4
EXIT_TRANSIENT = 5
EXIT_INTERRUPTED = 130

_EXIT_BY_CODE = {
    "invalid_request": EXIT_USAGE,
    "request_too_large": EXIT_USAGE,
    "content_policy_violation": EXIT_POLICY,
    "output_blocked": EXIT_POLICY,
    "age_confirmation_required": EXIT_POLICY,
    "insufficient_credits": EXIT_ACCOUNT,
    "invalid_api_key": EXIT_ACCOUNT,
    "no_capacity": EXIT_TRANSIENT,
    "rate_limited": EXIT_TRANSIENT,
    "timeout": EXIT_TRANSIENT,
    "unavailable": EXIT_TRANSIENT,
    "internal": EXIT_TRANSIENT,
}

EPILOG = f"""\
environment:
  {_core.ENV_API_KEY}     API key (or --api-key)
  {_core.ENV_ADDRESS}     gateway gRPC address (or --address; default {_core.DEFAULT_ADDRESS})

exit codes:
  0    success
  1    other failure (not_found, idempotency_conflict, cancelled, ...)
  2    usage error: bad arguments, no API key, or invalid_request / request_too_large
  3    policy refusal: content_policy_violation, output_blocked, age_confirmation_required
  4    credits or key: insufficient_credits, invalid_api_key
  5    transient, worth retrying later: no_capacity, rate_limited, timeout, unavailable, internal
  130  interrupted (Ctrl-C; a running job is cancelled)
"""

_FORMAT_BY_SUFFIX = {".png": "png", ".webp": "webp", ".jpg": "jpeg", ".jpeg": "jpeg"}
_SUFFIX_BY_FORMAT = {"png": ".png", "webp": ".webp", "jpeg": ".jpg"}


def exit_code_for(error: TalosError) -> int:
    """The documented exit code for an API error."""
    return _EXIT_BY_CODE.get(error.code, EXIT_OTHER)


class UsageError(Exception):
    """A mistake in the command line that argparse could not see."""


# -- progress display --------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class ProgressDisplay:
    """A one-line progress bar on a terminal; plain lines (at most ~10 per job) elsewhere."""

    WIDTH = 30

    def __init__(self, stream: IO[str], *, enabled: bool = True) -> None:
        self.stream = stream
        self.enabled = enabled
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._line_open = False
        self._last_width = 0
        self._first_step_at: float | None = None
        self._first_step = 0
        self._last_decile = -1

    def _emit(self, text: str, *, transient: bool) -> None:
        if not self.enabled:
            return
        if self.tty:
            pad = " " * max(0, self._last_width - len(text))
            self.stream.write("\r" + text + pad)
            self._last_width = len(text)
            self._line_open = True
            if not transient:
                self.stream.write("\n")
                self._line_open = False
                self._last_width = 0
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def bar(self, step: int, total: int) -> str:
        total = max(total, 1)
        done = min(self.WIDTH, self.WIDTH * step // total)
        text = f"[{'#' * done}{'.' * (self.WIDTH - done)}] step {step}/{total} {100 * step // total:3d}%"
        now = time.monotonic()
        if self._first_step_at is None:
            self._first_step_at, self._first_step = now, step
        elif step > self._first_step and step < total:
            per_step = (now - self._first_step_at) / (step - self._first_step)
            text += f"  ETA {_duration(per_step * (total - step))}"
        return text

    def show(self, event: Event) -> None:
        if isinstance(event, Queued):
            eta = f", starts in ~{_duration(event.eta_seconds)}" if event.eta_seconds > 0 else ""
            self._emit(f"queued: position {event.position}{eta}", transient=True)
        elif isinstance(event, Started):
            self._emit(f"started job {event.job_id}", transient=not self.tty)
        elif isinstance(event, Progress):
            text = self.bar(event.step, event.total_steps)
            if self.tty:
                self._emit(text, transient=event.step < event.total_steps)
            else:
                decile = 10 * event.step // max(event.total_steps, 1)
                if decile != self._last_decile:
                    self._last_decile = decile
                    self._emit(text, transient=False)
        elif isinstance(event, Completed | Failed):
            self.finish()

    def finish(self) -> None:
        if self.enabled and self.tty and self._line_open:
            self.stream.write("\n")
            self.stream.flush()
            self._line_open = False
            self._last_width = 0


# -- commands ------------------------------------------------------------------------------------


def _client(args: argparse.Namespace, *, needs_key: bool = True) -> Client:
    key = _core.resolve_api_key(args.api_key)
    if needs_key and not key:
        raise UsageError(f"no API key: set {_core.ENV_API_KEY} or pass --api-key")
    return Client(key, args.address, tls=args.tls, timeout=args.timeout)


def _write_atomically(path: Path, data: bytes) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cmd_generate(args: argparse.Namespace) -> int:
    output_format = args.format
    output: Path | None = None
    if args.output and args.output != "-":
        output = Path(args.output)
        if output_format is None:
            output_format = _FORMAT_BY_SUFFIX.get(output.suffix.lower())
        if output.is_dir():
            raise UsageError(f"{output} is a directory; give a file name with -o")
        if not output.parent.exists():
            raise UsageError(f"folder {output.parent} does not exist")
    display = ProgressDisplay(sys.stderr, enabled=not args.quiet)
    with _client(args) as client:
        stream = client.generate(
            args.prompt,
            negative_prompt=args.negative,
            style=args.style,
            size=args.size,
            aspect_ratio=args.aspect_ratio,
            steps=args.steps,
            guidance=args.guidance,
            seed=args.seed,
            nsfw=args.nsfw,
            output_format=output_format,
            idempotency_key=args.idempotency_key,
            timeout=args.job_timeout,
            max_retries=args.max_retries,
        )
        result: Completed | None = None
        try:
            for event in stream:
                display.show(event)
                if isinstance(event, Completed):
                    result = event
                elif isinstance(event, Failed):
                    raise event.error()
        except KeyboardInterrupt:
            display.finish()
            job_id = stream.job_id
            if job_id:
                try:
                    client.cancel(job_id, timeout=5)
                    print(f"talos: cancelled job {job_id}", file=sys.stderr)
                except TalosError as exc:
                    print(f"talos: could not cancel job {job_id}: {exc}", file=sys.stderr)
            return EXIT_INTERRUPTED
        finally:
            display.finish()
            stream.close()
    if result is None:  # a stream always ends with a terminal event or an error
        raise TalosError("the job ended without a result", code="internal")
    if output is None and args.output == "-":
        sys.stdout.buffer.write(result.image)
        sys.stdout.buffer.flush()
        report = sys.stderr
    else:
        if output is None:
            output = Path(f"talos-{result.seed}{_SUFFIX_BY_FORMAT.get(result.output_format, '.img')}")
        _write_atomically(output, result.image)
        report = sys.stdout
    if args.json:
        info = {k: v for k, v in asdict(result).items() if k != "image"}
        info["path"] = str(output) if output is not None else "-"
        print(json.dumps(info), file=report)
    else:
        where = str(output) if output is not None else "stdout"
        print(f"wrote {where} ({result.width}x{result.height} {result.output_format})", file=report)
        print(f"seed: {result.seed}", file=report)
        print(f"credits charged: {result.credits_charged}", file=report)
        print(f"balance: {result.balance}", file=report)
    return EXIT_OK


def _account_text(account: Account) -> str:
    resets = account.allowance.resets_at.isoformat() if account.allowance.resets_at else "-"
    return "\n".join(
        [
            f"account:          {account.account_id}",
            f"balance:          {account.balance} credits",
            f"daily allowance:  {account.allowance.remaining}/{account.allowance.daily} left"
            f" (resets {resets})",
            f"spendable:        {account.spendable} credits",
            f"price per image:  {account.price_per_image} credits",
            f"age confirmed:    {'yes' if account.age_confirmed else 'no'}",
        ]
    )


def cmd_account(args: argparse.Namespace) -> int:
    with _client(args) as client:
        account = client.account()
    if args.json:
        data = asdict(account)
        resets_at = account.allowance.resets_at
        data["allowance"]["resets_at"] = resets_at.isoformat() if resets_at else None
        print(json.dumps(data))
    else:
        print(_account_text(account))
    return EXIT_OK


def _options_text(options: Options) -> str:
    lines = ["styles:"]
    for style in options.styles:
        lines.append(f"  {style.id:<12} {style.name} (guidance {style.default_guidance:g})")
    lines.append("sizes:")
    for size in options.sizes:
        lines.append(f"  {size.id:<12} {size.aspect_ratio}")
    lines.append(
        f"steps:            {options.steps.min}-{options.steps.max} (default {options.steps.default})"
    )
    lines.append(
        f"guidance:         {options.guidance.min:g}-{options.guidance.max:g}"
        f" (default {options.guidance.default:g})"
    )
    lines.append(f"output formats:   {', '.join(options.output_formats)}")
    lines.append(f"price per image:  {options.price_per_image} credits")
    return "\n".join(lines)


def cmd_options(args: argparse.Namespace) -> int:
    with _client(args, needs_key=False) as client:
        options = client.options()
    print(json.dumps(asdict(options)) if args.json else _options_text(options))
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        cancelled = client.cancel(args.job_id)
    print(f"cancelled {args.job_id}" if cancelled else f"{args.job_id} was not running any more")
    return EXIT_OK


def cmd_confirm_age(args: argparse.Namespace) -> int:
    if not args.yes:
        raise UsageError("confirming your age needs --yes (I am 18 or older)")
    with _client(args) as client:
        confirmed = client.confirm_age()
    print("age confirmed" if confirmed else "age not confirmed")
    return EXIT_OK if confirmed else EXIT_OTHER


# -- parser --------------------------------------------------------------------------------------


def _add_connection(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Connection flags, valid both before and after the sub-command."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("connection")
    group.add_argument("--api-key", default=default(None), help=f"API key (default: ${_core.ENV_API_KEY})")
    group.add_argument(
        "--address",
        default=default(None),
        help=f"gateway gRPC host:port (default: ${_core.ENV_ADDRESS} or {_core.DEFAULT_ADDRESS})",
    )
    group.add_argument("--tls", action="store_true", default=default(False), help="connect with TLS")
    group.add_argument(
        "--timeout",
        type=float,
        default=default(_core.DEFAULT_TIMEOUT),
        help=f"deadline of each request in seconds (default {_core.DEFAULT_TIMEOUT:g})",
    )


def _command(
    commands: Any, name: str, func: Any, help: str, description: str | None = None
) -> argparse.ArgumentParser:
    """A sub-command with the shared epilog; ``build_parser`` adds the connection flags last."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=help,
        description=description,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=func)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="talos",
        description="TALOS image generation from the command line.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"talos-sdk {_core.__version__}")
    _add_connection(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    gen = _command(
        commands,
        "generate",
        cmd_generate,
        help="generate an image and write it to a file",
        description="Generate an image: shows progress on stderr, writes the image, prints seed and credits.",
    )
    gen.add_argument("prompt", help="what to draw (1 to 2,000 characters)")
    gen.add_argument(
        "-o",
        "--output",
        help="image file to write ('-' for stdout; default talos-SEED.EXT); "
        "its extension picks the format unless --format is given",
    )
    gen.add_argument("--style", help="style preset: photo (default), cinematic, anime, digital-art, 3d")
    gen.add_argument("--size", help="1024x1024 (default), 832x1216 or 1216x832")
    gen.add_argument("--aspect-ratio", help="square, portrait or landscape (instead of --size)")
    gen.add_argument("--steps", type=int, help="denoising steps, 1 to 60 (default 30)")
    gen.add_argument("--seed", type=int, help="seed, 0 to 4294967295 (random by default)")
    gen.add_argument("--guidance", type=float, help="guidance, 1 to 20 (default from the style)")
    gen.add_argument("--negative", help="negative prompt: what to steer away from")
    gen.add_argument("--nsfw", action="store_true", help="allow 18+ output (needs `talos confirm-age`)")
    gen.add_argument("--format", choices=["png", "webp", "jpeg"], help="output format (default png)")
    gen.add_argument("--idempotency-key", help="makes a repeated command return the same job")
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
    gen.add_argument("--json", action="store_true", help="print the result as one JSON object")

    acc = _command(commands, "account", cmd_account, help="show balance, allowance and age confirmation")
    acc.add_argument("--json", action="store_true", help="print JSON")

    opt = _command(
        commands, "options", cmd_options, help="show styles, sizes, ranges and price (no key needed)"
    )
    opt.add_argument("--json", action="store_true", help="print JSON")

    can = _command(commands, "cancel", cmd_cancel, help="cancel a running job")
    can.add_argument("job_id", help="the job id (shown when a job starts)")

    age = _command(
        commands,
        "confirm-age",
        cmd_confirm_age,
        help="confirm once that you are 18 or older (needed for --nsfw)",
    )
    age.add_argument("--yes", action="store_true", help="I confirm that I am 18 or older")

    # Connection flags are valid after the sub-command too (listed after its own flags).
    for command in commands.choices.values():
        _add_connection(command, suppress=True)
    return parser


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
            # gRPC's own words name no setting; say which address was tried and how to change it.
            detail += (
                f"\ntalos: could not reach the gateway at {_core.resolve_address(args.address)}"
                f" (set --address or ${_core.ENV_ADDRESS})"
            )
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
