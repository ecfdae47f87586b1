"""The public API is declared once (talos.api.v1.contract); every copy of it must agree.

Copies that cannot be derived at run time — the committed OpenAPI document, the tables of
docs/api.md, the comments of api.proto — are compared with what the contract says.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from talos.api.v1 import api_pb2, contract
from talos_gateway import contract_docs, openapi

REPO = Path(__file__).resolve().parent.parent
API_PROTO = REPO / "protos" / "talos" / "api" / "v1" / "api.proto"


def test_committed_openapi_document_is_fresh() -> None:
    assert openapi.PATH.read_text(encoding="utf-8") == openapi.render(), (
        "stale openapi.json: run `make contract`"
    )


def test_docs_tables_are_fresh() -> None:
    page = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    sections = re.findall(r"<!-- contract:([\w-]+) -->", page)
    assert sorted(sections) == sorted(contract_docs.TABLES), "docs/api.md lacks a contract table"
    assert contract_docs.render(page) == page, "stale tables in docs/api.md: run `make contract`"


def _field_comments() -> dict[str, str]:
    text = API_PROTO.read_text(encoding="utf-8")
    body = text[text.index("message GenerateRequest {") :]
    body = body[: body.index("\n}")]
    comments: dict[str, str] = {}
    comment = ""
    for line in body.splitlines():
        stripped = line.strip()
        if stripped.startswith("//"):
            comment = stripped[2:].strip()
        elif match := re.match(r"(?:optional\s+)?\w+\s+(\w+)\s*=\s*\d+;", stripped):
            comments[match.group(1)] = comment
    return comments


def test_proto_comments_state_the_contract() -> None:
    comments = _field_comments()
    for field in (*contract.GRPC_FIELDS, contract.IDEMPOTENCY_KEY):
        bounds = field.bounds_text()
        expected = f"{field.description} ({bounds})" if bounds else field.description
        assert comments.get(field.name) == expected, f"api.proto's comment on {field.name}"


def test_grpc_fields_are_the_proto_fields() -> None:
    proto_fields = set(api_pb2.GenerateRequest.DESCRIPTOR.fields_by_name)
    declared = {field.name for field in contract.GRPC_FIELDS} | {contract.IDEMPOTENCY_KEY.name}
    assert proto_fields == declared


def test_events_are_the_proto_events() -> None:
    """Every TALOS event property is carried by the proto message of the same event."""
    event = api_pb2.JobEvent.DESCRIPTOR
    for name, props in contract.EVENTS.items():
        message = event.fields_by_name[name].message_type
        for prop in props:
            if prop.name in ("job_id", "image"):
                assert prop.name in event.fields_by_name
                continue
            if prop.kind == "object":
                assert prop.name in message.fields_by_name, (name, prop.name)
                continue
            proto_name = prop.proto_name
            assert proto_name in message.fields_by_name, f"{name}.{prop.name} is not in api.proto"


def test_options_answer_what_the_contract_declares() -> None:
    options = contract.options()
    assert [s["id"] for s in options["sizes"]] == [s.id for s in contract.SIZES]
    assert [s["name"] for s in options["styles"]] == [s.name for s in contract.STYLES]
    assert options["steps"] == {"min": 1, "max": 60, "default": 30}
    assert set(options["fields"]) == {field.name for field in contract.REQUEST_FIELDS}
    json.dumps(options)  # plain JSON


def test_the_service_error_table_adds_only_internal_codes() -> None:
    from talos_common.errors import ERRORS

    assert set(ERRORS) - {error.code for error in contract.ERRORS} == {"hold_expired", "unimplemented"}
