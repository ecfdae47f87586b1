"""Batching across requests on the CPU with the built-in test model: jobs share UNet passes,
each keeping its own noise, guidance, schedule, progress, previews and cancel."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pytest

from talos_render.engine import Cancelled, Engine, RenderRequest
from talos_render.jobs import Rendered
from talos_render.loading import LoadedModel

from .pictures import assert_same_picture, unet_batches

# Long enough that the batch window never ends before every job of a test is ready.
WINDOW_MS = 60_000.0


def request(seed: int, **changes: object) -> RenderRequest:
    fields: dict[str, object] = {
        "prompt": f"a lighthouse on a cliff, take {seed}",
        "negative_prompt": "blurry",
        "width": 256,
        "height": 256,
        "steps": 6,
        "guidance": 5.0,
        "seed": seed,
        "preview_every": 2,
    }
    fields.update(changes)
    return RenderRequest(**fields)  # type: ignore[arg-type]


@dataclass
class Tracked:
    """One submitted job: its future and every progress event it delivered."""

    request: RenderRequest
    future: Future[Rendered]
    events: list[tuple[int, int, bool]] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def steps(self) -> list[int]:
        return [step for step, _, _ in self.events]


def submit(
    engine: Engine,
    req: RenderRequest,
    on_step: Callable[[Tracked, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> Tracked:
    holder: list[Tracked] = []
    cancel = cancel or threading.Event()

    def on_progress(step: int, total: int, preview: bytes) -> None:
        tracked = holder[0]
        tracked.events.append((step, total, bool(preview)))
        if on_step is not None:
            on_step(tracked, step)

    tracked = Tracked(request=req, future=Future(), cancel=cancel)
    holder.append(tracked)
    tracked.future = engine.submit(req, on_progress, cancel)
    return tracked


@contextmanager
def batched_engine(loaded: LoadedModel, max_batch: int) -> Iterator[Engine]:
    engine = Engine(loaded, preview_size=64, max_batch=max_batch, batch_window_ms=WINDOW_MS)
    try:
        yield engine
    finally:
        engine.close()


def alone(engine: Engine, req: RenderRequest) -> np.ndarray:
    pixels, _ = engine.render_pixels(req, lambda *_: None, threading.Event())
    return pixels


@pytest.mark.parametrize("count", [2, 4])
def test_jobs_share_passes_and_each_seed_keeps_its_picture(
    engine: Engine, loaded: LoadedModel, count: int
) -> None:
    requests = [request(100 + i) for i in range(count)]
    references = [alone(engine, r) for r in requests]
    with batched_engine(loaded, count) as batched, unet_batches(batched) as rows:
        jobs = [submit(batched, r) for r in requests]
        results = [job.future.result(timeout=120) for job in jobs]
    assert rows == [2 * count] * 6  # every step of every job in one pass
    for job, result, reference in zip(jobs, results, references, strict=True):
        assert job.steps == [1, 2, 3, 4, 5, 6]
        assert {total for _, total, _ in job.events} == {6}
        assert [step for step, _, preview in job.events if preview] == [2, 4]
        assert_same_picture(result.pixels, reference)
    # Different seeds, different pictures: the bound above is not met by any two images.
    assert int(np.abs(results[0].pixels.astype(np.int16) - results[1].pixels.astype(np.int16)).max()) > 50


def test_different_steps_and_guidance_batch_together(engine: Engine, loaded: LoadedModel) -> None:
    """Each job keeps its own schedule and guidance; guidance 1 brings one row, not two."""
    requests = [
        request(7, steps=4, guidance=5.0),
        request(8, steps=7, guidance=1.0),
        request(9, steps=5, guidance=9.0),
    ]
    references = [alone(engine, r) for r in requests]
    with batched_engine(loaded, 3) as batched, unet_batches(batched) as rows:
        jobs = [submit(batched, r) for r in requests]
        results = [job.future.result(timeout=120) for job in jobs]
    # 2 + 1 + 2 rows while all run; the 4-step job leaves, then the 5-step one.
    assert rows == [5, 5, 5, 5, 3, 1, 1]
    for job, result, reference in zip(jobs, results, references, strict=True):
        assert job.steps == list(range(1, job.request.steps + 1))
        assert_same_picture(result.pixels, reference)


def test_cancelling_one_of_four_leaves_three_correct_pictures(engine: Engine, loaded: LoadedModel) -> None:
    # The cancelled job asks for no previews, so its progress (and the cancel its callback
    # sets) is delivered on the render thread itself, at a known step.
    requests = [request(200 + i, steps=8, preview_every=0 if i == 2 else 2) for i in range(4)]
    references = [alone(engine, r) for r in requests]

    def cancel_at_three(tracked: Tracked, step: int) -> None:
        if step == 3:
            tracked.cancel.set()

    with batched_engine(loaded, 4) as batched, unet_batches(batched) as rows:
        jobs = [submit(batched, r, cancel_at_three if i == 2 else None) for i, r in enumerate(requests)]
        with pytest.raises(Cancelled):
            jobs[2].future.result(timeout=120)
        results = {i: jobs[i].future.result(timeout=120) for i in (0, 1, 3)}
    assert rows == [8, 8, 8, 6, 6, 6, 6, 6]  # it left right after its third step
    assert jobs[2].steps == [1, 2, 3]
    for i, result in results.items():
        assert jobs[i].steps == list(range(1, 9))
        assert_same_picture(result.pixels, references[i])


def test_a_job_joins_a_running_batch_between_steps(engine: Engine, loaded: LoadedModel) -> None:
    first_request, second_request = request(31, steps=30, preview_every=0), request(32, steps=4)
    references = [alone(engine, first_request), alone(engine, second_request)]
    third_step = threading.Event()
    with batched_engine(loaded, 2) as batched, unet_batches(batched) as rows:
        # One job alone: the window ends early only when the batch is full, so shorten it.
        batched.worker.window = 0.0
        first = submit(batched, first_request, lambda _t, step: third_step.set() if step == 3 else None)
        assert third_step.wait(60)
        second = submit(batched, second_request)
        results = [first.future.result(timeout=120), second.future.result(timeout=120)]
    joined = rows.index(4)
    assert joined >= 3 and rows[:joined] == [2] * joined
    assert rows[joined : joined + 4] == [4, 4, 4, 4] and set(rows[joined + 4 :]) == {2}
    assert len(rows) == 30  # the second job's steps all rode along
    assert first.steps == list(range(1, 31)) and second.steps == [1, 2, 3, 4]
    for result, reference in zip(results, references, strict=True):
        assert_same_picture(result.pixels, reference)


def test_jobs_beyond_the_batch_wait_for_a_free_place(engine: Engine, loaded: LoadedModel) -> None:
    requests = [request(40 + i, steps=3, guidance=1.0) for i in range(3)]
    with batched_engine(loaded, 2) as batched, unet_batches(batched) as rows:
        batched.worker.window = 0.0  # the third job would wait a whole window once alone
        jobs = [submit(batched, r) for r in requests]
        for job in jobs:
            job.future.result(timeout=120)
    assert max(rows) == 2  # never more than two jobs in a pass
    assert sum(rows) == 9  # every job ran its three steps
    for job in jobs:
        assert job.steps == [1, 2, 3]


def test_a_job_cancelled_while_it_waits_for_a_place_is_answered_at_once(
    engine: Engine, loaded: LoadedModel
) -> None:
    waiting_cancel = threading.Event()
    second_step = threading.Event()

    def on_step(_tracked: Tracked, step: int) -> None:
        if step == 2:
            second_step.set()
        if step == 10:
            waiting_cancel.set()  # long after the waiting job's preparation ended

    with batched_engine(loaded, 1) as batched:
        running = submit(batched, request(50, steps=40, preview_every=0), on_step)
        assert second_step.wait(60)
        waiting = submit(batched, request(51, steps=4), cancel=waiting_cancel)
        assert waiting_cancel.wait(60)
        with pytest.raises(Cancelled):
            waiting.future.result(timeout=120)
        # Answered while the running job was still denoising, not once it left.
        assert not running.future.done() and len(running.steps) < 40
        running.cancel.set()
        with pytest.raises(Cancelled):
            running.future.result(timeout=120)
    assert waiting.steps == []
