"""A SIP watcher for the tests: SUBSCRIBE to a hint over UDP, collect the NOTIFY bodies.

What a BLF key does (RFC 6665 subscriptions, RFC 4235 dialog-info, RFC 3863 PIDF),
and no more: one subscription per watcher, every NOTIFY answered ``200 OK``, the
bodies kept in order. It binds to an address of the loopback range (the lab's
``watcher`` endpoint is identified by its source address 127.0.0.2), so tests
see exactly what a phone there would.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from typing import cast

#: Event package -> the body type a phone asks for.
ACCEPT = {"dialog": "application/dialog-info+xml", "presence": "application/pidf+xml"}
MAX_DATAGRAM = 65_535


@dataclass
class SipMessage:
    first: str
    headers: list[tuple[str, str]]
    body: str

    def get(self, name: str) -> str:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return ""

    @property
    def is_request(self) -> bool:
        return not self.first.startswith("SIP/2.0")

    @property
    def status(self) -> int:
        return int(self.first.split()[1]) if not self.is_request else 0


def parse(data: bytes) -> SipMessage:
    head, _, body = data.decode("utf-8", "replace").partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = []
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers.append((key.strip(), value.strip()))
    return SipMessage(lines[0], headers, body)


@dataclass
class Watcher(asyncio.DatagramProtocol):
    """``await Watcher.open(...)``, then ``await next_body()`` per NOTIFY."""

    server: tuple[str, int]
    exten: str
    event: str
    user_agent: str
    local: tuple[str, int] = ("127.0.0.2", 0)
    bodies: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    answers: asyncio.Queue[SipMessage] = field(default_factory=asyncio.Queue)
    transport: asyncio.DatagramTransport | None = None
    call_id: str = field(default_factory=lambda: secrets.token_hex(8))
    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    to_tag: str = ""
    cseq: int = 0

    @classmethod
    async def open(cls, server: tuple[str, int], exten: str, event: str,
                   user_agent: str = "Yealink SIP-T46U 66.86.0.15") -> Watcher:
        loop = asyncio.get_running_loop()
        watcher = cls(server, exten, event, user_agent)
        await loop.create_datagram_endpoint(lambda: watcher, local_addr=watcher.local)
        await watcher.subscribe(600)
        return watcher

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.local = transport.get_extra_info("sockname")[:2]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = parse(data[:MAX_DATAGRAM])
        if not msg.is_request:
            self.answers.put_nowait(msg)
            return
        self._reply_ok(msg, addr)
        if msg.first.startswith("NOTIFY") and msg.body:
            self.bodies.put_nowait(msg.body)

    def _reply_ok(self, req: SipMessage, addr: tuple[str, int]) -> None:
        copied = "".join(f"{k}: {v}\r\n" for k, v in req.headers
                         if k.lower() in ("via", "from", "to", "call-id", "cseq"))
        assert self.transport is not None
        self.transport.sendto(f"SIP/2.0 200 OK\r\n{copied}Content-Length: 0\r\n\r\n".encode(),
                              addr)

    async def subscribe(self, expires: int) -> SipMessage:
        """SUBSCRIBE (or, with 0, end the subscription); returns the final answer."""
        assert self.transport is not None
        self.cseq += 1
        host, port = self.server
        lhost, lport = self.local
        uri = f"sip:{self.exten}@{host}:{port}"
        to_tag = f";tag={self.to_tag}" if self.to_tag else ""
        request = (
            f"SUBSCRIBE {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {lhost}:{lport};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:watcher@{lhost}>;tag={self.tag}\r\n"
            f"To: <{uri}>{to_tag}\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: {self.cseq} SUBSCRIBE\r\n"
            f"Contact: <sip:watcher@{lhost}:{lport}>\r\n"
            f"Event: {self.event}\r\n"
            f"Accept: {ACCEPT[self.event]}\r\n"
            f"Expires: {expires}\r\n"
            f"User-Agent: {self.user_agent}\r\n"
            f"Content-Length: 0\r\n\r\n")
        self.transport.sendto(request.encode(), self.server)
        while True:
            answer = await asyncio.wait_for(self.answers.get(), 5)
            if answer.status >= 200:
                break
        if answer.status >= 300:
            raise AssertionError(f"SUBSCRIBE to {self.exten} refused: {answer.first}")
        if not self.to_tag:
            self.to_tag = answer.get("To").partition(";tag=")[2].split(";")[0]
        return answer

    async def next_body(self, timeout: float = 10.0) -> str:
        return await asyncio.wait_for(self.bodies.get(), timeout)

    async def wait_for(self, text: str, timeout: float = 15.0) -> str:
        """The first NOTIFY body (from now, or already queued) that contains ``text``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen: list[str] = []
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"no NOTIFY with {text!r} within {timeout:g} s; "
                                     f"last bodies: {seen[-2:]}")
            try:
                body = await self.next_body(left)
            except TimeoutError:
                continue
            seen.append(body)
            if text in body:
                return body

    async def close(self) -> None:
        try:
            await self.subscribe(0)
        except (AssertionError, TimeoutError):
            pass  # the server may be gone already; the subscription then dies with it
        if self.transport is not None:
            self.transport.close()


_SDP = ("v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
        "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


@dataclass
class Caller(asyncio.DatagramProtocol):
    """A SIP phone placing one call: ``await Caller.call(server, exten)`` -> the final
    answer's status (486, 480, ...), what the caller's phone shows. A failure answer
    is acknowledged (RFC 3261 17.1.1.3); a 200 is acknowledged and hung up."""

    server: tuple[str, int]
    local: tuple[str, int] = ("127.0.0.2", 0)
    answers: asyncio.Queue[SipMessage] = field(default_factory=asyncio.Queue)
    transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def call(cls, server: tuple[str, int], exten: str, timeout: float = 30.0) -> int:
        loop = asyncio.get_running_loop()
        caller = cls(server)
        await loop.create_datagram_endpoint(lambda: caller, local_addr=caller.local)
        try:
            return await caller._invite(exten, timeout)
        finally:
            assert caller.transport is not None
            caller.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.local = transport.get_extra_info("sockname")[:2]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = parse(data[:MAX_DATAGRAM])
        if msg.is_request:  # e.g. the BYE after our own; nothing else is expected
            copied = "".join(f"{k}: {v}\r\n" for k, v in msg.headers
                             if k.lower() in ("via", "from", "to", "call-id", "cseq"))
            assert self.transport is not None
            self.transport.sendto(
                f"SIP/2.0 200 OK\r\n{copied}Content-Length: 0\r\n\r\n".encode(), addr)
        else:
            self.answers.put_nowait(msg)

    async def _invite(self, exten: str, timeout: float) -> int:
        assert self.transport is not None
        host, port = self.server
        lhost, lport = self.local
        uri = f"sip:{exten}@{host}:{port}"
        branch = f"z9hG4bK{secrets.token_hex(6)}"
        call_id, tag = secrets.token_hex(8), secrets.token_hex(4)
        sdp = _SDP.format(host=lhost)
        common = (f"Max-Forwards: 70\r\nFrom: <sip:watcher@{lhost}>;tag={tag}\r\n"
                  f"Call-ID: {call_id}\r\n")
        self.transport.sendto((
            f"INVITE {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {lhost}:{lport};branch={branch};rport\r\n{common}"
            f"To: <{uri}>\r\nCSeq: 1 INVITE\r\nContact: <sip:watcher@{lhost}:{lport}>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
        ).encode(), self.server)
        async with asyncio.timeout(timeout):
            while (answer := await self.answers.get()).status < 200:
                pass
        to = answer.get("To")
        if answer.status < 300:  # answered: ACK (a new transaction) and hang up
            for n, method in ((1, "ACK"), (2, "BYE")):
                self.transport.sendto((
                    f"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {lhost}:{lport};branch="
                    f"z9hG4bK{secrets.token_hex(6)};rport\r\n{common}To: {to}\r\n"
                    f"CSeq: {n} {method}\r\nContent-Length: 0\r\n\r\n").encode(), self.server)
        else:  # a failure: ACK in the INVITE's transaction (same branch)
            self.transport.sendto((
                f"ACK {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {lhost}:{lport};branch={branch};"
                f"rport\r\n{common}To: {to}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
            ).encode(), self.server)
        return answer.status
