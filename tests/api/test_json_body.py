"""Images are spliced into JSON bodies as base64 without a pass through the JSON encoder."""

from __future__ import annotations

import base64
import json
import os

from talos_gateway.http_bodies import Base64Bytes
from talos_gateway.http_bodies import dumps as _dumps


def test_image_bytes_come_out_as_the_same_json_as_a_base64_string() -> None:
    image = os.urandom(100_003)
    body = {
        "job_id": "j-1",
        "data": [{"b64_json": Base64Bytes(image), "seed": 7}],
        "note": 'é ✓ \n " \\ </script>',
        "empty": Base64Bytes(b""),
    }
    plain = {**body, "data": [{"b64_json": base64.b64encode(image).decode(), "seed": 7}], "empty": ""}
    assert _dumps(body) == json.dumps(plain, separators=(",", ":"), ensure_ascii=False).encode()


def test_a_string_that_looks_like_the_splice_slot_is_left_alone() -> None:
    body = {"a": "\x00base64\x00", "b": Base64Bytes(b"\x01\x02"), "c": ["\x00base64\x00"]}
    assert json.loads(_dumps(body)) == {"a": "\x00base64\x00", "b": "AQI=", "c": ["\x00base64\x00"]}
