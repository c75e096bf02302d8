"""The BLF mirror through ARI: a real HTTP server standing in for Asterisk's ARI."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import AsyncIterator

import pytest
from aiohttp import web

from astpresence.asterisk.ari import AriClient, AriError
from astpresence.app.config import load_config
from astpresence.app.settings import AriConfig, ConfigError
from astpresence.domain.model import Secret
from astpresence.domain.model import Presence, State
from astpresence.domain.rules import RuleConfig
from tests.support.e2e import cli, make_config, seed, until
from tests.conftest import Starter
from tests.support.fakeami import FakeAsterisk


@dataclass
class FakeAri:
    """``PUT /ari/deviceStates/{name}?deviceState=`` as Asterisk answers it."""

    username: str = "ari"
    password: str = "ari-secret"
    states: dict[str, str] = field(default_factory=dict)
    puts: list[tuple[str, str]] = field(default_factory=list)
    fail_with: int | None = None
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_put("/ari/deviceStates/{name}", self._put)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/ari"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _put(self, request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(
            f"{self.username}:{self.password}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"message": "Authentication required"}, status=401)
        name = request.match_info["name"]
        state = request.query.get("deviceState", "")
        self.puts.append((name, state))
        if self.fail_with:
            return web.json_response({"message": "boom"}, status=self.fail_with)
        if not name.startswith("Stasis:"):
            return web.json_response({"message": "Uncontrolled device specified"}, status=409)
        self.states[name] = state
        return web.Response(status=204)


@pytest.fixture
async def ari() -> AsyncIterator[FakeAri]:
    server = FakeAri()
    await server.start()
    yield server
    await server.stop()


async def test_client_puts_device_state(ari: FakeAri) -> None:
    client = AriClient(ari.url, "ari", "ari-secret")
    try:
        await client.set_device_state("Stasis:presence-2000", "BUSY")
        assert ari.states == {"Stasis:presence-2000": "BUSY"}
        with pytest.raises(AriError, match="only Stasis: devices"):
            await client.set_device_state("Custom:x", "BUSY")
        with pytest.raises(AriError, match="does not accept device state 'UNKNOWN'"):
            await client.set_device_state("Stasis:x", "UNKNOWN")
        ari.fail_with = 500
        with pytest.raises(AriError, match="ARI answered 500"):
            await client.set_device_state("Stasis:presence-2000", "INVALID")
    finally:
        await client.close()
    wrong = AriClient(ari.url, "ari", "wrong")
    try:
        ari.fail_with = None
        with pytest.raises(AriError, match="401"):
            await wrong.set_device_state("Stasis:presence-2000", "BUSY")
    finally:
        await wrong.close()
    down = AriClient("http://127.0.0.1:9/ari", "a", "b", timeout=2)
    try:
        with pytest.raises(AriError, match="unreachable"):
            await down.set_device_state("Stasis:presence-2000", "BUSY")
    finally:
        await down.close()


async def test_daemon_mirrors_through_ari(
        fake_ami: FakeAsterisk, ari: FakeAri, tmp_path: Path, daemons: Starter) -> None:
    seed(fake_ami)
    cfg = replace(make_config(fake_ami, tmp_path / "p.db",
                              rules=RuleConfig(mirror=True, mirror_via="ari")),
                  ari=AriConfig(ari.url, "ari", Secret("ari-secret")))
    d = await daemons(cfg)
    await until(lambda: ari.states.get("Stasis:presence-2001") == "INVALID")
    await d.service.set_manual("2001", Presence(State.DND), "api")
    await until(lambda: ari.states.get("Stasis:presence-2001") == "BUSY")
    await d.service.set_manual("2001", Presence(State.XA), "api")
    await until(lambda: ari.states.get("Stasis:presence-2001") == "ONHOLD")
    # Nothing went to AMI's Custom: devices.
    assert fake_ami.setvars("DEVICE_STATE(") == []
    # A failing ARI is logged with the user and retried after a reconnect.
    ari.fail_with = 500
    await d.service.set_manual("2001", Presence(State.AVAILABLE), "api")
    await until(lambda: ari.puts[-1] == ("Stasis:presence-2001", "INVALID"))
    assert ari.states["Stasis:presence-2001"] == "ONHOLD"
    ari.fail_with = None
    await fake_ami.restart()
    await d.wait_synced(timeout=10)
    await until(lambda: ari.states.get("Stasis:presence-2001") == "INVALID", timeout=5)
    assert fake_ami.presences.get("2001", ("",))[0] == "available"  # presence unaffected
    res = await cli(d.url, "dialplan", "hints")
    assert "exten => 2001,hint,PJSIP/2001&Custom:presence-2001&Stasis:presence-2001," \
           "CustomPresence:2001" in res.out


def test_ari_config(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[rules]\nmirror = true\nmirror_via = "ari"\n')
    with pytest.raises(ConfigError, match="needs an \\[ari\\] section"):
        load_config(path, env={})
    path.write_text('[rules]\nmirror = true\nmirror_via = "ari"\n'
                    '[ari]\nurl = "http://127.0.0.1:8088/ari"\nusername = "u"\npassword = "pw-hidden-42"\n')
    cfg = load_config(path, env={})
    assert cfg.ari.url == "http://127.0.0.1:8088/ari" and "pw-hidden-42" not in repr(cfg.ari)
    path.write_text('[ari]\nurl = "ftp://x"\n')
    with pytest.raises(ConfigError, match="ari.url"):
        load_config(path, env={})
