"""The tables of ``docs/api.md`` that restate the contract, generated from it.

``python -m talos_gateway.contract_docs docs/api.md`` rewrites every table between a
``<!-- contract:NAME -->`` line and the next ``<!-- /contract -->`` line; a test runs the same
rendering and fails when the committed page differs (``make contract`` refreshes it).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from talos.api.v1 import contract


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def request_fields() -> str:
    rows = [
        "| field | type | bounds and values | default | gRPC | what it does |",
        "|---|---|---|---|---|---|",
    ]
    for field in contract.REQUEST_FIELDS:
        values = ", ".join(f"`{value}`" for value in field.accepted)
        if field.minimum is not None and field.maximum is not None:
            values = f"{contract.number_text(field.minimum)}–{contract.number_text(field.maximum)}"
        if field.max_length is not None:
            values = f"at most {field.max_length:,} characters"
        if field.refused:
            values += "; refused: " + ", ".join(f"`{value}` ({why})" for value, why in field.refused.items())
        default = f"`{field.default}`"
        if field.required:
            default = "**required**"
        elif field.default is None:
            default = "—"
        elif isinstance(field.default, bool):
            default = f"`{str(field.default).lower()}`"
        elif field.default == "":
            default = '`""`'
        grpc = "yes" if field.grpc else "—"
        rows.append(
            f"| `{field.name}` | {field.kind} | {_cell(values) or '—'} | {default} | {grpc} | "
            f"{_cell(field.description)} |"
        )
    return "\n".join(rows)


def errors() -> str:
    rows = ["| status | code | gRPC status | when | charged? |", "|---|---|---|---|---|"]
    for error in contract.ERRORS:
        code, status = f"`{error.code}`", f"`{error.grpc_status}`"
        rows.append(f"| {error.http_status} | {code} | {status} | {_cell(error.when)} | {error.charged} |")
    return "\n".join(rows)


def quality_steps() -> str:
    rows = ["| `quality` | steps |", "|---|---|"]
    rows += [f"| `{name}` | {steps} |" for name, steps in contract.QUALITY_STEPS.items()]
    return "\n".join(rows)


TABLES: dict[str, Callable[[], str]] = {
    "request-fields": request_fields,
    "errors": errors,
    "quality-steps": quality_steps,
}
_SECTION = re.compile(r"(<!-- contract:([\w-]+) -->\n)(.*?)(<!-- /contract -->)", re.S)


def render(page: str) -> str:
    """The page with every contract table regenerated."""

    def table(match: re.Match[str]) -> str:
        return match.group(1) + TABLES[match.group(2)]() + "\n" + match.group(4)

    return _SECTION.sub(table, page)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for name in args:
        path = Path(name)
        path.write_text(render(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
