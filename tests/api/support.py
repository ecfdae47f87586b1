"""Small HTTP helpers for the API tests: JSON calls, SSE reading, waiting on observable state."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from PIL import Image

PRICE = 18


@dataclass
class Reply:
    status: int
    headers: Any
    body: Any

    @property
    def code(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return str(self.body["error"].get("code"))
        return None

    @property
    def message(self) -> str:
        return str(self.body["error"]["message"]) if self.code else ""


def auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


class Api:
    """One aiohttp session against the gateway's HTTP side."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=180))

    async def close(self) -> None:
        await self.session.close()

    async def call(
        self,
        method: str,
        path: str,
        key: str | None = None,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> Reply:
        all_headers = {**auth(key), **(headers or {})}
        data: bytes | None = raw
        if body is not None:
            data = json.dumps(body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        async with self.session.request(method, self.base_url + path, data=data, headers=all_headers) as resp:
            text = await resp.read()
            try:
                parsed: Any = json.loads(text) if text else None
            except ValueError:
                parsed = text
            return Reply(resp.status, resp.headers, parsed)

    async def generate(self, key: str, body: dict[str, Any], **kw: Any) -> Reply:
        return await self.call("POST", "/v1/images/generations", key, body, **kw)

    async def submit(self, key: str, body: dict[str, Any], **kw: Any) -> Reply:
        return await self.call("POST", "/v1/jobs", key, body, **kw)

    async def account(self, key: str) -> dict[str, Any]:
        reply = await self.call("GET", "/v1/account", key)
        assert reply.status == 200, reply.body
        return dict(reply.body)

    async def balance(self, key: str) -> int:
        return int((await self.account(key))["balance"])

    async def events(
        self, key: str, job_id: str, *, stop: Callable[[str, dict[str, Any]], bool] | None = None
    ) -> tuple[int, list[tuple[str, dict[str, Any]]]]:
        """Reads /v1/jobs/{id}/events until the terminal event (or ``stop`` says so)."""
        async with self.session.get(self.base_url + f"/v1/jobs/{job_id}/events", headers=auth(key)) as resp:
            if resp.status != 200:
                return resp.status, [("error", json.loads(await resp.read()))]
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            seen: list[tuple[str, dict[str, Any]]] = []
            async for name, data in read_sse(resp):
                seen.append((name, data))
                if name in ("completed", "failed") or (stop is not None and stop(name, data)):
                    break
            return resp.status, seen

    async def metric(self, name: str) -> float:
        """The sum of one Prometheus metric's samples (all label sets) from /metrics."""
        async with self.session.get(self.base_url + "/metrics") as resp:
            text = await resp.text()
        total = 0.0
        pattern = re.compile(rf"^{re.escape(name)}(\{{[^}}]*\}})? ([0-9.e+-]+)$")
        for line in text.splitlines():
            match = pattern.match(line)
            if match:
                total += float(match.group(2))
        return total


async def read_sse(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Parses server-sent events; lines may be megabytes long (an image in base64)."""
    name = "message"
    data: list[str] = []
    buffer = b""
    async for chunk in resp.content.iter_any():
        buffer += chunk
        while b"\n" in buffer:
            raw, buffer = buffer.split(b"\n", 1)
            line = raw.decode().rstrip("\r")
            if not line:
                if data:
                    yield name, json.loads("\n".join(data))
                name, data = "message", []
            elif line.startswith(":"):
                continue
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())


def decode_image(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64, validate=True)))
    image.load()
    return image


async def wait_until(
    check: Callable[[], Awaitable[bool]],
    within: float = 30.0,
    interval: float = 0.05,
    what: str = "condition",
) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
