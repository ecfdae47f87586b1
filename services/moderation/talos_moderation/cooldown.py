"""Probing cooldown: an account whose prompts keep hitting the hard limit must wait.

``burst`` blocks within ``window`` seconds start a cooldown. The first lasts ``steps[0]``
seconds; each further burst escalates to the next step (the last repeats). An account with
no block for ``reset`` seconds starts again from the first step. Only ids and timestamps are
kept, in memory, never text; the least recently blocked accounts are forgotten first when
``max_accounts`` is reached.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class _Account:
    blocks: deque[float] = field(default_factory=deque)
    level: int = 0  # cooldowns served so far
    until: float = 0.0  # end of the current cooldown
    last_block: float = 0.0


class Cooldowns:
    def __init__(
        self,
        *,
        burst: int = 3,
        window: float = 600.0,
        steps: Sequence[int] = (180, 540, 900),
        reset: float = 6 * 3600.0,
        max_accounts: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or not steps or any(s <= 0 for s in steps):
            raise ValueError("cooldown needs burst >= 1 and positive steps")
        self.burst = burst
        self.window = window
        self.steps = tuple(steps)
        self.reset = reset
        self.max_accounts = max_accounts
        self.clock = clock
        self._accounts: OrderedDict[str, _Account] = OrderedDict()

    def remaining(self, account_id: str) -> int:
        """Whole seconds the account still has to wait; 0 when it may ask."""
        if not account_id:
            return 0
        account = self._accounts.get(account_id)
        if account is None:
            return 0
        left = account.until - self.clock()
        return math.ceil(left) if left > 0 else 0

    def record_block(self, account_id: str) -> int:
        """Notes one blocked prompt; returns the cooldown it started (seconds), else 0."""
        if not account_id:
            return 0
        now = self.clock()
        account = self._accounts.get(account_id)
        if account is None:
            account = _Account()
            self._accounts[account_id] = account
            while len(self._accounts) > self.max_accounts:
                self._accounts.popitem(last=False)
        else:
            self._accounts.move_to_end(account_id)
            if account.last_block and now - account.last_block >= self.reset:
                account.level = 0
                account.blocks.clear()
        account.last_block = now
        blocks = account.blocks
        blocks.append(now)
        while blocks and now - blocks[0] > self.window:
            blocks.popleft()
        if len(blocks) < self.burst:
            return 0
        duration = self.steps[min(account.level, len(self.steps) - 1)]
        account.level += 1
        account.until = now + duration
        blocks.clear()
        return duration

    def __len__(self) -> int:
        return len(self._accounts)
