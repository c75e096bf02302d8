"""Scenario 1: AMI frame parsing, the project's parser against a raw split.

The stream is built from the live events of the recorded sessions in
tests/support/captures/ (DeviceStateChange, PresenceStateChange with
multi-byte UTF-8, ExtensionStatus), renumbered so users differ, and fed in
64 KiB chunks, as AMIClient reads the socket.

Measured in a fresh interpreter (``python -m bench.parsing``) that imports
only the parser: the parser's Messages are garbage-collected objects and
collection cost grows with everything else on the heap, which here would be
the benchmark harness (aiohttp, the fake server...), not the parser.
Times are CPU seconds of that process, so other load on a shared machine
hardly counts; each round times both parsers back to back.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from astpresence.asterisk.ami.incoming import READ_CHUNK
from astpresence.asterisk.ami.frames import FrameParser, Message

from .report import Row, at_least
from .tests_import import CAPTURE_DIR, ROOT, captured_server_bytes

SCENARIO = "1 parsing"
EVENTS = (b"DeviceStateChange", b"PresenceStateChange", b"ExtensionStatus")


def recorded_frames() -> list[bytes]:
    """Live (not list) events of the chosen types, in capture order, without CRLFCRLF."""
    frames = []
    for path in sorted(CAPTURE_DIR.glob("*.txt")):
        for frame in captured_server_bytes(path).split(b"\r\n\r\n"):
            frame = frame.strip(b"\r\n")
            if not frame.startswith(b"Event: ") or b"\r\nActionID:" in frame:
                continue
            if frame.split(b"\r\n", 1)[0][7:] in EVENTS:
                frames.append(frame)
    if not any(max(f) > 127 for f in frames):
        raise RuntimeError("no multi-byte UTF-8 in the recorded frames")
    return frames


def build_stream(n: int) -> bytes:
    """``n`` frames cycling through the recorded ones, user numbers renumbered."""
    templates = recorded_frames()
    out = []
    for i in range(n):
        user = str(10000 + (i // len(templates)) % 10000).encode()
        frame = templates[i % len(templates)]
        out.append(frame.replace(b"2000", user).replace(b"2001", user) + b"\r\n\r\n")
    return b"".join(out)


def chunked(data: bytes, size: int = READ_CHUNK) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


# Both consumers keep each chunk's frames only until the next chunk, like
# AMIClient, which routes every frame and drops it: accumulating 200,000 frames
# would mostly measure the garbage collector walking them.


def project_parse(chunks: list[bytes], keep: bool = False) -> tuple[int, list[Message]]:
    parser = FrameParser(expect_banner=False)
    count = 0
    kept: list[Message] = []
    for chunk in chunks:
        items = parser.feed(chunk)
        count += len(items)
        if keep:
            kept += items  # type: ignore[arg-type]
    return count, kept


def raw_parse(chunks: list[bytes], keep: bool = False) -> tuple[int, list[dict[str, str]]]:
    """The minimal baseline: split on CRLFCRLF, decode, split lines on ': '."""
    count = 0
    kept: list[dict[str, str]] = []
    buf = b""
    for chunk in chunks:
        buf += chunk
        frames = buf.split(b"\r\n\r\n")
        buf = frames.pop()
        items = [dict(line.split(": ", 1) for line in frame.decode().split("\r\n"))
                 for frame in frames]
        count += len(items)
        if keep:
            kept += items
    return count, kept


def _rate(fn: Callable[[list[bytes]], tuple[int, list[Any]]], chunks: list[bytes],
          n: int) -> float:
    """Frames per CPU second of this process (other load on the machine hardly counts)."""
    started = time.process_time()
    got, _ = fn(chunks)
    elapsed = time.process_time() - started
    if got != n:
        raise RuntimeError(f"{fn.__name__} produced {got} frames, expected {n}")
    return n / elapsed


def measure(quick: bool) -> list[Row]:
    n = 10_000 if quick else 50_000
    rounds = 3 if quick else 21
    stream = build_stream(n)
    chunks = chunked(stream)
    # Same result, so the baseline does the same job (checked once, not timed).
    _, parsed = project_parse(chunks, keep=True)
    _, raw_dicts = raw_parse(chunks, keep=True)
    for msg, d in zip(parsed, raw_dicts, strict=True):
        if not isinstance(msg, Message) or msg.as_dict() != d:
            raise RuntimeError(f"baseline and parser disagree: {msg} != {d}")
    del parsed, raw_dicts
    project, raw, ratios = [], [], []
    for i in range(rounds):
        # Each round times both, back to back, in alternating order, so that a
        # burst of load from elsewhere hits a pair, not one side.
        if i % 2:
            b = _rate(raw_parse, chunks, n)
            p = _rate(project_parse, chunks, n)
        else:
            p = _rate(project_parse, chunks, n)
            b = _rate(raw_parse, chunks, n)
        project.append(p)
        raw.append(b)
        ratios.append(p / b)
    value, base, r = (statistics.median(project), statistics.median(raw),
                      statistics.median(ratios))
    target, ok = at_least(value, 100_000)
    rows = [Row(SCENARIO, "FrameParser.feed", value, "frames/s", target, ok, base, r,
                note=f"{n:,} recorded frames ({len(stream) / n:.0f} B avg) fed in 64 KiB chunks; "
                     f"frames per CPU second, median of {rounds} rounds; baseline = split on "
                     "CRLFCRLF and ': ' into dicts; ratio = median of the per-round ratios")]
    t2, ok2 = at_least(r, 0.5)
    rows.append(Row(SCENARIO, "parser / raw baseline", r, "ratio", t2, ok2,
                    extra={"ratios": ratios}))
    return rows


def run(quick: bool) -> list[Row]:
    """Run :func:`measure` in a fresh interpreter and read its rows back."""
    from .procs import clean_env  # imports aiohttp: not in the measuring process

    out = subprocess.run(
        [sys.executable, "-m", "bench.parsing", *(["--quick"] if quick else [])],
        capture_output=True, text=True, timeout=600, env=clean_env(), cwd=str(ROOT),
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"bench.parsing failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return [Row(**row) for row in json.loads(out.stdout)]


if __name__ == "__main__":
    json.dump([r.to_json() for r in measure("--quick" in sys.argv)], sys.stdout)
