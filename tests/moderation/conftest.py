"""Fixtures for the moderation tests: the made-up test rules, one loaded model, a real server."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from talos.moderation.v1 import moderation_pb2_grpc
from talos_common import server
from talos_moderation.classifier import NsfwClassifier
from talos_moderation.config import MiB, Settings
from talos_moderation.policy import PromptPolicy
from talos_moderation.service import SERVICE_NAME, ModerationServicer, build_servicer

HERE = Path(__file__).resolve().parent
# Made-up trigger words (see its "about"): minor "zorbling", sexual "blarfed", and so on.
TEST_RULES = HERE / "test_rules.json"


@pytest.fixture(scope="session")
def test_policy() -> PromptPolicy:
    policy = PromptPolicy.load(TEST_RULES)
    assert policy.available, policy.error
    return policy


@pytest.fixture(scope="session")
def classifier() -> NsfwClassifier:
    model = NsfwClassifier(threads=1, device="cpu")
    model.warmup()
    return model


def png(arr: np.ndarray, **save: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", **save)
    return buf.getvalue()


def gradient(size: int = 256, seed: int = 0) -> np.ndarray:
    """A smooth colour gradient with some noise: a real picture of nothing in particular."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    rgb = np.stack([x * 255, y * 255, (1 - x) * 200 + 30], axis=-1)
    rgb += rng.normal(0, 12, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


@dataclass
class RunningModeration:
    stub: moderation_pb2_grpc.ModerationServiceStub
    servicer: ModerationServicer
    address: str
    channel: grpc.aio.Channel


@pytest.fixture
async def start_moderation(
    classifier: NsfwClassifier,
) -> AsyncIterator[Callable[..., Awaitable[RunningModeration]]]:
    """Starts the real servicer on a real loopback socket (port 0), sharing the loaded model."""
    started: list[tuple[grpc.aio.Server, grpc.aio.Channel, ThreadPoolExecutor]] = []

    async def start(**overrides: object) -> RunningModeration:
        config = replace(Settings(host="127.0.0.1", port=0, rules_path=TEST_RULES), **overrides)  # type: ignore[arg-type]
        servicer, executor = build_servicer(config, classifier)
        grpc_server, health = server.build_server(
            register=[lambda s: moderation_pb2_grpc.add_ModerationServiceServicer_to_server(servicer, s)],
            service_names=[SERVICE_NAME],
            max_message_bytes=config.max_image_bytes + MiB,
        )
        port = server.bind(grpc_server, config.host, 0)
        await grpc_server.start()
        await server.set_serving(health, [SERVICE_NAME], True)
        address = f"127.0.0.1:{port}"
        channel = grpc.aio.insecure_channel(
            address, options=server.message_size_options(config.max_image_bytes + 2 * MiB)
        )
        started.append((grpc_server, channel, executor))
        return RunningModeration(
            moderation_pb2_grpc.ModerationServiceStub(channel), servicer, address, channel
        )

    yield start
    for grpc_server, channel, executor in started:
        await channel.close()
        await grpc_server.stop(None)
        executor.shutdown(wait=True)
