"""What each ``talos`` command does; the arguments come from :mod:`talos_sdk.cli.parser`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from talos.api.v1 import contract
from talos_sdk import _core
from talos_sdk._request import JobOptions
from talos_sdk.cli.display import ProgressDisplay
from talos_sdk.cli.exits import EXIT_INTERRUPTED, EXIT_OK, EXIT_OTHER, EXIT_PARTIAL
from talos_sdk.client import Client
from talos_sdk.errors import TalosError
from talos_sdk.events import Completed, Failed, numbered_path
from talos_sdk.models import Account, Options

# The extension a written image gets, and the format an -o extension asks for.
SUFFIX_BY_FORMAT = {fmt: f".{fmt}" for fmt in contract.OUTPUT_FORMATS} | {"jpeg": ".jpg"}
FORMAT_BY_SUFFIX = {f".{fmt}": fmt for fmt in contract.OUTPUT_FORMATS} | {".jpg": "jpeg"}
# The generation options the CLI passes on: every GenerateRequest field but the prompt.
JOB_FIELDS = (
    *(spec.name for spec in contract.GRPC_FIELDS if spec is not contract.PROMPT),
    contract.IDEMPOTENCY_KEY.name,
)


class UsageError(Exception):
    """A mistake in the command line that argparse could not see."""


def client_for(args: argparse.Namespace, *, needs_key: bool = True) -> Client:
    key = _core.resolve_api_key(args.api_key)
    if needs_key and not key:
        raise UsageError(f"no API key: set {_core.ENV_API_KEY} or pass --api-key")
    try:
        return Client(key, args.address, tls=args.tls, ca_file=args.ca_file, timeout=args.timeout)
    except ValueError as exc:  # a TLS setting that contradicts another, a CA file without a certificate
        raise UsageError(str(exc)) from None
    except OSError as exc:  # the CA file cannot be read
        raise UsageError(f"cannot read the CA file: {exc}") from None


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


# -- generate ------------------------------------------------------------------------------------


def format_from_name(output: str | None) -> str | None:
    """The format an -o file name's extension asks for, if any."""
    if not output or output == "-":
        return None
    return FORMAT_BY_SUFFIX.get(Path(output).suffix.lower())


class Outputs:
    """Where each image goes: ``-o`` (numbered when there are several), stdout, or talos-SEED.EXT."""

    def __init__(self, output: str | None, images: int) -> None:
        self.images = images
        self.to_stdout = output == "-"
        self.target = Path(output) if output and not self.to_stdout else None
        if self.to_stdout and images > 1:
            raise UsageError("-o - writes one image to stdout; give a file name for several images")
        if self.target is not None:
            if self.target.is_dir():
                raise UsageError(f"{self.target} is a directory; give a file name with -o")
            if not self.target.parent.exists():
                raise UsageError(f"folder {self.target.parent} does not exist")

    def write(self, image: Completed) -> str:
        """Writes one image; returns where it went ("stdout" or the path)."""
        if self.to_stdout:
            sys.stdout.buffer.write(image.data)
            sys.stdout.buffer.flush()
            return "stdout"
        if self.target is not None:
            path = numbered_path(self.target, image.image, self.images)
        else:
            path = Path(f"talos-{image.seed}{SUFFIX_BY_FORMAT.get(image.output_format, '.img')}")
        _write_atomically(path, image.data)
        return str(path)


def _job_options(args: argparse.Namespace, output_format: str | None) -> JobOptions:
    values: dict[str, Any] = {name: getattr(args, name) for name in JOB_FIELDS}
    values[contract.OUTPUT_FORMAT.name] = output_format
    return JobOptions(**values)  # type: ignore[typeddict-item]


def _report(
    job_id: str | None,
    ends: dict[int, Completed | Failed],
    written: dict[int, str],
    images: int,
    report: IO[str],
    as_json: bool,
) -> None:
    """Each image's file and seed, or why it was refunded; the credits charged and left.

    ``ends`` is in the order the images ended: the balance is the one after the last charge.
    """
    arrived = [end for end in ends.values() if isinstance(end, Completed)]
    charged = sum(image.credits_charged for image in arrived)
    balance = arrived[-1].balance if arrived else None
    ordered = [ends[index] for index in sorted(ends)]
    if as_json:
        info = {
            "job_id": job_id,
            "images": [
                {
                    **{k: v for k, v in asdict(end).items() if k not in ("data", "job_id")},
                    "path": written[end.image],
                }
                for end in ordered
                if isinstance(end, Completed)
            ],
            "refunded": [
                {"image": end.image, "seed": end.seed, "error": {"code": end.code, "message": end.message}}
                for end in ordered
                if isinstance(end, Failed)
            ],
            "credits_charged": charged,
            "balance": balance,
        }
        print(json.dumps(info), file=report)
        return
    for end in ordered:
        label = f"image {end.image}: " if images > 1 else ""
        if isinstance(end, Completed):
            size = f"{end.width}x{end.height} {end.output_format}"
            print(f"{label}wrote {written[end.image]} ({size}), seed: {end.seed}", file=report)
        else:
            print(f"{label}refunded, seed: {end.seed} ({end.code}: {end.message})", file=report)
    print(f"credits charged: {charged}", file=report)
    if balance is not None:
        print(f"balance: {balance}", file=report)


def cmd_generate(args: argparse.Namespace) -> int:
    images = args.n if args.n is not None else int(contract.N.default)
    output_format = args.output_format or format_from_name(args.output)
    display = ProgressDisplay(sys.stderr, images=images, enabled=not args.quiet)
    ends: dict[int, Completed | Failed] = {}  # in the order they came
    written: dict[int, str] = {}
    with client_for(args) as client:
        # Checked against the contract here, before any file is looked at or anything is sent.
        stream = client.stream(
            args.prompt,
            timeout=args.job_timeout,
            max_retries=args.max_retries,
            **_job_options(args, output_format),
        )
        try:
            outputs = Outputs(args.output, images)
            for event in stream:
                display.show(event)
                if isinstance(event, Completed):
                    written[event.image] = outputs.write(event)
                if isinstance(event, Completed | Failed):
                    ends[event.image] = event
        except KeyboardInterrupt:
            display.finish()
            _interrupted(client, stream.job_id, written)
            return EXIT_INTERRUPTED
        except TalosError:
            display.finish()
            for where in written.values():
                print(f"talos: wrote {where} before the failure", file=sys.stderr)
            raise
        finally:
            display.finish()
            stream.close()
    if not written:
        if not ends:  # a stream ends after its images' ends, or raises
            raise TalosError("the job ended without a result", code="internal")
        if images > 1:
            _report(stream.job_id, ends, written, images, sys.stderr, False)
        first = next(end for _, end in sorted(ends.items()) if isinstance(end, Failed))
        raise first.error()
    report = sys.stderr if outputs.to_stdout else sys.stdout
    _report(stream.job_id, ends, written, images, report, args.json)
    return EXIT_PARTIAL if len(written) < len(ends) else EXIT_OK


def _interrupted(client: Client, job_id: str | None, written: dict[int, str]) -> None:
    for where in written.values():
        print(f"talos: wrote {where} (delivered and charged)", file=sys.stderr)
    if not job_id:
        return
    try:
        client.cancel(job_id, timeout=5)
        print(f"talos: cancelled job {job_id}", file=sys.stderr)
    except TalosError as exc:
        print(f"talos: could not cancel job {job_id}: {exc}", file=sys.stderr)


# -- account, options, cancel, confirm-age --------------------------------------------------------


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
    with client_for(args) as client:
        account = client.account()
    if args.json:
        data = asdict(account)
        resets_at = account.allowance.resets_at
        data["allowance"]["resets_at"] = resets_at.isoformat() if resets_at else None
        data["spendable"] = account.spendable
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
    lines.append(f"images:           {options.n.min}-{options.n.max} (default {options.n.default})")
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
    with client_for(args, needs_key=False) as client:
        options = client.options()
    print(json.dumps(asdict(options)) if args.json else _options_text(options))
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        cancelled = client.cancel(args.job_id)
    if args.json:
        print(json.dumps({"job_id": args.job_id, "cancelled": cancelled}))
    else:
        print(f"cancelled {args.job_id}" if cancelled else f"{args.job_id} was not running any more")
    return EXIT_OK


def cmd_confirm_age(args: argparse.Namespace) -> int:
    if not args.yes:
        raise UsageError("confirming your age needs --yes (I am 18 or older)")
    with client_for(args) as client:
        confirmed = client.confirm_age()
    if args.json:
        print(json.dumps({"age_confirmed": confirmed}))
    else:
        print("age confirmed" if confirmed else "age not confirmed")
    return EXIT_OK if confirmed else EXIT_OTHER


HANDLERS = {
    "generate": cmd_generate,
    "account": cmd_account,
    "options": cmd_options,
    "cancel": cmd_cancel,
    "confirm-age": cmd_confirm_age,
}
