"""The daemon's event loop: uvloop's when installed, asyncio's when asked or absent."""

from __future__ import annotations

import asyncio
import builtins
import logging
from typing import Any

import pytest

from astpresence.app.loop import event_loop_factory

uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed (pip install '.[fast]')")


def run_on(factory: Any) -> str:
    async def name() -> str:
        return type(asyncio.get_running_loop()).__module__.split(".")[0]

    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(name())


def test_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASTPRESENCE_EVENT_LOOP", raising=False)
    assert run_on(event_loop_factory()) == "uvloop"
    monkeypatch.setenv("ASTPRESENCE_EVENT_LOOP", "uvloop")
    assert run_on(event_loop_factory()) == "uvloop"


def test_asyncio_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASTPRESENCE_EVENT_LOOP", "asyncio")
    assert event_loop_factory() is None
    assert run_on(None) == "asyncio"


def test_a_wrong_value_is_named_and_auto_used(monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("ASTPRESENCE_EVENT_LOOP", "fastest\x1b[2J")
    with caplog.at_level(logging.WARNING):
        factory = event_loop_factory()
    assert run_on(factory) == "uvloop"
    assert "is not one of auto, asyncio, uvloop" in caplog.text
    assert "\x1b" not in caplog.text  # the value is clipped, not echoed raw


def test_asked_for_uvloop_without_it(monkeypatch: pytest.MonkeyPatch,
                                     caplog: pytest.LogCaptureFixture) -> None:
    real_import = builtins.__import__

    def no_uvloop(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "uvloop":
            raise ImportError("no uvloop here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvloop)
    monkeypatch.setenv("ASTPRESENCE_EVENT_LOOP", "uvloop")
    with caplog.at_level(logging.WARNING):
        assert event_loop_factory() is None
    assert "uvloop is not installed" in caplog.text
