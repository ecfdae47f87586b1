"""What the HTTP API writes: JSON bodies and SSE events, in the shapes the contract declares.

Every body here is built through :func:`shaped`, which takes the property list of
:mod:`talos.api.v1.contract` and refuses a value it does not declare (or misses one it
requires), so a body and the OpenAPI document generated from the same declaration agree.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterable
from typing import Any

from PIL import Image as PILImage

from talos.api.v1 import contract
from talos.api.v1.contract import Prop
from talos_gateway.job import (
    CompletedEvent,
    FailedEvent,
    Job,
    JobEvent,
    ProgressEvent,
    QueuedEvent,
    StartedEvent,
)


class Base64Bytes:
    """Bytes that appear in JSON as a base64 string.

    A finished image is megabytes of base64; passing it through the JSON encoder as a string
    costs more than encoding it (the encoder scans every character for escapes, then the text is
    encoded to UTF-8 again). Base64 never needs escaping, so :func:`dumps` splices it in.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


# What a Base64Bytes becomes in the first pass: a NUL-framed string, written escaped.
_SLOT = "\x00base64\x00"
_SLOT_JSON = json.dumps(_SLOT).encode()


def dumps(value: Any) -> bytes:
    blobs: list[bytes] = []

    def slot(obj: object) -> str:
        if isinstance(obj, Base64Bytes):
            blobs.append(obj.data)
            return _SLOT
        raise TypeError(f"{type(obj).__name__} is not JSON serializable")

    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=slot).encode()
    if not blobs:
        return text
    parts = text.split(_SLOT_JSON)
    if len(parts) != len(blobs) + 1:  # some other string equals the slot: take the slow road
        return json.dumps(
            value,
            separators=(",", ":"),
            ensure_ascii=False,
            default=lambda obj: base64.b64encode(obj.data).decode("ascii"),
        ).encode()
    pieces = [parts[0]]
    for blob, rest in zip(blobs, parts[1:], strict=True):
        pieces += [b'"', base64.b64encode(blob), b'"', rest]
    return b"".join(pieces)


def shaped(props: Iterable[Prop], **values: Any) -> dict[str, Any]:
    """A body with exactly the declared properties (optional ones only when given)."""
    declared = list(props)
    unknown = set(values) - {prop.name for prop in declared}
    if unknown:
        raise KeyError(f"not in the contract: {sorted(unknown)}")
    body: dict[str, Any] = {}
    for prop in declared:
        if prop.name in values and values[prop.name] is not None:
            value = values[prop.name]
            body[prop.name] = Base64Bytes(value) if prop.kind == "base64" else value
        elif not prop.optional:
            raise KeyError(f"{prop.name} is required by the contract")
    return body


def sse(name: str | None, data: dict[str, Any]) -> bytes:
    head = b"event: " + name.encode() + b"\n" if name else b""
    return head + b"data: " + dumps(data) + b"\n\n"


def error_body(code: str, message: str) -> dict[str, Any]:
    return shaped(contract.RESPONSES["Error"], error={"code": code, "message": message})


# -- TALOS events ------------------------------------------------------------------------------


def event_payload(job: Job, event: JobEvent) -> tuple[str, dict[str, Any]]:
    """The SSE name and JSON of one TALOS job event."""
    common = {"job_id": job.id, "image": event.index}
    values: dict[str, Any]
    if isinstance(event, QueuedEvent):
        name, values = "queued", {"position": event.position, "eta_seconds": round(event.eta_seconds, 2)}
    elif isinstance(event, StartedEvent):
        name, values = "started", {}
    elif isinstance(event, ProgressEvent):
        name, values = (
            "progress",
            {
                "step": event.step,
                "total_steps": event.total_steps,
                "preview_b64": event.preview_jpeg or None,
                "preview_withheld": event.preview_withheld or None,
            },
        )
    elif isinstance(event, CompletedEvent):
        name, values = (
            "completed",
            {
                "b64_json": event.data,
                "seed": event.seed,
                "width": event.width,
                "height": event.height,
                "output_format": event.output_format,
                "credits_charged": event.credits_charged,
                "balance": event.balance,
            },
        )
    else:
        assert isinstance(event, FailedEvent)
        name, values = (
            "failed",
            {
                "error": {"code": event.code, "message": event.message},
                "seed": event.seed,
                "refunded": True,
            },
        )
    return name, shaped(contract.EVENTS[name], **common, **values)


# -- OpenAI's shapes ---------------------------------------------------------------------------


def generation_body(job: Job, ends: list[CompletedEvent | FailedEvent]) -> dict[str, Any]:
    """The 200 of a non-streaming generation: the delivered images and the refunded ones."""
    completed = [end for end in ends if isinstance(end, CompletedEvent)]
    return shaped(
        contract.RESPONSES["Generation"],
        created=job.created,
        job_id=job.id,
        data=[{"b64_json": Base64Bytes(end.data), "seed": end.seed, "image": end.index} for end in completed],
        refunded=[
            {"image": end.index, "seed": end.seed, "error": {"code": end.code, "message": end.message}}
            for end in ends
            if isinstance(end, FailedEvent)
        ],
        size=job.size,
        output_format=job.output_format,
        quality=job.quality,
        background=job.background,
        credits_charged=sum(end.credits_charged for end in completed),
        balance=job.spendable,
    )


def _openai_image(job: Job, data: bytes, size: str, output_format: str) -> dict[str, Any]:
    return {
        "b64_json": data,
        "created_at": int(time.time()),
        "size": size,
        "quality": job.quality,
        "background": job.background,
        "output_format": output_format,
    }


def openai_partial(job: Job, preview: bytes, index: int) -> dict[str, Any]:
    """A live preview as OpenAI's partial image: a small JPEG, its own size stated."""
    with PILImage.open(io.BytesIO(preview)) as decoded:
        width, height = decoded.size  # reads the header only
    name = "image_generation.partial_image"
    return shaped(
        contract.OPENAI_EVENTS[name],
        type=name,
        **_openai_image(job, preview, f"{width}x{height}", "jpeg"),
        partial_image_index=index,
    )


def openai_completed(job: Job, event: CompletedEvent) -> dict[str, Any]:
    name = "image_generation.completed"
    usage = {
        "input_tokens": 0,
        "output_tokens": 0,
        "total_tokens": 0,
        "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
    }
    return shaped(
        contract.OPENAI_EVENTS[name],
        type=name,
        **_openai_image(job, event.data, f"{event.width}x{event.height}", event.output_format),
        usage=usage,
    )


def openai_failed(job: Job, event: FailedEvent) -> dict[str, Any]:
    """One image of several failed: said without an ``error`` key, which the openai package
    would raise on and lose the other images."""
    name = "talos.image_failed"
    return shaped(
        contract.OPENAI_EVENTS[name],
        type=name,
        image=event.index,
        seed=event.seed,
        code=event.code,
        message=event.message,
        refunded=True,
    )
