"""A minimal AMI -> WebSocket relay: the fan-out baseline.

Run as ``python -m bench.rawrelay AMI_PORT HTTP_PORT``. It logs in to the
fake AMI, serves ``/v1/events`` with the daemon's hello handshake (any token
accepted), and for each ``DeviceStateChange`` to INUSE serialises one
presence event of the daemon's shape once and sends it to every client. No
rules, no store, no per-client filtering. Prints ``{"event": "ready"}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime

from aiohttp import WSMsgType, web

from .procs import raise_fd_limit

CLIENTS: set[web.WebSocketResponse] = set()


async def events(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=30.0)
    await ws.prepare(request)
    first = await ws.receive(timeout=10)
    if first.type != WSMsgType.TEXT:
        await ws.close()
        return ws
    await ws.send_json({"type": "hello", "seq": 0})
    CLIENTS.add(ws)
    try:
        async for _ in ws:
            pass
    finally:
        CLIENTS.discard(ws)
    return ws


async def relay(ami_port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", ami_port)
    await reader.readuntil(b"\r\n")
    writer.write(b"Action: Login\r\nUsername: astpresence\r\nSecret: s3cret\r\n"
                 b"Events: on\r\nActionID: l\r\n\r\n")
    buf = b""
    seq = 0
    ready = False
    while True:
        data = await reader.read(65536)
        if not data:
            return
        buf += data
        frames = buf.split(b"\r\n\r\n")
        buf = frames.pop()
        for frame in frames:
            d = dict(line.split(": ", 1) for line in frame.decode().split("\r\n"))
            if not ready and d.get("Response") == "Success":
                ready = True
                print(json.dumps({"event": "ready"}), flush=True)
            if d.get("Event") == "DeviceStateChange" and d.get("State") == "INUSE":
                seq += 1
                uid = d["Device"].partition("/")[2]
                text = json.dumps({
                    "type": "presence", "seq": seq, "user": uid,
                    "presence": {"user": uid, "state": "dnd",
                                 "subtype": "on-the-phone", "message": "", "source": "device",
                                 "actor": "engine", "since": datetime.now(UTC).isoformat(),
                                 "pending": True, "rule": "on-the-phone",
                                 "chosen": {"state": "available", "subtype": "",
                                            "message": ""},
                                 "activity": "on-the-phone"},
                    "changed": ["state", "subtype"],
                })
                for ws in list(CLIENTS):
                    await ws.send_str(text)


async def main(ami_port: int, http_port: int) -> None:
    raise_fd_limit(4096)
    app = web.Application()
    app.router.add_get("/v1/events", events)
    runner = web.AppRunner(app, access_log=None, handle_signals=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", http_port).start()
    try:
        await relay(ami_port)
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
