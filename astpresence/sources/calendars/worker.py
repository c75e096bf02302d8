"""Calendar parsing in a worker process that can be stopped.

Expanding a feed's recurrences can take unbounded time and memory: one
invitation with ``DTSTART:19700101`` and ``RRULE:FREQ=YEARLY;BYYEARDAY=1..366;
BYHOUR=0..23;BYMINUTE=0..59`` makes the expansion walk tens of millions of
occurrences before it reaches the window, and a thread cannot be stopped. So
parsing runs in a child process (``python -m astpresence.sources.calendars.worker``)
with an address-space limit; a parse that takes longer than its time limit gets
the worker killed (the next parse starts a new one), and the daemon's shutdown
kills the worker instead of waiting for it.

The protocol is frames on the child's stdin/stdout: a 4-byte big-endian length,
then that many bytes. A request is a JSON header frame then the body frame; the
answer is one JSON frame, ``{"busy": [[start, end, kind, subject, all_day], ...]}``
or ``{"error": "..."}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any, BinaryIO

from astpresence.domain.model import InvalidInput
from astpresence.sources.calendars.entries import Busy, Kind

logger = logging.getLogger(__name__)

#: A parse (all of one feed's bodies) may take this long before its worker is killed.
PARSE_TIMEOUT = 30.0
#: The worker's address space, at most (RLIMIT_AS): a feed needing more is refused.
MEMORY_LIMIT = 1024 * 1024 * 1024
#: Workers at once (each parses one feed at a time).
WORKERS = 2
_LEN = struct.Struct(">I")


class ParseFailed(Exception):
    """The worker could not parse the feed in time or memory; the message says which."""


def _limit_memory() -> None:
    """In the child, first thing: past this a parse gets MemoryError, never the machine."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = MEMORY_LIMIT if hard == resource.RLIM_INFINITY else min(MEMORY_LIMIT, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


class _Worker:
    """One child process, asked one feed at a time."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.killed = False

    @classmethod
    async def start(cls) -> _Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "astpresence.sources.calendars.worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL)
        return cls(proc)

    @property
    def alive(self) -> bool:
        return not self.killed and self.proc.returncode is None

    async def ask(self, header: dict[str, Any], bodies: Sequence[bytes]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        out = self.proc.stdin
        for frame in (json.dumps({**header, "bodies": len(bodies)}).encode(), *bodies):
            out.write(_LEN.pack(len(frame)) + frame)
        await out.drain()
        size = _LEN.unpack(await self.proc.stdout.readexactly(_LEN.size))[0]
        answer = json.loads(await self.proc.stdout.readexactly(size))
        if not isinstance(answer, dict):
            raise ParseFailed("the calendar worker answered nonsense")
        return answer

    def kill(self) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        self.killed = True

    async def finish(self) -> None:
        """Killed and reaped, its pipes closed."""
        self.kill()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            await self.proc.wait()


class ParserPool:
    """``await pool.parse(bodies, start, end, zone, email)`` -> the feed's busy times."""

    def __init__(self, *, workers: int = WORKERS, timeout: float = PARSE_TIMEOUT) -> None:
        self.timeout = timeout
        self._size = workers
        self._workers: list[_Worker] = []
        self._free: asyncio.Queue[_Worker | None] | None = None
        self._closed = False
        self._reaping: set[asyncio.Task[None]] = set()
        self.killed = 0  # workers killed for taking too long

    async def parse(self, bodies: Sequence[bytes | str], start: datetime, end: datetime,
                    zone: str, email: str) -> list[Busy]:
        """Raises :class:`InvalidInput` for a feed that does not parse, and
        :class:`ParseFailed` for one that takes too long or too much memory."""
        if self._closed:
            raise ParseFailed("the daemon is stopping")
        free = self._queue()
        slot = await free.get()
        worker = slot if slot is not None and slot.alive else None
        try:
            if worker is None:
                worker = await _Worker.start()
                self._workers.append(worker)
            header = {"start": start.isoformat(), "end": end.isoformat(), "zone": zone,
                      "email": email}
            raw = [b.encode("utf-8") if isinstance(b, str) else b for b in bodies]
            try:
                async with asyncio.timeout(self.timeout):
                    answer = await worker.ask(header, raw)
            except TimeoutError:
                worker.kill()
                self.killed += 1
                raise ParseFailed(f"the feed took longer than {self.timeout:g} s to expand "
                                  "(a runaway recurrence?); not used") from None
            except (OSError, EOFError, asyncio.IncompleteReadError, ValueError):
                worker.kill()
                raise ParseFailed("the calendar worker stopped while reading the feed "
                                  "(out of memory?); not used") from None
            except BaseException:
                # Cancelled mid-request (the fetch's own time limit, shutdown): the
                # worker's answer would reach the next request. It goes instead.
                worker.kill()
                raise
        finally:
            if worker is not None and not worker.alive and worker in self._workers:
                self._workers.remove(worker)
                reap = asyncio.ensure_future(worker.finish())
                self._reaping.add(reap)
                reap.add_done_callback(self._reaping.discard)
            free.put_nowait(worker if worker is not None and worker.alive else None)
        return _busy(answer)

    def _queue(self) -> asyncio.Queue[_Worker | None]:
        if self._free is None:
            self._free = asyncio.Queue()
            for _ in range(self._size):
                self._free.put_nowait(None)  # a place for a worker, started when needed
        return self._free

    async def close(self) -> None:
        """Kill every worker at once: a parse under way is never waited for."""
        self._closed = True
        workers, self._workers = self._workers, []
        await asyncio.gather(*(w.finish() for w in workers), *self._reaping,
                             return_exceptions=True)


def _busy(answer: dict[str, Any]) -> list[Busy]:
    if "error" in answer:
        message = str(answer["error"])
        if answer.get("kind") == "limit":
            raise ParseFailed(message)
        raise InvalidInput(message)
    try:
        return [Busy(datetime.fromisoformat(s), datetime.fromisoformat(e), Kind(k), str(subj),
                     bool(all_day)) for s, e, k, subj, all_day in answer["busy"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ParseFailed(f"the calendar worker answered nonsense: {exc}") from None


# -- the child ------------------------------------------------------------------


def _read(stream: BinaryIO) -> bytes | None:
    head = stream.read(_LEN.size)
    if len(head) < _LEN.size:
        return None
    size = _LEN.unpack(head)[0]
    return stream.read(size)


def _write(stream: BinaryIO, answer: dict[str, Any]) -> None:
    frame = json.dumps(answer, ensure_ascii=False).encode()
    stream.write(_LEN.pack(len(frame)) + frame)
    stream.flush()


def _answer(header: dict[str, Any], bodies: list[bytes]) -> dict[str, Any]:
    from zoneinfo import ZoneInfo

    from astpresence.sources.calendars.ics import busy_intervals, local_zone, parse_calendar

    start = datetime.fromisoformat(header["start"])
    end = datetime.fromisoformat(header["end"])
    tz = ZoneInfo(header["zone"]) if header.get("zone") else local_zone()
    email = str(header.get("email") or "")
    busy = [b for body in bodies
            for b in busy_intervals(parse_calendar(body, (start, end)), start, end, tz,
                                    email=email)]
    return {"busy": [[b.start.isoformat(), b.end.isoformat(), int(b.kind), b.subject,
                      b.all_day] for b in busy]}


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """The child's loop: one request, one answer, until stdin closes."""
    while True:
        raw = _read(stdin)
        if raw is None:
            return
        header = json.loads(raw)
        bodies = [_read(stdin) or b"" for _ in range(int(header.get("bodies", 0)))]
        try:
            answer = _answer(header, bodies)
        except InvalidInput as exc:
            answer = {"error": str(exc)}
        except MemoryError:
            _write(stdout, {"error": "the feed needs more memory than a calendar may "
                                     f"({MEMORY_LIMIT // 2**20} MB) to expand; not used",
                            "kind": "limit"})
            return  # start afresh: the heap may be in pieces
        except RecursionError:
            answer = {"error": "the feed is nested too deeply"}
        except Exception as exc:  # a library's own error on hostile input
            answer = {"error": f"cannot parse the feed: {type(exc).__name__}"}
        _write(stdout, answer)


if __name__ == "__main__":
    _limit_memory()
    serve(sys.stdin.buffer, sys.stdout.buffer)
