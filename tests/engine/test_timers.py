"""The one backoff of every reconnect loop (engine/timers.py)."""

from __future__ import annotations

import random

import pytest

from astpresence.engine.timers import backoff_delay


@pytest.mark.parametrize(("attempt", "base"), [(0, 1.0), (1, 1.0), (2, 2.0), (5, 16.0),
                                                (6, 32.0), (60, 32.0)])
def test_one_backoff_with_jitter(attempt: int, base: float) -> None:
    """Every reconnect loop (AMI links, an HA group's links) backs off the same way:
    1, 2, 4, 8, 16, then 32 s, each +-20% so clients cut off together spread out."""
    rng = random.Random(7)
    delays = [backoff_delay(attempt, rng=rng) for _ in range(200)]
    assert all(base * 0.8 <= d <= base * 1.2 for d in delays)
    assert max(delays) - min(delays) > base * 0.2  # really spread
    assert 0.4 <= backoff_delay(1, (0.5, 1.0), rng) <= 0.6
