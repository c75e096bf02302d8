"""Many WebSocket clients of /v1/events in one process, as light as possible.

Run as ``python -m bench.wsswarm URL CLIENTS EXPECTED TIMEOUT RESULT_FILE``
with the API token in the environment variable ``BENCH_TOKEN``. Prints
``{"event": "ready"}`` once every client has had its ``hello``; then each
client collects presence events until it has EXPECTED of them (or TIMEOUT
seconds passed); the deliveries are written to RESULT_FILE as JSON, one list
per client of ``[monotonic receive time, user]``, and ``{"event": "done"}``
is printed.

A client is an :class:`asyncio.Protocol` speaking just enough RFC 6455
(handshake, masked text frames out, unmasked frames in, pong): the time is
taken on entry to ``data_received``, and a thousand aiohttp clients in one
process would add tens of milliseconds of their own to the last delivery.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import sys
import time
from urllib.parse import urlsplit

from .procs import raise_fd_limit

CONNECT_CONCURRENCY = 100
OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked frame, as clients must send (RFC 6455, 5.3)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


class Client(asyncio.Protocol):
    def __init__(self, host: str, path: str, hello: bytes, expected: int) -> None:
        self.host, self.path, self.hello, self.expected = host, path, hello, expected
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.upgraded = False
        self.got_hello: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.messages: list[tuple[float, bytes]] = []
        self.closing = False  # we hang up: a lost connection is no failure then

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode())

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()  # first thing: the receive time
        buf = self.buf + data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            status = buf[:buf.find(b"\r\n")]
            if b" 101 " not in status:
                self._fail(f"no upgrade: {status!r}")
                return
            self.upgraded = True
            buf = buf[end + 4:]
            assert self.transport is not None
            self.transport.write(client_frame(OP_TEXT, self.hello))
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            n, pos = b1 & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, pos = struct.unpack("!H", buf[2:4])[0], 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n, pos = struct.unpack("!Q", buf[2:10])[0], 10
            if len(buf) < pos + n:
                break
            payload, buf = buf[pos:pos + n], buf[pos + n:]
            self._frame(b0 & 0x0F, payload, now)
        self.buf = buf

    def _frame(self, opcode: int, payload: bytes, now: float) -> None:
        if opcode == OP_TEXT:  # the daemon sends small unfragmented messages
            if not self.got_hello.done():
                self.got_hello.set_result(None)
                return
            self.messages.append((now, payload))
            if len(self.messages) >= self.expected and not self.done.done():
                self.done.set_result(None)
        elif opcode == OP_PING and self.transport is not None:
            self.transport.write(client_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            self._fail("closed by the server")

    def _fail(self, why: str) -> None:
        if self.closing:
            return
        for fut in (self.got_hello, self.done):
            if not fut.done():
                fut.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"connection lost: {exc}")


async def swarm(url: str, token: str, n: int, expected: int, timeout: float,
                result_file: str) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    hello = json.dumps({"token": token, "subscribe": ["*"]}).encode()
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def connect() -> Client:
        async with sem:
            _, client = await loop.create_connection(
                lambda: Client(f"{host}:{port}", parts.path, hello, expected), host, port)
            await asyncio.wait_for(client.got_hello, 30)
            return client

    clients = await asyncio.gather(*(connect() for _ in range(n)))
    print(json.dumps({"event": "ready", "clients": n}), flush=True)
    await asyncio.wait([c.done for c in clients], timeout=timeout)
    deliveries = []
    for c in clients:
        if c.done.done() and not c.done.cancelled():
            c.done.exception()  # retrieved: a short count shows in the results
        got = []
        for t, payload in c.messages:
            event = json.loads(payload)
            if event.get("type", "presence") == "presence":
                got.append((t, event.get("user")))
        deliveries.append(got)
        c.closing = True
        if c.transport is not None:
            c.transport.close()
    with open(result_file, "w", encoding="utf-8") as f:
        json.dump(deliveries, f)
    print(json.dumps({"event": "done"}), flush=True)


def main() -> None:
    url, n, expected, timeout, result_file = sys.argv[1:6]
    raise_fd_limit(int(n) + 256)
    asyncio.run(swarm(url, os.environ.get("BENCH_TOKEN", ""), int(n), int(expected),
                      float(timeout), result_file))


if __name__ == "__main__":
    main()
