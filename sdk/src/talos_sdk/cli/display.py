"""The progress display of ``talos generate``: one bar for the whole job, on stderr.

On a terminal it is one line redrawn in place; elsewhere (a log, a pipe) plain lines, at most
about ten per job. With several images the bar counts the steps of all of them. A preview the
gateway withheld (it looked like adult content and 18+ is off) is said once per image.
"""

from __future__ import annotations

import time
from typing import IO

from talos.api.v1 import contract
from talos_sdk.events import Completed, Event, Failed, Progress, Queued, Started

# What a withheld preview means, in the contract's words.
WITHHELD_NOTE = next(p.description for p in contract.EVENTS["progress"] if p.name == "preview_withheld")


def duration_text(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class ProgressDisplay:
    """Shows a job's events as a progress bar; ``images`` is how many the request asked for."""

    WIDTH = 30

    def __init__(self, stream: IO[str], *, images: int = 1, enabled: bool = True) -> None:
        self.stream = stream
        self.images = max(1, images)
        self.enabled = enabled
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._line_open = False
        self._last_width = 0
        self._announced = False
        self._steps: dict[int, int] = {}
        self._totals: dict[int, int] = {}
        self._ended: set[int] = set()
        self._withheld: set[int] = set()
        self._first: tuple[float, int] | None = None  # when the first step came, and the sum then
        self._last_decile = -1

    def _label(self, image: int) -> str:
        return f"image {image}: " if self.images > 1 else ""

    def _emit(self, text: str, *, transient: bool) -> None:
        if not self.enabled:
            return
        if self.tty:
            pad = " " * max(0, self._last_width - len(text))
            self.stream.write("\r" + text + pad)
            self._last_width = len(text)
            self._line_open = True
            if not transient:
                self.stream.write("\n")
                self._line_open = False
                self._last_width = 0
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def counts(self) -> tuple[int, int]:
        """Steps done and in all, over every image (an image not started yet counts the others'
        step count; a failed one counts as done)."""
        per_image = max(self._totals.values(), default=1)
        total = sum(self._totals.get(i, per_image) for i in range(self.images))
        return min(total, sum(self._steps.values())), total

    def bar(self) -> str:
        done, total = self.counts()
        filled = self.WIDTH * done // max(total, 1)
        percent = 100 * done // max(total, 1)
        text = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] "
        if self.images > 1:
            text += f"{len(self._ended)}/{self.images} images, "
        text += f"step {done}/{total} {percent:3d}%"
        now = time.monotonic()
        if self._first is None:
            self._first = (now, done)
        elif self._first[1] < done < total:
            per_step = (now - self._first[0]) / (done - self._first[1])
            text += f"  ETA {duration_text(per_step * (total - done))}"
        return text

    def _show_bar(self) -> None:
        text = self.bar()
        if self.tty:
            self._emit(text, transient=len(self._ended) < self.images)
            return
        done, total = self.counts()
        decile = 10 * done // max(total, 1)
        if decile != self._last_decile:
            self._last_decile = decile
            self._emit(text, transient=False)

    def show(self, event: Event) -> None:
        if isinstance(event, Queued):
            eta = f", done in ~{duration_text(event.eta_seconds)}" if event.eta_seconds > 0 else ""
            self._emit(f"{self._label(event.image)}queued: position {event.position}{eta}", transient=True)
        elif isinstance(event, Started):
            if not self._announced:
                self._announced = True
                self._emit(f"started job {event.job_id}", transient=not self.tty)
        elif isinstance(event, Progress):
            self._steps[event.image] = event.step
            self._totals[event.image] = event.total_steps
            if event.preview_withheld and event.image not in self._withheld:
                self._withheld.add(event.image)
                self._emit(self._label(event.image) + WITHHELD_NOTE, transient=False)
            self._show_bar()
        elif isinstance(event, Completed | Failed):
            self._ended.add(event.image)
            total = self._totals.get(event.image) or max(self._totals.values(), default=0)
            if total:  # an ended image's steps are done, whether it rendered them or failed
                self._steps[event.image] = self._totals[event.image] = total
                self._show_bar()
            if len(self._ended) >= self.images:
                self.finish()

    def finish(self) -> None:
        if self.enabled and self.tty and self._line_open:
            self.stream.write("\n")
            self.stream.flush()
            self._line_open = False
            self._last_width = 0
