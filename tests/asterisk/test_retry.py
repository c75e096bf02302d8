"""The refused-write bookkeeping shared by presence, mirror and queue pauses."""

from __future__ import annotations

import math

import pytest

from astpresence.asterisk.retry import RETRY_DELAYS, Failures, retry_delay


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("attempts", "delay"), [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0),
                                                 (7, 60.0), (50, 60.0)])
def test_delays(attempts: int, delay: float) -> None:
    assert retry_delay(attempts) == delay
    assert RETRY_DELAYS[-1] == 60.0


# (step, value, expect blocks(value) after the step, expect attempts after)
CASES = [
    ("failed", "a", True, 1),       # a refused value waits for its retry time
    ("advance", 0.99, True, 1),
    ("advance", 0.01, False, 1),    # due
    ("retrying", None, True, 1),    # sent: not due again until it fails or clears
    ("failed", "a", True, 2),       # refused again: longer wait
    ("advance", 1.0, True, 2),
    ("advance", 1.0, False, 2),
    ("failed", "b", True, 1),       # another value starts over
    ("clear", None, False, 0),
    ("failed", "a", True, 1),
    ("reset", None, False, 0),      # a new login: everything at once
]


def test_rules_table() -> None:
    clock = Clock()
    f: Failures[str] = Failures("presence", clock)
    current = "a"
    for step, arg, blocked, attempts in CASES:
        if step == "failed":
            assert isinstance(arg, str)
            current = arg
            f.failed("u", arg, "refused")
        elif step == "advance":
            assert isinstance(arg, float)
            clock.now += arg
        elif step == "retrying":
            f.retrying("u")
        elif step == "clear":
            f.clear("u")
        else:
            f.reset()
        assert f.blocks("u", current) is blocked, (step, arg)
        got = f.get("u")
        assert (got.attempts if got else 0) == attempts, (step, arg)
        if step != "failed":
            assert not f.blocks("u", "other value")
    assert f.total == 4


def test_due_and_next_retry() -> None:
    clock = Clock()
    f: Failures[tuple[str, str]] = Failures("queue_pause", clock)
    assert f.next_retry_in() is None and f.due() == []
    f.failed(("q", "a"), True, "x")
    clock.now += 0.5
    f.failed(("q", "b"), True, "x")
    assert f.next_retry_in() == 0.5 and f.due() == []
    clock.now += 0.5
    assert f.due() == [("q", "a")] and f.next_retry_in() == 0.0
    f.retrying(("q", "a"))
    assert f.get(("q", "a")).retry_at == math.inf  # type: ignore[union-attr]
    assert f.due() == [] and f.next_retry_in() == 0.5 and len(f) == 2
