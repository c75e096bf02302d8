"""Hostile clients of the HTTP/WebSocket API: revoked tokens, caps, odd bytes, no 5xx."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from astpresence.web.http import close_reason
from astpresence.web.stream import MAX_PENDING_WEBSOCKETS
from astpresence.web.auth import Role
from astpresence.domain.model import Presence, State
from tests.support.e2e import RunningDaemon, until
from tests.support.api import Stream, call


async def _closed(s: Stream, timeout: float) -> aiohttp.WSMessage:
    """The next non-text message within ``timeout`` (texts before it are skipped)."""
    while True:
        msg = await asyncio.wait_for(s.ws.receive(), timeout)
        if msg.type != aiohttp.WSMsgType.TEXT:
            return msg


@pytest.mark.parametrize("how", ["api", "database"])
async def test_revoking_a_token_closes_its_streams(daemon: RunningDaemon, how: str) -> None:
    alice = await daemon.make_token(Role.USER, "2000")
    alice_id = alice.split("_")[1]
    bob = await daemon.make_token(Role.USER, "2001")
    mine = [await Stream.open(daemon, {"token": alice, "subscribe": ["*"]}) for _ in range(2)]
    other = await Stream.open(daemon, {"token": bob, "subscribe": ["*"]})
    try:
        for s in (*mine, other):
            assert (await s.next())["type"] == "hello"
        if how == "api":
            status, _ = await call(daemon, "DELETE", f"/v1/tokens/{alice_id}", daemon.token)
            assert status == 200
        else:  # what 'astpresence token revoke' does: the database only
            assert await daemon.daemon.store.revoke_token(alice_id, datetime.now(UTC))
        for s in mine:
            msg = await _closed(s, 1.5)  # within a second of the check, plus slack
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert s.ws.close_code == 1008
            assert msg.extra == "token revoked"
        # The other token's stream goes on.
        await daemon.service.set_manual("2000", Presence(State.DND), "api")
        assert (await other.next())["presence"]["state"] == "dnd"
        # And the revoked token cannot open a new one.
        again = await Stream.open(daemon, {"token": alice, "subscribe": ["*"]})
        try:
            err = await again.next()
            assert err == {"type": "error", "error": "token revoked"}
        finally:
            await again.close()
    finally:
        for s in (*mine, other):
            await s.close()


async def test_unauthenticated_websockets_are_capped(daemon: RunningDaemon) -> None:
    streams = daemon.daemon._runner.app[__import__("astpresence.web.stream").web.stream.STREAMS_KEY]  # type: ignore[union-attr]
    streams.pending_limit = 3  # the real limit is MAX_PENDING_WEBSOCKETS
    assert MAX_PENDING_WEBSOCKETS >= 3
    async with aiohttp.ClientSession() as http:
        silent = [await http.ws_connect(daemon.url + "/v1/events") for _ in range(3)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(daemon.url + "/v1/events")
        assert refused.value.status == 503
        # Authenticated clients count against the overall cap too.
        streams.limit = 4
        streams.pending_limit = 10
        ok = await http.ws_connect(daemon.url + "/v1/events")
        await ok.send_json({"token": daemon.token, "subscribe": ["*"]})
        assert (await ok.receive_json())["type"] == "hello"
        with pytest.raises(aiohttp.WSServerHandshakeError) as full:
            await http.ws_connect(daemon.url + "/v1/events")
        assert full.value.status == 503
        for ws in (*silent, ok):
            await ws.close()
    await until(lambda: not streams.sockets, what="sockets released")


async def test_first_message_has_a_time_limit(daemon: RunningDaemon,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("astpresence.web.stream.WS_AUTH_TIMEOUT", 0.2)
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(daemon.url + "/v1/events")
        err = await asyncio.wait_for(ws.receive_json(), 5)
        assert err["type"] == "error" and "no hello" in err["error"]
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1008


async def test_websocket_closed_before_hello_logs_one_line(
        daemon: RunningDaemon, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    streams = daemon.daemon._runner.app[__import__("astpresence.web.stream").web.stream.STREAMS_KEY]  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(daemon.url + "/v1/events")
        await ws.close()
    await until(lambda: not streams.sockets, what="socket released")
    lines = [r for r in caplog.records if "WebSocket" in r.getMessage()]
    assert [r.getMessage().split(" ", 3)[-1] for r in lines] == ["left before its first message"]
    assert all(r.exc_info is None for r in caplog.records)


def test_close_reasons_fit_the_frame() -> None:
    assert close_reason("plain") == b"plain"
    long = "é" * 100  # 200 bytes; cutting at 123 would split a character
    raw = close_reason(long)
    assert len(raw) <= 123 and raw.decode("utf-8") == "é" * 61


async def test_multibyte_refusal_closes_cleanly(daemon: RunningDaemon) -> None:
    s = await Stream.open(daemon, {"token": daemon.token, "subscribe": ["ü" * 90]})
    try:
        err = await s.next()
        assert err["type"] == "error" and "ü" in err["error"]
        msg = await _closed(s, 5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and s.ws.close_code == 1008
        assert len(msg.extra.encode()) <= 123
    finally:
        await s.close()


async def test_405_keeps_its_allow_header(daemon: RunningDaemon) -> None:
    async with aiohttp.ClientSession(headers=daemon.auth) as http:
        async with http.post(daemon.url + "/v1/presence/2000", json={}) as resp:
            assert resp.status == 405
            assert set(resp.headers["Allow"].split(",")) >= {"GET", "PUT", "DELETE"}
            assert (await resp.json())["status"] == 405


@pytest.mark.parametrize("path", ["/static/a%0a.js", "/static/a%0d%0aX-Evil:%201.js",
                                  "/static/%E2%80%A8.css", "/static/..%2fapi.py"])
async def test_odd_static_paths_are_404(daemon: RunningDaemon, path: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(daemon.url + path) as resp:
            assert resp.status == 404
            assert "no such file" in (await resp.json())["error"]
            assert "X-Evil" not in resp.headers


@pytest.mark.parametrize("raw", [
    b'{"state": "away", "expires": NaN}',
    b'{"state": "away", "expires": Infinity}',
    b'{"state": "away", "expires": -Infinity}',
    b'{"state": "away", "expires": 1e14}',
    b'{"state": "away", "expires": 1e308}',
    b'{"state": "away", "expires": 1e400}',
    b'{"state": "away", "expires": "0001-01-01T00:00:00+01:00"}',
    b'{"state": "away", "expires": "9999-12-31T23:59:59-01:00"}',
    b'{"state": "away", "expires": "9999-12-31T00:00:00+00:00"}',
    b'{"state": "away", "expires": [1]}',
    b'[' * 5000 + b']' * 5000,
])
async def test_bad_expiry_is_400_never_500(daemon: RunningDaemon, raw: bytes) -> None:
    alice = await daemon.make_token(Role.USER, "2000")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {alice}",
                                              "Content-Type": "application/json"}) as http:
        async with http.put(daemon.url + "/v1/me/presence", data=raw) as resp:
            body = await resp.json()
            assert resp.status == 400, body
            assert body["status"] == 400 and body["error"]
    assert daemon.service.view("2000").presence.state == State.NOT_SET


@pytest.mark.parametrize("label", ["a\x7fb", "a\x85b", "a\u2028b", "a\u2029b", "x" * 81, 5])
async def test_token_labels_refuse_control_characters(daemon: RunningDaemon,
                                                      label: Any) -> None:
    status, body = await call(daemon, "POST", "/v1/tokens", daemon.token,
                              {"role": "operator", "label": label})
    assert status == 400 and "label" in body["error"]
    status, listing = await call(daemon, "GET", "/v1/tokens", daemon.token)
    assert len(listing["tokens"]) == 1  # only the daemon's own admin token


@pytest.mark.parametrize("uid", ["{", "}", "a/b", "..", "a?b", "a%b"])
async def test_unroutable_user_ids_are_refused_for_tokens(daemon: RunningDaemon,
                                                          uid: str) -> None:
    status, body = await call(daemon, "POST", "/v1/tokens", daemon.token,
                              {"role": "user", "user": uid})
    assert status == 400 and "user id" in body["error"]


async def test_log_lines_cannot_be_forged(daemon: RunningDaemon,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    forged = "x\n2026-01-01 00:00:00 ERROR astpresence: forged"
    async with aiohttp.ClientSession(headers=daemon.auth) as http:
        async with http.put(daemon.url + "/v1/presence/2000%0aforged",
                            json={"state": "away"}) as resp:
            assert resp.status == 404
        async with http.put(daemon.url + "/v1/presence/2000",
                            json={"state": "away", forged: 1}) as resp:
            assert resp.status == 400
        async with http.post(daemon.url + "/v1/tokens",
                             json={"role": "user", "user": forged}) as resp:
            assert resp.status == 400
        async with http.put(daemon.url + "/v1/presence/2000",
                            json={"state": "away", "message": "y" * 100_000}) as resp:
            assert resp.status == 413
    messages = [r.getMessage() for r in caplog.records]
    assert messages, "the refusals were logged"
    for text in messages:
        assert "\n" not in text and "\r" not in text
        assert len(text) < 1000


@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello on the plain port
    b"GET /v1/presence HTTP/1.1\r\nHost: x\r\nX: a\rforged\r\n\r\n",
])
async def test_malformed_http_logs_one_line(daemon: RunningDaemon, raw: bytes,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.daemon.port)
    writer.write(raw)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(200), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0]
    lines = [r for r in caplog.records if r.name.startswith(("aiohttp", "astpresence.web"))]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].exc_info is None and "malformed HTTP request" in lines[0].getMessage()
    assert "\n" not in lines[0].getMessage()
