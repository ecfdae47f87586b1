"""The ModerationService over real gRPC sockets: malformed images, failing closed, no content in logs."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from talos.moderation.v1 import moderation_pb2, moderation_pb2_grpc
from talos_common import errors
from talos_dev.procs import ServiceProcess, python_module
from talos_moderation.config import Settings
from talos_moderation.service import ImageResult

from .conftest import TEST_RULES, RunningModeration, gradient, png
from .test_images import raw_png

Start = Callable[..., Awaitable[RunningModeration]]


def _jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


MALFORMED = {
    "empty": (b"", "undecodable"),
    "random_bytes": (
        np.random.default_rng(5).integers(0, 256, 20_000, dtype=np.uint8).tobytes(),
        "undecodable",
    ),
    "truncated_png": (png(gradient(128))[:900], "undecodable"),
    "truncated_jpeg": (_jpeg(gradient(128))[:700], "undecodable"),
    "header_bomb": (raw_png(50_000, 50_000), "too_large"),
    "zero_size": (raw_png(0, 0), "undecodable"),
}


async def test_malformed_images_are_blocked_and_the_service_keeps_serving(start_moderation: Start) -> None:
    mod = await start_moderation()
    for name, (data, category) in MALFORMED.items():
        verdict = await mod.stub.ClassifyImage(moderation_pb2.ClassifyImageRequest(image=data))
        assert verdict.blocked, name
        assert verdict.category == category, name
        assert verdict.score == 0.0
    # 16-bit PNGs are converted properly and classified, not crashed on.
    wide = io.BytesIO()
    Image.fromarray(np.full((64, 64), 20000, dtype=np.uint16)).save(wide, format="PNG")
    verdict = await mod.stub.ClassifyImage(moderation_pb2.ClassifyImageRequest(image=wide.getvalue()))
    assert verdict.category in ("none", "adult") and 0.0 <= verdict.score <= 1.0
    # Still serving: health says so and a real image is classified.
    health = health_pb2_grpc.HealthStub(mod.channel)
    status = await health.Check(
        health_pb2.HealthCheckRequest(service="talos.moderation.v1.ModerationService")
    )
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    good = await mod.stub.ClassifyImage(moderation_pb2.ClassifyImageRequest(image=png(gradient(512))))
    assert not good.blocked and good.category == "none"
    assert 0.0 <= good.score < good.threshold
    assert good.threshold == pytest.approx(Settings().nsfw_threshold)
    assert good.model_version.startswith("open_nsfw/")


async def test_images_over_the_byte_cap_are_too_large(start_moderation: Start) -> None:
    mod = await start_moderation(max_image_bytes=10_000)
    verdict = await mod.stub.ClassifyImage(
        moderation_pb2.ClassifyImageRequest(image=png(gradient(256, seed=9)))
    )
    assert verdict.blocked and verdict.category == "too_large"


async def test_the_threshold_decides(start_moderation: Start) -> None:
    # Threshold 0: every decodable image scores at or above it, so it is blocked as adult.
    mod = await start_moderation(nsfw_threshold=0.0)
    verdict = await mod.stub.ClassifyImage(moderation_pb2.ClassifyImageRequest(image=png(gradient(256))))
    assert verdict.blocked and verdict.category == "adult" and verdict.threshold == 0.0


async def test_classifications_run_concurrently_off_the_event_loop(
    start_moderation: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    mod = await start_moderation(classify_workers=2)
    # Each check is held in its worker until released: run on the loop, it would stall the
    # prompt check below; run one at a time, the two would never be inside at once.
    real_check = mod.servicer.images.check
    release = threading.Event()
    both_inside = threading.Event()
    inside: list[int] = []
    lock = threading.Lock()

    def held_check(data: bytes) -> ImageResult:
        with lock:
            inside.append(1)
            if len(inside) >= 2:
                both_inside.set()
        release.wait(30)
        return real_check(data)

    monkeypatch.setattr(mod.servicer.images, "check", held_check)
    images = [png(gradient(256, seed=s)) for s in range(6)]
    calls = [
        asyncio.ensure_future(mod.stub.ClassifyImage(moderation_pb2.ClassifyImageRequest(image=i)))
        for i in images
    ]
    try:
        assert await asyncio.to_thread(both_inside.wait, 30), "two classifications never ran at once"
        # While images are being classified the loop still answers prompt checks.
        prompt = await asyncio.wait_for(
            mod.stub.CheckPrompt(moderation_pb2.CheckPromptRequest(prompt="a cat")), 10
        )
        assert not any(call.done() for call in calls)
    finally:
        release.set()
    results = [*await asyncio.gather(*calls), prompt]
    assert all(not r.blocked for r in results)


async def test_prompt_checks_over_grpc(start_moderation: Start) -> None:
    mod = await start_moderation()
    verdict = await mod.stub.CheckPrompt(
        moderation_pb2.CheckPromptRequest(
            prompt="a portrait", final_prompt="a portrait, zorbling, blarfed", account_id="a"
        )
    )
    assert verdict.blocked and verdict.category == "minor_sexual"
    assert verdict.policy_version == "test-2026.11.1"
    ok = await mod.stub.CheckPrompt(
        moderation_pb2.CheckPromptRequest(prompt="a blarfed statue", negative_prompt="zorbling")
    )
    assert not ok.blocked and ok.category == "none" and ok.cooldown_seconds == 0


async def test_missing_rules_block_every_prompt_but_the_service_serves(
    start_moderation: Start, tmp_path: Path
) -> None:
    mod = await start_moderation(rules_path=tmp_path / "missing.json")
    for prompt in ("a cat on a sofa", "a mountain lake", ""):
        verdict = await mod.stub.CheckPrompt(moderation_pb2.CheckPromptRequest(prompt=prompt, account_id="x"))
        assert verdict.blocked and verdict.category == "policy_unavailable"
        assert verdict.policy_version == "unavailable" and verdict.cooldown_seconds == 0
    image = await mod.stub.ClassifyImage(moderation_pb2.ClassifyImageRequest(image=png(gradient(128))))
    assert not image.blocked


def test_process_logs_no_prompt_text_at_debug_and_drains_on_sigterm(tmp_path: Path) -> None:
    log_path = tmp_path / "moderation.log"
    proc = ServiceProcess(
        "moderation",
        python_module("talos_moderation"),
        {
            "TALOS_MODERATION_PORT": "0",
            "TALOS_MODERATION_LOG_LEVEL": "debug",
            "TALOS_MODERATION_RULES_PATH": str(TEST_RULES),
            "GRPC_VERBOSITY": os.environ.get("GRPC_VERBOSITY", "ERROR"),
        },
        log_path,
    )
    ready = proc.start(timeout=120)
    marker = "quokkamarmalade"
    try:
        assert ready["service"] == "moderation" and ready["grpc"].startswith("127.0.0.1:")
        with grpc.insecure_channel(ready["grpc"]) as channel:
            stub = moderation_pb2_grpc.ModerationServiceStub(channel)
            for prompt in (f"{marker} in a meadow", f"zorbling blarfed {marker}"):
                stub.CheckPrompt(
                    moderation_pb2.CheckPromptRequest(
                        prompt=prompt,
                        negative_prompt=f"{marker} negative",
                        final_prompt=f"{prompt}, {marker} preset",
                        account_id="acct-log",
                    ),
                    timeout=30,
                )
            image = png(gradient(64))
            stub.ClassifyImage(moderation_pb2.ClassifyImageRequest(image=image), timeout=30)
            try:
                stub.CheckPrompt(moderation_pb2.CheckPromptRequest(prompt="x" * 30_000), timeout=30)
            except grpc.RpcError as exc:  # pragma: no cover - a verdict is expected, not an error
                raise AssertionError(errors.from_rpc_error(exc)) from exc
        proc.signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.stop()
    text = log_path.read_text("utf-8")
    assert marker not in text
    assert "zorbling" not in text and "blarfed" not in text
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    verdicts = [r for r in records if r.get("msg") == "prompt verdict"]
    assert [r["verdict"] for r in verdicts] == ["allowed", "blocked", "blocked"]
    assert [r["category"] for r in verdicts] == ["none", "minor_sexual", "prompt_too_long"]
    assert all(r["policy_version"] == "test-2026.11.1" and "latency_ms" in r for r in verdicts)
    assert any(r.get("msg") == "image verdict" and r["verdict"] == "allowed" for r in records)
    assert any(r.get("msg") == "draining" for r in records)
    # Debug logging was really on (so the absence of text above means something).
    assert any(r.get("level") == "debug" and r.get("msg") == "prompt checked" for r in records)
