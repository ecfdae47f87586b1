"""Probing cooldown: bursts of blocked prompts escalate an account's wait (3, 9, 15 minutes)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from talos.moderation.v1 import moderation_pb2
from talos_moderation.cooldown import Cooldowns

from .conftest import RunningModeration


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def burst(cooldowns: Cooldowns, account: str, n: int = 3) -> list[int]:
    return [cooldowns.record_block(account) for _ in range(n)]


def test_a_burst_starts_an_escalating_cooldown() -> None:
    clock = Clock()
    cd = Cooldowns(burst=3, window=600, steps=(180, 540, 900), reset=3600, clock=clock)
    assert burst(cd, "acct") == [0, 0, 180]
    assert cd.remaining("acct") == 180
    clock.now += 100
    assert cd.remaining("acct") == 80
    clock.now += 80
    assert cd.remaining("acct") == 0
    assert burst(cd, "acct") == [0, 0, 540]
    clock.now += 540
    assert burst(cd, "acct") == [0, 0, 900]
    clock.now += 900
    assert burst(cd, "acct") == [0, 0, 900]  # the last step repeats


def test_blocks_spread_beyond_the_window_do_not_add_up() -> None:
    clock = Clock()
    cd = Cooldowns(burst=3, window=600, steps=(180,), reset=3600, clock=clock)
    for _ in range(6):
        assert cd.record_block("acct") == 0
        clock.now += 301
    assert cd.remaining("acct") == 0


def test_quiet_accounts_start_again_from_the_first_step() -> None:
    clock = Clock()
    cd = Cooldowns(burst=2, window=600, steps=(180, 540), reset=3600, clock=clock)
    assert burst(cd, "acct", 2) == [0, 180]
    clock.now += 3600
    assert burst(cd, "acct", 2) == [0, 180]


def test_accounts_are_separate_and_bounded() -> None:
    clock = Clock()
    cd = Cooldowns(burst=1, window=600, steps=(60,), max_accounts=2, clock=clock)
    assert cd.record_block("a") == 60
    assert cd.remaining("b") == 0
    cd.record_block("b")
    cd.record_block("c")
    assert len(cd) == 2 and cd.remaining("a") == 0  # least recently blocked was forgotten
    assert cd.record_block("") == 0 and cd.remaining("") == 0  # no account, no tracking


async def test_cooldown_over_grpc(start_moderation: Callable[..., Awaitable[RunningModeration]]) -> None:
    mod = await start_moderation(cooldown_burst=3, cooldown_steps_seconds=(180, 540, 900))
    clock = Clock()
    mod.servicer.cooldowns.clock = clock
    bad = moderation_pb2.CheckPromptRequest(prompt="zorbling blarfed", account_id="acct-1")
    fine = moderation_pb2.CheckPromptRequest(prompt="a cat on a sofa", account_id="acct-1")
    first = [await mod.stub.CheckPrompt(bad) for _ in range(3)]
    assert [v.category for v in first] == ["minor_sexual"] * 3
    assert [v.cooldown_seconds for v in first] == [0, 0, 180]
    waiting = await mod.stub.CheckPrompt(fine)
    assert waiting.blocked and waiting.category == "cooldown" and waiting.cooldown_seconds == 180
    other = await mod.stub.CheckPrompt(moderation_pb2.CheckPromptRequest(prompt="a cat", account_id="acct-2"))
    assert not other.blocked
    clock.now += 181
    assert not (await mod.stub.CheckPrompt(fine)).blocked
    second = [await mod.stub.CheckPrompt(bad) for _ in range(3)]
    assert second[-1].cooldown_seconds == 540
    clock.now += 100
    assert (await mod.stub.CheckPrompt(fine)).cooldown_seconds == 440
