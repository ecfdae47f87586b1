"""A job's events and its result.

A job is one prompt and ``n`` images (1 by default). Each image streams zero or more
:class:`Queued`, one :class:`Started`, a :class:`Progress` per denoising step, then exactly one
terminal event: :class:`Completed` (delivered and charged) or :class:`Failed` (refunded). Every
event says which image it is about in ``image`` (0-based); image ``i`` is rendered with the
request's seed plus ``i``. The job's stream ends after the last image's terminal event.
:class:`Generation` gathers the terminal events of a finished job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from talos_sdk.errors import TalosError, error_for_code

__all__ = [
    "Completed",
    "Event",
    "Failed",
    "Generation",
    "Progress",
    "Queued",
    "Started",
    "event_from_proto",
    "numbered_path",
]


@dataclass(frozen=True)
class Queued:
    """The image waits for a free render node."""

    job_id: str
    #: Which of the request's images (0-based).
    image: int
    #: 1-based place in the network's queue.
    position: int
    #: Estimated seconds until the image is done.
    eta_seconds: float


@dataclass(frozen=True)
class Started:
    """A render node began the image."""

    job_id: str
    image: int


@dataclass(frozen=True)
class Progress:
    """One denoising step of an image finished."""

    job_id: str
    image: int
    #: Steps finished so far, 1-based.
    step: int
    total_steps: int
    #: A small JPEG preview on some steps, else None.
    preview_jpeg: bytes | None = field(default=None, repr=False)
    #: A preview was made but withheld (it looked like adult content and 18+ is off);
    #: ``preview_jpeg`` is then None.
    preview_withheld: bool = False

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0


@dataclass(frozen=True)
class Completed:
    """One finished image, delivered and charged."""

    job_id: str
    image: int
    #: The encoded image.
    data: bytes = field(repr=False)
    #: png, webp or jpeg.
    output_format: str
    width: int
    height: int
    #: This image's seed; the same request with ``seed`` set to it (and n=1) makes it again.
    seed: int
    credits_charged: int
    #: Spendable credits left after the charge (allowance remaining plus balance).
    balance: int

    def save(self, path: str | Path) -> Path:
        """Writes the image bytes to ``path`` and returns it."""
        target = Path(path)
        target.write_bytes(self.data)
        return target


@dataclass(frozen=True)
class Failed:
    """One image ended without being delivered; its hold was released."""

    job_id: str
    image: int
    #: The API error code, e.g. output_blocked, no_capacity, timeout, cancelled.
    code: str
    message: str
    #: The seed the image would have used.
    seed: int
    refunded: bool = True

    def error(self) -> TalosError:
        """The exception that stands for this failure."""
        return error_for_code(self.code, self.message, job_id=self.job_id)


Event = Queued | Started | Progress | Completed | Failed


def event_from_proto(message: Any) -> Event | None:
    """Converts a ``talos.api.v1.JobEvent``; None for an event kind this SDK does not know."""
    kind = message.WhichOneof("event")
    job_id, image = message.job_id, int(message.image)
    if kind == "queued":
        return Queued(job_id, image, int(message.queued.position), float(message.queued.eta_seconds))
    if kind == "started":
        return Started(job_id, image)
    if kind == "progress":
        p = message.progress
        return Progress(
            job_id,
            image,
            int(p.step),
            int(p.total_steps),
            bytes(p.preview_jpeg) or None,
            bool(p.preview_withheld),
        )
    if kind == "completed":
        c = message.completed
        return Completed(
            job_id=job_id,
            image=image,
            data=bytes(c.image),
            output_format=c.output_format,
            width=int(c.width),
            height=int(c.height),
            seed=int(c.seed),
            credits_charged=int(c.credits_charged),
            balance=int(c.balance),
        )
    if kind == "failed":
        f = message.failed
        return Failed(
            job_id, image, f.error.code or "internal", f.error.message, int(f.seed), bool(f.refunded)
        )
    return None


def numbered_path(path: str | Path, image: int, count: int) -> Path:
    """Where image ``image`` of ``count`` goes: ``path`` itself for one image, else
    ``out.png`` → ``out-0.png``, ``out-1.png``... (the index before the extension)."""
    target = Path(path)
    if count <= 1:
        return target
    return target.with_name(f"{target.stem}-{image}{target.suffix}")


@dataclass(frozen=True)
class Generation:
    """A finished job: the images delivered (charged) and those refunded, each in image order."""

    job_id: str
    images: tuple[Completed, ...]
    failed: tuple[Failed, ...] = ()
    #: Spendable credits after the last image delivered (None when none was).
    balance: int | None = None

    @property
    def n(self) -> int:
        """Images the job ended: delivered plus refunded."""
        return len(self.images) + len(self.failed)

    @property
    def credits_charged(self) -> int:
        return sum(image.credits_charged for image in self.images)

    def save(self, path: str | Path) -> list[Path]:
        """Writes every delivered image (names as :func:`numbered_path`) and returns the paths."""
        return [image.save(numbered_path(path, image.image, self.n)) for image in self.images]


class Collector:
    """Gathers a stream's terminal events into a :class:`Generation`."""

    def __init__(self) -> None:
        self._ends: dict[int, Completed | Failed] = {}
        self._balance: int | None = None

    def add(self, event: Event) -> None:
        if isinstance(event, Completed):
            self._balance = event.balance
        if isinstance(event, Completed | Failed):
            self._ends[event.image] = event

    def generation(self, job_id: str | None) -> Generation:
        """The job's result; when no image was delivered, the first failure is raised instead."""
        ends = [self._ends[index] for index in sorted(self._ends)]
        images = tuple(end for end in ends if isinstance(end, Completed))
        failed = tuple(end for end in ends if isinstance(end, Failed))
        if not images and failed:
            raise failed[0].error()
        return Generation(job_id or "", images, failed, self._balance)
