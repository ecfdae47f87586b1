"""The SDK and the ``talos`` CLI say what the API contract (``talos.api.v1.contract``) says.

The contract declares every request field, bound, default, size, style and error code once;
these tests fail when the SDK's classes, its local checks, the CLI's help or docs/sdk.md
disagree with it, or when talos_sdk keeps its own copy of a contract value.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import talos_sdk
from talos.api.v1 import contract
from talos_sdk import _request, cli
from talos_sdk.cli import exits, parser
from talos_sdk.errors import TransientError, error_class

REPO = Path(__file__).resolve().parents[2]
SDK_PACKAGE = REPO / "sdk" / "src" / "talos_sdk"
DOCS = REPO / "docs" / "sdk.md"


def _generate_help(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        cli.main(["generate", "--help"])
    assert exited.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # as one line: wrapping is not content


def test_generate_help_states_each_fields_description_and_bounds(capsys: pytest.CaptureFixture[str]):
    text = _generate_help(capsys)
    for spec in (*contract.GRPC_FIELDS, contract.IDEMPOTENCY_KEY):
        assert " ".join(spec.description.split()) in text, spec.name
        bounds = spec.bounds_text()
        if bounds:
            assert f"({bounds})" in text, (spec.name, bounds)
        if spec is not contract.PROMPT:
            assert any(flag in text for flag in parser.flag_names(spec)), spec.name


def test_generate_takes_every_field_with_its_type_and_choices():
    generate = cli.build_parser()._subparsers._group_actions[0].choices["generate"]  # type: ignore[union-attr]
    actions = {action.dest: action for action in generate._actions}
    for spec in (*contract.GRPC_FIELDS, contract.IDEMPOTENCY_KEY):
        action = actions[spec.name]
        if spec is contract.PROMPT:
            continue
        assert action.default is None, spec.name  # absent: the API's default, never the CLI's
        if spec.accepted:
            assert tuple(action.choices) == spec.accepted, spec.name
        if spec.kind == "integer":
            assert action.type is int, spec.name
        if spec.kind == "number":
            assert action.type is float, spec.name
        if spec.kind == "boolean":
            assert action.nargs == 0, spec.name


def test_job_options_are_the_request_fields():
    names = {spec.name for spec in contract.GRPC_FIELDS} - {contract.PROMPT.name}
    assert set(_request.JobOptions.__annotations__) == names | {contract.IDEMPOTENCY_KEY.name}


def _beyond(spec: contract.Field) -> list[Any]:
    """Values just outside the field's declared bounds."""
    if spec.minimum is not None and spec.maximum is not None:
        step = 1 if spec.kind == "integer" else 0.5
        return [spec.minimum - step, spec.maximum + step]
    if spec.max_length is not None:
        return ["x" * (spec.max_length + 1)]
    if spec.accepted:
        return ["not-a-choice"]
    return []


def test_the_sdk_refuses_what_the_contract_refuses_naming_the_field():
    client = talos_sdk.Client("tk", "127.0.0.1:9")
    checked = 0
    for spec in contract.GRPC_FIELDS:
        for value in _beyond(spec):  # below 0 too: checked before the unsigned proto field sees it
            prompt = value if spec is contract.PROMPT else "x"
            options = {} if spec is contract.PROMPT else {spec.name: value}
            with pytest.raises(talos_sdk.InvalidRequest) as caught:
                client.stream(prompt, **options)
            assert caught.value.field == spec.name and caught.value.code == "invalid_request"
            with pytest.raises(contract.InvalidRequest) as same:
                contract.parse_generation({"prompt": prompt, **options}, http=False)
            assert caught.value.message == same.value.message
            checked += 1
    assert checked >= 10
    client.close()


def test_values_at_the_bounds_are_sent_as_given():
    at_bounds: dict[str, Any] = {}
    for spec in contract.GRPC_FIELDS:
        if spec is contract.PROMPT or spec is contract.OUTPUT_COMPRESSION:
            continue
        if spec.maximum is not None:
            at_bounds[spec.name] = int(spec.maximum) if spec.kind == "integer" else spec.maximum
        elif spec.choices:
            at_bounds[spec.name] = spec.choices[-1]
    at_bounds.pop(contract.ASPECT_RATIO.name)  # it must agree with size
    request = _request.build_request("x", at_bounds, where="stream")  # type: ignore[arg-type]
    for name, value in at_bounds.items():
        assert getattr(request, name) == pytest.approx(value) if isinstance(value, float) else value, name
    lossy = _request.build_request("x", {"output_format": "webp", "output_compression": 100}, where="stream")
    assert lossy.output_compression == 100


def test_every_contract_error_code_has_its_class_and_retryability():
    for declared in contract.ERRORS:
        cls = error_class(declared.code)
        assert cls is not talos_sdk.TalosError and cls.default_code == declared.code, declared.code
        assert cls.retryable is declared.retryable, declared.code
        assert issubclass(cls, TransientError) is declared.retryable, declared.code
        assert cls.__name__ in talos_sdk.__all__
    with pytest.raises(TypeError, match="not an error code"):
        type("Invented", (talos_sdk.TalosError,), {}, code="invented_code")


def test_the_docs_error_table_matches_the_classes_and_exit_codes():
    rows = re.findall(r"^\| `([a-z_]+)` \| `(\w+)`[^|]*\| `(\w+)` \| (\d+) \|$", DOCS.read_text(), re.M)
    documented = {code: (cls, base, int(exit_code)) for code, cls, base, exit_code in rows}
    expected = {}
    for declared in contract.ERRORS:
        cls = error_class(declared.code)
        base = cls.__mro__[1].__name__
        expected[declared.code] = (cls.__name__, base, exits.exit_code_for_class(cls))
    assert documented == expected


def test_the_docs_exit_code_table_matches_the_cli():
    text = DOCS.read_text()
    table = dict(re.findall(r"^\| (\d+) \| ([^|]+) \|$", text, re.M))
    assert {int(code) for code in table} == set(exits.MEANINGS)
    for code, codes in exits.codes_by_exit().items():
        for name in codes:
            assert f"`{name}`" in table[str(code)], (code, name)


def test_talos_sdk_keeps_no_copy_of_contract_values():
    """Sizes, styles and aspect ratios come from the contract; no quoted copy in the package."""
    values = {size.id for size in contract.SIZES} | {style.id for style in contract.STYLES}
    values |= {size.aspect_ratio for size in contract.SIZES} | set(contract.STYLE_ALIASES)
    numbers = {f"{spec.max_length:,}" for spec in contract.REQUEST_FIELDS if spec.max_length} | {
        str(spec.max_length) for spec in contract.REQUEST_FIELDS if spec.max_length
    }
    found = []
    for path in SDK_PACKAGE.rglob("*.py"):
        source = path.read_text()
        found += [(path.name, v) for v in values if f'"{v}"' in source or f"'{v}'" in source]
        found += [(path.name, n) for n in numbers if re.search(rf"(?<![\w.]){re.escape(n)}(?![\w.])", source)]
    assert found == []
