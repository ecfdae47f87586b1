"""The gRPC ModerationService: CheckPrompt (the hard limit) and ClassifyImage (18+ off).

Logs carry verdicts, categories, latencies, sizes and the policy and model versions; never
prompt text, never image bytes.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health as health_module
from PIL import Image

from talos.moderation.v1 import moderation_pb2, moderation_pb2_grpc
from talos_common import server
from talos_common.service import main as run_service
from talos_common.settings import env_name
from talos_moderation.classifier import NsfwClassifier
from talos_moderation.config import PREFIX, MiB, Settings
from talos_moderation.cooldown import Cooldowns
from talos_moderation.images import ImageRejected, decode, set_pixel_cap
from talos_moderation.policy import MINOR_SEXUAL, PromptPolicy

log = logging.getLogger("talos_moderation")

SERVICE_NAME = moderation_pb2.DESCRIPTOR.services_by_name["ModerationService"].full_name
COOLDOWN = "cooldown"
ADULT = "adult"
NONE = "none"


@dataclass(frozen=True)
class ImageResult:
    blocked: bool
    category: str
    score: float
    reason: str


class ImageChecker:
    """Decode with caps, then classify; runs in worker threads, off the event loop."""

    def __init__(self, classifier: NsfwClassifier, config: Settings) -> None:
        self.classifier = classifier
        self.threshold = config.nsfw_threshold
        self.max_pixels = config.max_image_pixels
        self.max_bytes = config.max_image_bytes
        set_pixel_cap(config.max_image_pixels)

    def warmup(self) -> None:
        """One small image through decode and classify, so the first request pays no setup."""
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (120, 160, 200)).save(buf, format="PNG")
        self.check(buf.getvalue())

    def check(self, data: bytes) -> ImageResult:
        try:
            decoded = decode(data, max_pixels=self.max_pixels, max_bytes=self.max_bytes)
        except ImageRejected as rejected:
            return ImageResult(True, rejected.category, 0.0, rejected.reason)
        score = self.classifier.score(decoded.views)
        if score >= self.threshold:
            return ImageResult(True, ADULT, score, "classifier")
        return ImageResult(False, NONE, score, "classifier")


class ModerationServicer(moderation_pb2_grpc.ModerationServiceServicer):
    def __init__(
        self,
        policy: PromptPolicy,
        images: ImageChecker,
        cooldowns: Cooldowns,
        executor: ThreadPoolExecutor,
    ) -> None:
        self.policy = policy
        self.images = images
        self.cooldowns = cooldowns
        self.executor = executor

    async def CheckPrompt(
        self, request: moderation_pb2.CheckPromptRequest, context: grpc.aio.ServicerContext
    ) -> moderation_pb2.PromptVerdict:
        started = time.perf_counter()
        account = request.account_id
        waiting = self.cooldowns.remaining(account)
        if waiting > 0:
            verdict = moderation_pb2.PromptVerdict(
                blocked=True, category=COOLDOWN, policy_version=self.policy.version, cooldown_seconds=waiting
            )
        else:
            result = self.policy.check(
                request.prompt, request.negative_prompt, request.final_prompt, request.final_negative_prompt
            )
            if log.isEnabledFor(logging.DEBUG):
                # Sizes only: prompt text never reaches a log, not even at debug level.
                log.debug(
                    "prompt checked",
                    extra={
                        "prompt_chars": len(request.prompt),
                        "negative_chars": len(request.negative_prompt),
                        "final_chars": len(request.final_prompt),
                        "final_negative_chars": len(request.final_negative_prompt),
                    },
                )
            cooldown = self.cooldowns.record_block(account) if result.category == MINOR_SEXUAL else 0
            verdict = moderation_pb2.PromptVerdict(
                blocked=result.blocked,
                category=result.category,
                policy_version=result.policy_version,
                cooldown_seconds=cooldown,
            )
        log.info(
            "prompt verdict",
            extra={
                "verdict": "blocked" if verdict.blocked else "allowed",
                "category": verdict.category,
                "policy_version": verdict.policy_version,
                "cooldown_seconds": verdict.cooldown_seconds,
                "account_id": account,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            },
        )
        return verdict

    async def ClassifyImage(
        self, request: moderation_pb2.ClassifyImageRequest, context: grpc.aio.ServicerContext
    ) -> moderation_pb2.ImageVerdict:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self.executor, self.images.check, request.image)
        log.info(
            "image verdict",
            extra={
                "verdict": "blocked" if result.blocked else "allowed",
                "category": result.category,
                "reason": result.reason,
                "score": round(result.score, 4),
                "threshold": self.images.threshold,
                "bytes": len(request.image),
                "model_version": self.images.classifier.version,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            },
        )
        return moderation_pb2.ImageVerdict(
            blocked=result.blocked,
            category=result.category,
            score=result.score,
            threshold=self.images.threshold,
            model_version=self.images.classifier.version,
        )


def build_servicer(
    config: Settings, classifier: NsfwClassifier | None = None
) -> tuple[ModerationServicer, ThreadPoolExecutor]:
    """The servicer and its worker pool; ``classifier`` lets tests share one loaded model."""
    policy = PromptPolicy.load(config.rules_path, max_chars=config.max_prompt_chars)
    if policy.available:
        log.info("policy rules loaded", extra={"policy_version": policy.version})
    else:
        log.error(
            "policy rules unavailable: every check will block",
            extra={"policy_version": policy.version, "error": policy.error},
        )
    if classifier is None:
        # Warmed up below by ImageChecker.warmup, which runs decode and this model together.
        classifier = NsfwClassifier(threads=config.onnx_threads, device=config.device)
    log.info(
        "classifier ready",
        extra={
            "model_version": classifier.version,
            "providers": classifier.providers,
            "threshold": config.nsfw_threshold,
            "onnx_threads": config.onnx_threads,
        },
    )
    cooldowns = Cooldowns(
        burst=config.cooldown_burst,
        window=config.cooldown_window_seconds,
        steps=config.cooldown_steps_seconds,
        reset=config.cooldown_reset_seconds,
        max_accounts=config.cooldown_max_accounts,
    )
    executor = ThreadPoolExecutor(max_workers=max(1, config.classify_workers), thread_name_prefix="classify")
    images = ImageChecker(classifier, config)
    images.warmup()
    return ModerationServicer(policy, images, cooldowns, executor), executor


@dataclass
class ModerationServer:
    """The moderation service, built and bound; :meth:`start` serves, :meth:`stop` drains."""

    server: grpc.aio.Server
    port: int
    health: health_module.aio.HealthServicer
    servicer: ModerationServicer
    executor: ThreadPoolExecutor
    config: Settings

    @property
    def addresses(self) -> dict[str, str]:
        return {"grpc": f"{self.config.host}:{self.port}"}

    async def start(self) -> None:
        await self.server.start()
        await server.set_serving(self.health, [SERVICE_NAME], True)
        log.info("listening", extra={**self.addresses, "policy_version": self.servicer.policy.version})

    async def stop(self) -> None:
        log.info("draining", extra={"grace_seconds": self.config.drain_grace_seconds})
        await server.set_serving(self.health, [SERVICE_NAME], False)
        await self.server.stop(self.config.drain_grace_seconds)
        self.executor.shutdown(wait=False, cancel_futures=True)
        log.info("stopped")


async def create_server(config: Settings, classifier: NsfwClassifier | None = None) -> ModerationServer:
    """Loads the rules and the classifier (off the event loop) and binds the gRPC server."""
    servicer, executor = await asyncio.to_thread(build_servicer, config, classifier)
    grpc_server, health = server.build_server(
        register=[lambda s: moderation_pb2_grpc.add_ModerationServiceServicer_to_server(servicer, s)],
        service_names=[SERVICE_NAME],
        max_message_bytes=config.max_image_bytes + MiB,
    )
    try:
        port = server.bind(grpc_server, config.host, config.port, env_name(PREFIX, "port"))
    except BaseException:
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    return ModerationServer(grpc_server, port, health, servicer, executor, config)


def main() -> None:
    run_service("moderation", Settings, PREFIX, create_server)
