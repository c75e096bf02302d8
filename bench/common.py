"""Helpers shared by the end-to-end scenarios."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

from .procs import clean_env
from .tests_import import ROOT

#: User ids of the benchmark PBX: 10000, 10001, ...
FIRST_USER = 10000
PRESENCE_PREFIX = "PRESENCE_STATE(CustomPresence:"


def users(n: int, first: int = FIRST_USER) -> list[str]:
    return [str(first + i) for i in range(n)]


def ms(seconds: float) -> float:
    return seconds * 1000.0


@dataclass
class RawClient:
    """A helper process (``bench.rawami`` etc.) speaking JSON lines on stdout."""

    proc: asyncio.subprocess.Process

    @classmethod
    async def start(cls, mode: str, port: int, count: int = 0) -> RawClient:
        return await cls.start_module("bench.rawami", mode, str(port), str(count))

    @classmethod
    async def start_module(cls, module: str, *args: str) -> RawClient:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=clean_env(), cwd=str(ROOT),
        )
        return cls(proc)

    async def expect(self, event: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"raw client: no {event!r} within {timeout} s")
            line = await asyncio.wait_for(self.proc.stdout.readline(), left)
            if not line:
                err = b""
                if self.proc.stderr is not None:
                    err = await self.proc.stderr.read()
                raise RuntimeError(f"raw client ended before {event!r}: "
                                   f"{err.decode(errors='replace')[-2000:]}")
            data: dict[str, Any] = json.loads(line)
            if data.get("event") == event:
                return data

    async def stop(self) -> None:
        if self.proc.returncode is None:
            try:
                self.proc.terminate()
            except ProcessLookupError:
                pass
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
