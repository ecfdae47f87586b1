"""The one table of legal moves for jobs and attempts, and the one time-limit formula."""

from __future__ import annotations

import dataclasses

import pytest

from talos_gateway.config import Settings
from talos_gateway.relay.states import (
    ATTEMPT_MOVES,
    JOB_MOVES,
    REFUSED,
    AttemptState,
    IllegalTransition,
    JobState,
    advance,
)
from talos_gateway.relay.timing import attempt_time_limit, job_deadline


def test_every_state_has_a_row_and_the_ends_lead_nowhere() -> None:
    assert set(JOB_MOVES) == set(JobState)
    assert set(ATTEMPT_MOVES) == set(AttemptState)
    assert JOB_MOVES[JobState.DONE] == frozenset()
    assert ATTEMPT_MOVES[AttemptState.ENDED] == frozenset()
    # Every state but the end can reach the end.
    for table, end in ((JOB_MOVES, JobState.DONE), (ATTEMPT_MOVES, AttemptState.ENDED)):
        for start in table:
            seen, frontier = {start}, [start]
            while frontier:
                for nxt in table[frontier.pop()]:  # type: ignore[index]
                    if nxt not in seen:
                        seen.add(nxt)
                        frontier.append(nxt)
            assert end in seen, start


def test_a_job_goes_round_and_ends_once() -> None:
    state = JobState.NEW
    for nxt in (JobState.QUEUED, JobState.DISPATCHED, JobState.QUEUED, JobState.DISPATCHED, JobState.DONE):
        state = advance(state, nxt, "job")
    before = REFUSED.count
    with pytest.raises(IllegalTransition):
        advance(state, JobState.QUEUED, "job")
    with pytest.raises(IllegalTransition):
        advance(JobState.NEW, JobState.DISPATCHED, "job")
    assert REFUSED.count == before + 2
    REFUSED.count = before  # counted on purpose here; the relay's own moves must stay clean


def test_an_attempt_being_checked_can_only_end() -> None:
    state = advance(AttemptState.FETCHING, AttemptState.SENT, "attempt")
    state = advance(state, AttemptState.RUNNING, "attempt")
    state = advance(state, AttemptState.VALIDATING, "attempt")
    before = REFUSED.count
    for wrong in (AttemptState.CANCELLING, AttemptState.RUNNING, AttemptState.SENT):
        with pytest.raises(IllegalTransition):
            advance(state, wrong, "attempt")
    REFUSED.count = before
    assert advance(state, AttemptState.ENDED, "attempt") is AttemptState.ENDED


def test_the_deadline_covers_every_attempt_and_the_wait() -> None:
    settings = dataclasses.replace(
        Settings(), job_timeout_base_seconds=10.0, job_timeout_per_step_megapixel_seconds=0.5
    )
    limit = attempt_time_limit(settings, 1000, 1000, 30)
    assert limit == pytest.approx(10.0 + 0.5 * 30 * 1.0)
    deadline = job_deadline(settings, 1000, 1000, 30)
    assert deadline == pytest.approx(
        settings.queue_timeout_seconds
        + settings.max_attempts * limit
        + 4 * settings.downstream_timeout_seconds
    )
    assert attempt_time_limit(settings, 2000, 1000, 30) > limit
