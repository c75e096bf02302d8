"""A minimal AMI client: the baseline the daemon is compared with.

It does only what any program in the daemon's place must do, with the least
code: split the stream on CRLFCRLF and ": ", and

- ``echo``: answer every ``DeviceStateChange`` to INUSE with the Setvar the
  daemon would send for that user (no store, no rules, no echo tracking);
- ``lists``: read the three lists the daemon reads after login
  (PresenceStateList, DeviceStateList, ExtensionStateList);
- ``dbput``: write COUNT astdb keys of family astpresence-calls (two per user,
  as the daemon's call handling does), pipelined, and wait for every answer.

Run as ``python -m bench.rawami MODE PORT [COUNT]``; prints one JSON line per
milestone on stdout (``ready``, ``done``) with CLOCK_MONOTONIC times.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

ON_THE_PHONE = "dnd,b24tdGhlLXBob25l,,e"  # base64("on-the-phone"): a call reads as busy


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def main(mode: str, port: int, count: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readuntil(b"\r\n")  # banner
    writer.write(b"Action: Login\r\nUsername: astpresence\r\nSecret: s3cret\r\n"
                 b"Events: on\r\nActionID: l\r\n\r\n")
    buf = b""
    logged_in = False
    while not logged_in:
        buf += await reader.read(65536)
        frames = buf.split(b"\r\n\r\n")
        buf = frames.pop()
        for frame in frames:
            if frame.startswith(b"Response: Success"):
                logged_in = True
    say(event="ready", t=time.monotonic())
    if mode == "lists":
        items = {}
        for i, action in enumerate(("PresenceStateList", "DeviceStateList",
                                    "ExtensionStateList")):
            writer.write(f"Action: {action}\r\nActionID: list-{i}\r\n\r\n".encode())
            n, done = 0, False
            while not done:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("server closed the connection")
                buf += data
                frames = buf.split(b"\r\n\r\n")
                buf = frames.pop()
                for frame in frames:
                    d = dict(line.split(": ", 1) for line in frame.decode().split("\r\n"))
                    if d.get("ActionID") != f"list-{i}" or "Event" not in d:
                        continue
                    if d.get("EventList") == "Complete":
                        done = True
                    else:
                        n += 1
            items[action] = n
        say(event="done", t=time.monotonic(), items=items)
        writer.close()
        return
    if mode == "dbput":
        await _dbput(reader, writer, buf, count)
        return
    # echo
    sent = answered = 0
    next_id = 0
    while answered < count:
        data = await reader.read(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        buf += data
        frames = buf.split(b"\r\n\r\n")
        buf = frames.pop()
        out = []
        for frame in frames:
            d = dict(line.split(": ", 1) for line in frame.decode().split("\r\n"))
            if d.get("Event") == "DeviceStateChange" and d.get("State") == "INUSE":
                uid = d["Device"].partition("/")[2]
                next_id += 1
                out.append(f"Action: Setvar\r\nVariable: PRESENCE_STATE(CustomPresence:{uid})"
                           f"\r\nValue: {ON_THE_PHONE}\r\nActionID: s{next_id}\r\n\r\n")
                sent += 1
            elif d.get("Response") == "Success" and d.get("ActionID", "").startswith("s"):
                answered += 1
        if out:
            writer.write("".join(out).encode())
    say(event="done", t=time.monotonic(), sent=sent, answered=answered)
    writer.close()


async def _dbput(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, buf: bytes,
                 count: int) -> None:
    value = "v1|voicemail,u|||"
    writer.write("".join(
        f"Action: DBPut\r\nFamily: astpresence-calls\r\nKey: {10000 + i // 2}/"
        f"{'internal' if i % 2 else 'external'}\r\nVal: {value}\r\nActionID: d{i}\r\n\r\n"
        for i in range(count)).encode())
    # Each answer carries its ActionID on a line of its own; nothing else uses d<N>.
    answered = buf.count(b"\r\nActionID: d")
    while answered < count:
        line = await reader.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        answered += line.startswith(b"ActionID: d")
    say(event="done", t=time.monotonic(), answered=answered)
    writer.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0))
