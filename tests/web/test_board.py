"""The web board in a real headless Chromium: fake Asterisk -> daemon -> page, and back.

Each test starts the fake AMI server and the daemon in-process, makes tokens
with the CLI (a subprocess on the daemon's database, as an admin would), and
drives Debian's Chromium over the DevTools protocol (tests/board_browser.py).
Assertions read the tiles' ``data-*`` attributes and text, never styles.
"""

from __future__ import annotations

import asyncio
import json
import re
import struct
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from astpresence.domain.call_settings import CallSettings
from astpresence.domain.calls import ForwardPolicy
from astpresence.sources.sessions.model import SessionRules
from astpresence.web.auth import Privacy
from astpresence.domain.rules import DEFAULT_RULES
from astpresence.domain.records import UserRecord
from tests.support.board_browser import CHROMIUM, Chromium
from astpresence.domain.model import Presence, State
from astpresence.domain.statuses import Status
from tests.support.e2e import RunningDaemon, make_config, seed, start_daemon
from tests.support.fakeami import FakeAsterisk

pytestmark = pytest.mark.timeout(45)

ALICE = "Alice Example"
# Markup in a name must come out as text, never as elements.
BOB = 'Bob "<b>Builder</b>" & <img src=x onerror="window.pwned=1">'
USERS = (UserRecord("2000", name=ALICE, origin="config"),
         UserRecord("2001", name=BOB, origin="config"))


def tile(uid: str, what: str) -> str:
    """JS expression: an attribute or the text of a part of a user's tile."""
    base = f"document.querySelector('#board li[data-user=\"{uid}\"]')"
    if what.startswith("data-"):
        return f"{base}?.getAttribute('{what}')"
    return f"{base}?.querySelector('.tile-{what}')?.textContent"


def visible_tiles() -> str:
    return "[...document.querySelectorAll('#board li')].filter(li => !li.hidden)" \
           ".map(li => li.dataset.user).join(',')"


async def token_cli(db: Path, *args: str) -> str:
    """``astpresence token ...`` as a subprocess on the daemon's database."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "astpresence", "token", *args, "--db", str(db),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, f"token {args[0]} failed: {err.decode()}"
    return out.decode()


async def create_token(db: Path, role: str, user: str | None = None) -> dict[str, Any]:
    args = ["create", "--role", role, "--json"] + (["--user", user] if user else [])
    made: dict[str, Any] = json.loads(await token_cli(db, *args))
    assert made["role"] == role and made["user"] == user and made["token"], made
    return made


@dataclass
class Env:
    fake: FakeAsterisk
    running: RunningDaemon
    browser: Chromium
    db: Path
    user_token: str  # acts for 2000
    user_token_id: str
    operator_token: str
    tmp_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.running.daemon.port}"

    async def api(self, method: str, path: str, body: Any = None,
                  token: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token or self.operator_token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.request(method, self.url + path, json=body) as resp:
                return resp.status, await resp.json()

    async def sign_in(self, token: str | None = None) -> None:
        b = self.browser
        await b.wait_for("!document.getElementById('sign-in').hidden", what="sign-in form")
        await b.fill("#token", token or self.user_token)
        await b.click("#sign-in-button")
        await b.wait_for("document.getElementById('conn').dataset.status === 'connected'",
                         what="connected status")
        await b.wait_for("document.querySelectorAll('#board li').length === 2", what="2 tiles")
        await b.wait_for("document.getElementById('board').getAttribute('aria-busy') === 'false'",
                         what="presence loaded")


#: Call handling on: forwards to colleagues, and to numbers starting 017.
CALLS = CallSettings(True, (), ForwardPolicy(True, (re.compile(r"017[0-9]{5,12}"),)))

#: A board tab is a session; idle turns away after a second here (5 min by default).
SESSIONS = SessionRules(idle_away_after=timedelta(seconds=1), idle_xa_after=timedelta(hours=1))

#: The catalogue the board's picker offers ([[statuses]]).
LUNCH = Status("lunch", "Lunch", Presence(State.AWAY, "", "At lunch"), timedelta(hours=1), 1)


@pytest.fixture
async def env(fake_ami: FakeAsterisk, tmp_path: Path,
              request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the board tests need Debian's 'chromium' package, "
                    "which .ci/run installs (locally: apt-get install -y chromium)")
    seed(fake_ami)
    db = tmp_path / "p.db"
    # Offline overlay after 2 s, so a test can watch a tile turn grey.
    rules = replace(DEFAULT_RULES, offline_after=timedelta(seconds=2))
    # One team: a user token sees its teammates' subtype and message too.
    users = getattr(request, "param", USERS)  # parametrize("env", [...], indirect=True)
    config = replace(make_config(fake_ami, db, users=users, rules=rules),
                     privacy=Privacy(groups={"team": frozenset({"2000", "2001"})}),
                     statuses=(LUNCH,), calls=CALLS, sources={"sessions": SESSIONS})
    running = await start_daemon(config)
    browser: Chromium | None = None
    e: Env | None = None
    try:
        user = await create_token(db, "user", "2000")
        operator = await create_token(db, "operator")
        browser = await Chromium.launch(tmp_path / "browser")
        e = Env(fake_ami, running, browser, db, user["token"], user["id"], operator["token"],
                tmp_path)
        await browser.goto(e.url + "/")
        yield e
        assert browser.exceptions == [], f"uncaught JS exceptions: {browser.exceptions}"
        blocked = [m for m in browser.console if "Content Security Policy" in m]
        assert blocked == [], f"the page's CSP blocked something: {blocked}"
        assert await browser.evaluate("window.pwned === undefined"), "markup in a name ran"
    finally:
        if browser is not None:
            await browser.close()
        await (e.running if e is not None else running).stop()  # a test may restart it


async def test_tiles_follow_changes_live(env: Env) -> None:
    b = env.browser
    await env.sign_in()
    await b.evaluate("window.__sameDocument = true")  # gone if the page reloads

    assert await b.evaluate(tile("2000", "name")) == ALICE + " (you)"
    assert await b.evaluate(tile("2001", "name")) == BOB
    assert await b.evaluate(
        "document.querySelector('#board li[data-user=\"2001\"] .tile-name').children.length"
    ) == 0, "a name was parsed as HTML"
    assert await b.evaluate(tile("2000", "ext")) == "Ext. 2000"
    assert await b.evaluate(tile("2001", "ext")) == "Ext. 2001"
    assert "Alice Example (2000)" in await b.evaluate(
        "document.getElementById('whoami').textContent")
    assert await b.evaluate("document.getElementById('conn').textContent") == "Connected"

    # Phones unplugged (seed): not_set at first, offline once offline_after passed.
    # Offline is what is going on (the activity), beside what was chosen (nothing).
    await b.wait_for(f"{tile('2001', 'data-status')} === 'offline'", 6, "2001 offline")
    assert await b.evaluate(tile("2001", "data-state")) == "not_set"
    assert await b.evaluate(tile("2001", "data-effective")) == "unavailable"
    assert await b.evaluate(tile("2001", "data-colour")) == "grey"
    assert await b.evaluate(tile("2001", "state-text")) == "Not set"
    assert await b.evaluate(tile("2001", "activity")) == "Offline"

    # A change made on the PBX (a phone's feature code) ...
    await env.fake.external_presence_change("2001", "dnd", "", "Busy")
    await b.wait_for(f"{tile('2001', 'data-state')} === 'dnd'", what="2001 dnd")
    assert await b.evaluate(tile("2001", "data-colour")) == "grey"  # dnd, but offline
    assert await b.evaluate(tile("2001", "message")) == "Busy"
    assert await b.evaluate(tile("2001", "state-text")) == "Do not disturb"
    assert "is now do not disturb, offline: Busy" in await b.evaluate(
        "document.getElementById('announcer').textContent")

    # ... one made by an operator through the API ...
    status, body = await env.api("PUT", "/v1/presence/2001",
                                 {"state": "away", "subtype": "lunch", "message": "<i>13:30</i>"})
    assert status == 200, body
    await b.wait_for(f"{tile('2001', 'data-state')} === 'away'", what="2001 away")
    assert await b.evaluate(tile("2001", "data-colour")) == "grey"  # still offline
    assert await b.evaluate(tile("2001", "subtype")) == "lunch"
    assert await b.evaluate(tile("2001", "message")) == "<i>13:30</i>"

    # ... and what the phones do: 2000, available "back at 3", picks up. The tile
    # keeps what 2000 chose and shows the call beside it (Asterisk gets dnd /
    # on-the-phone with the message kept).
    status, body = await env.api("PUT", "/v1/presence/2000",
                                 {"state": "available", "message": "back at 3"})
    assert status == 200, body
    await env.fake.external_device_change("PJSIP/2000", "INUSE")
    await b.wait_for(f"{tile('2000', 'data-status')} === 'on-the-phone'", what="on the phone")
    assert await b.evaluate(tile("2000", "data-state")) == "available"
    assert await b.evaluate(tile("2000", "data-effective")) == "dnd"
    assert await b.evaluate(tile("2000", "data-colour")) == "red"
    assert await b.evaluate(tile("2000", "state-text")) == "Available"
    assert await b.evaluate(tile("2000", "activity")) == "On the phone"
    assert await b.evaluate(tile("2000", "message")) == "back at 3"
    await env.fake.external_device_change("PJSIP/2000", "NOT_INUSE")
    await b.wait_for(f"{tile('2000', 'data-colour')} === 'green'", what="2000 off the phone")
    assert await b.evaluate(tile("2000", "data-effective")) == "available"
    assert await b.evaluate(tile("2000", "activity")) == ""
    assert await b.evaluate(tile("2000", "state-text")) == "Available"

    assert await b.evaluate("window.__sameDocument === true"), "the page reloaded"


async def test_set_own_presence_from_the_board(env: Env) -> None:
    b = env.browser
    await env.sign_in()
    await b.wait_for("!document.getElementById('mine').hidden", what="my presence form")
    # 2000's phone is plugged in for now, so the colour below does not race the 2 s
    # offline overlay (an unplugged phone's tile is grey whatever was chosen).
    await env.fake.external_device_change("PJSIP/2000", "NOT_INUSE")

    await b.select("#my-state", "away")
    await b.fill("#my-subtype", "lunch")
    await b.fill("#my-message", "back at 2, \"promise\"")
    await b.fill("#my-expiry", "30")
    await b.click("#my-submit")
    await b.wait_for("document.getElementById('my-result').textContent.startsWith('Saved: Away')",
                     what="saved")
    status, got = await env.api("GET", "/v1/presence/2000", token=env.user_token)
    assert status == 200, got
    assert (got["state"], got["subtype"], got["message"]) == (
        "away", "lunch", 'back at 2, "promise"')
    await b.wait_for(f"{tile('2000', 'data-state')} === 'away'", what="own tile away")
    assert await b.evaluate(tile("2000", "data-colour")) == "yellow"
    # The expiry became a timed manual entry that ends in ~30 min.
    status, sources = await env.api("GET", "/v1/presence/2000/sources")
    assert status == 200, sources
    assert [s["end"] is not None for s in sources["sources"] if s["source"] == "manual"] == [True]

    # The API's refusal is shown next to the form; nothing changes.
    await b.fill("#my-message", "x" * 256)
    await b.fill("#my-expiry", "")
    await b.click("#my-submit")
    error = await b.wait_for("document.getElementById('my-error').textContent",
                             what="inline error")
    assert "255" in error, error
    assert (await env.api("GET", "/v1/presence/2000"))[1]["message"] == 'back at 2, "promise"'
    # So is the form's own check of the expiry.
    await b.fill("#my-message", "")
    await b.fill("#my-expiry", "0")
    await b.click("#my-submit")
    await b.wait_for("document.getElementById('my-error').textContent.includes('minutes')",
                     what="expiry error")

    # Clear: back to what the rules give without a manual state (phone unplugged
    # for longer than offline_after: offline).
    await env.fake.external_device_change("PJSIP/2000", "UNAVAILABLE")
    await b.click("#my-clear")
    await b.wait_for(f"{tile('2000', 'data-status')} === 'offline'", what="cleared")
    assert await b.evaluate(tile("2000", "data-colour")) == "grey"
    assert (await env.api("GET", "/v1/presence/2000"))[1]["source"] != "manual"

    # A named status from the picker: its state, words and duration at once.
    assert await b.evaluate("document.getElementById('my-status').closest('.field').hidden") \
        is False
    assert await b.evaluate(
        "[...document.querySelectorAll('#my-status option')].map(o => o.textContent)"
    ) == ["Custom", "Lunch (1 h)"]
    await b.select("#my-status", "lunch")
    await b.click("#my-submit")
    await b.wait_for(f"{tile('2000', 'data-state')} === 'away'", what="lunch")
    assert await b.evaluate(tile("2000", "message")) == "At lunch"
    status, sources = await env.api("GET", "/v1/presence/2000/sources")
    manual = [s for s in sources["sources"] if s["source"] == "manual"]
    assert len(manual) == 1 and manual[0]["end"] is not None  # an hour, from the status
    await b.select("#my-status", "")
    await b.click("#my-clear")
    await b.wait_for(f"{tile('2000', 'data-status')} === 'offline'", what="cleared again")

    # The token survives a reload (localStorage); signing out forgets it.
    await b.reload()
    await b.wait_for("document.getElementById('conn').dataset.status === 'connected'",
                     what="signed in again after reload")
    assert await b.evaluate("document.getElementById('sign-in').hidden")
    await b.click("#sign-out")
    await b.wait_for("!document.getElementById('sign-in').hidden", what="sign-in form")
    assert await b.evaluate("localStorage.getItem('astpresence.token')") is None
    assert await b.evaluate("document.querySelectorAll('#board li').length") == 0

    # A bad token is refused inline and not kept.
    await b.fill("#token", "astp_00000000_" + "A" * 32)
    await b.click("#sign-in-button")
    error = await b.wait_for("document.getElementById('sign-in-error').textContent",
                             what="sign-in error")
    assert "unknown token" in error, error
    assert await b.evaluate("localStorage.getItem('astpresence.token')") is None

    # A saved token that was revoked meanwhile: back to the form, with the reason.
    await env.sign_in()
    await token_cli(env.db, "revoke", env.user_token_id)
    await b.reload()
    error = await b.wait_for("!document.getElementById('sign-in').hidden && "
                             "document.getElementById('sign-in-error').textContent",
                             what="revoked token refused")
    assert "revoked" in error, error
    assert await b.evaluate("localStorage.getItem('astpresence.token')") is None


async def test_filter_and_screenshot(env: Env) -> None:
    b = env.browser
    await env.sign_in()
    # 2001's phone is plugged in, so the state filter below does not race the 2 s
    # offline overlay (an unplugged phone's tile reads "offline", whatever was chosen).
    await env.fake.external_device_change("PJSIP/2001", "NOT_INUSE")
    await env.fake.external_presence_change("2001", "dnd", "meeting", "Until 15:00")
    await b.wait_for(f"{tile('2001', 'data-status')} === 'dnd'", what="2001 dnd, not offline")

    for text, shown in [("bob", "2001"), ("ALICE", "2000"), ("2000", "2000"), ("20", "2000,2001"),
                        ("nobody", "")]:
        await b.fill("#filter-text", text)
        assert await b.evaluate(visible_tiles()) == shown, text
    assert not await b.evaluate("document.getElementById('empty').hidden")
    await b.fill("#filter-text", "")
    await b.select("#filter-state", "dnd")
    assert await b.evaluate(visible_tiles()) == "2001"
    assert await b.evaluate("document.getElementById('count').textContent") == \
        "1 of 2 people shown"
    await b.wait_for(f"{tile('2000', 'data-status')} === 'offline'", 6, "2000 offline")
    await b.select("#filter-state", "offline")
    assert await b.evaluate(visible_tiles()) == "2000"
    # Filters apply to live changes too (not_set by hand loses to the offline overlay).
    await env.fake.external_device_change("PJSIP/2001", "UNAVAILABLE")
    await env.fake.external_presence_change("2001", "not_set", "", "")
    await b.wait_for(f"{visible_tiles()} === '2000,2001'", what="2001 now matches the filter")
    await b.select("#filter-state", "")

    await env.fake.external_presence_change("2001", "dnd", "meeting", "Until 15:00")
    await b.wait_for(f"{tile('2001', 'data-state')} === 'dnd'", what="2001 dnd again")
    await b.evaluate("document.activeElement.blur()")
    await b.wait_for("document.getAnimations().length === 0", what="tiles done flashing")
    layout = await b.evaluate("document.documentElement.clientWidth")
    shot = await b.screenshot(env.tmp_path / "board.png")
    assert shot.startswith(b"\x89PNG\r\n\x1a\n") and len(shot) > 5000
    width, height = struct.unpack(">II", shot[16:24])  # the IHDR chunk
    # As wide as the window's layout (1280, less a scrollbar when the page is taller
    # than the window): nothing sticks out sideways.
    assert width == layout and layout >= 1280 - 20 and height > 300, (width, layout, height)

    # Phone width: one column, nothing wider than the screen.
    await b.viewport(390, 844, mobile=True)
    await b.wait_for("document.documentElement.scrollWidth <= 390", what="no sideways scroll")
    phone = await b.screenshot(env.tmp_path / "board-phone.png")
    assert phone.startswith(b"\x89PNG") and struct.unpack(">I", phone[16:20])[0] == 390


async def test_reconnects_and_catches_up_after_daemon_restart(env: Env) -> None:
    b = env.browser
    await env.sign_in()
    await env.fake.external_presence_change("2001", "dnd", "", "first")
    await b.wait_for(f"{tile('2001', 'message')} === 'first'", what="first change")

    port = env.running.daemon.port
    assert port is not None
    config = env.running.daemon.config
    await env.running.stop()
    await b.wait_for("document.getElementById('conn').dataset.status === 'reconnecting'",
                     what="reconnecting status")
    # The server said it was shutting down: a banner says the board may be stale.
    banner = await b.evaluate("document.getElementById('stale').textContent")
    assert "shutting down" in banner and "may be out of date" in banner
    assert await b.evaluate("document.getElementById('board').classList.contains('stale')")
    assert "Reconnecting" in await b.evaluate("document.getElementById('conn').textContent")

    # Changed while the daemon is down: the board must show it after catching up.
    await env.fake.external_presence_change("2001", "away", "", "while you were out")
    env.running = await start_daemon(replace(config, listen_port=port))
    await b.wait_for("document.getElementById('conn').dataset.status === 'connected'", 10,
                     "connected again")
    await b.wait_for(f"{tile('2001', 'message')} === 'while you were out'", 5,
                     "the change made while disconnected")
    await b.wait_for("document.getElementById('stale').hidden", what="the banner gone")
    assert await b.evaluate(tile("2001", "data-colour")) == "yellow"

    # And live again.
    await env.fake.external_presence_change("2001", "dnd", "", "after")
    await b.wait_for(f"{tile('2001', 'data-state')} === 'dnd'", what="live after reconnect")
    assert await b.evaluate(tile("2001", "data-colour")) == "red"


async def test_banner_while_the_asterisk_link_is_down(env: Env) -> None:
    b = env.browser
    await env.sign_in()
    assert await b.evaluate("document.getElementById('stale').hidden")
    await env.fake.stop()  # Asterisk goes away; the daemon keeps serving the board
    await b.wait_for("!document.getElementById('stale').hidden", what="the stale banner")
    text = await b.evaluate("document.getElementById('stale').textContent")
    assert text.startswith("The link to Asterisk is down since ") and "out of date" in text
    assert await b.evaluate("document.getElementById('board').classList.contains('stale')")
    # A board opened while the link is down shows it at once (the hello says so).
    await b.goto(env.url + "/")
    await b.wait_for("document.getElementById('conn').dataset.status === 'connected'",
                     what="connected again")
    await b.wait_for("!document.getElementById('stale').hidden", what="banner after reload")
    await env.fake.start()
    await env.running.wait_synced(timeout=15)
    await b.wait_for("document.getElementById('stale').hidden", 10, "the banner gone")
    assert not await b.evaluate("document.getElementById('board').classList.contains('stale')")


# 2000 has no name in the config: the board shows the one Asterisk has.
NAMELESS = (UserRecord("2000", origin="config"), USERS[1])


@pytest.mark.parametrize("env", [NAMELESS], indirect=True)
async def test_contact_cards_names_and_voicemail(env: Env, fake_ami: FakeAsterisk) -> None:
    b = env.browser
    await env.sign_in()
    # Names and mailboxes are read at a sync: give Asterisk some, then reconnect.
    fake_ami.modules |= {"res_pjsip", "app_voicemail"}
    fake_ami.endpoints["2000"] = ("Zoë Caller-ID", "2000")
    fake_ami.mailboxes["2000@default"] = (2, 0)
    await fake_ami.drop_clients()
    await b.wait_for(f"{tile('2000', 'name')} === 'Zoë Caller-ID (you)'", 10, "name from Asterisk")
    assert await b.evaluate(tile("2000", "voicemail")) == "\u2709 2"
    assert await b.evaluate(
        "document.querySelector('li[data-user=\"2000\"] .tile-voicemail').title"
    ) == "2 new voicemail messages"
    await b.fill("#filter-text", "zoë")
    assert await b.evaluate(visible_tiles()) == "2000"
    await b.fill("#filter-text", "")
    # Listened to: the badge goes, live.
    await fake_ami.set_voicemail("2000@default", 0, 2)
    await b.wait_for("document.querySelector('li[data-user=\"2000\"] .tile-voicemail').hidden",
                     what="badge gone")
    # The config's name still wins for 2001, and 2001 has no mailbox: no badge.
    assert await b.evaluate(
        "document.querySelector('li[data-user=\"2001\"] .tile-voicemail').hidden")


async def test_my_calls_and_the_forwarding_on_the_cards(env: Env, fake_ami: FakeAsterisk
                                                        ) -> None:
    b = env.browser
    await env.sign_in()
    await b.wait_for("!document.getElementById('calls').hidden", what="my calls panel")
    assert await b.evaluate("document.getElementById('calls-now').textContent") == (
        "Now: calls follow presence.")
    assert await b.evaluate("document.getElementById('calls-details').open") is False
    await b.click("#calls-details summary")  # folded until asked for
    # "When I'm away, send calls to my mobile after 20 seconds"
    await b.select("#calls-when", "away")
    await b.select("#calls-action", "forward")
    await b.fill("#calls-to", "01711234567")
    await b.fill("#calls-after", "20")
    await b.click("#calls-add")
    await b.click("#calls-save")
    await b.wait_for("document.getElementById('calls-result').textContent === 'Saved.'",
                     what="saved")
    status, got = await env.api("GET", "/v1/users/2000/call-handling")
    assert status == 200 and got["rules"] == [
        {"when": "away", "action": "forward", "to": "01711234567", "after": 20}], got
    assert await b.evaluate("document.querySelector('#calls-rules li span').textContent") == (
        "When I'm away, calls go to 01711234567 after 20 s")
    # Away: the card says where calls go now.
    await env.api("PUT", "/v1/presence/2000", {"state": "away"})
    await b.wait_for(f"{tile('2000', 'calls')} === "
                     "'calls are forwarded to 01711234567 after 20 s'", what="calls line")
    # The site's policy refuses a premium number: shown, nothing saved.
    await b.fill("#calls-to", "0900123456")
    await b.fill("#calls-after", "")
    await b.click("#calls-add")
    await b.click("#calls-save")
    error = await b.wait_for("document.getElementById('calls-error').textContent",
                             what="refusal")
    assert "not allowed by this site's policy" in error, error
    assert len((await env.api("GET", "/v1/users/2000/call-handling"))[1]["rules"]) == 1
    # FreePBX's *72 on 2001 shows on 2001's card, live.
    fake_ami.astdb[("CF", "2001")] = "2000"
    await fake_ami.external_device_change("Custom:CF2001", "BUSY")
    await b.wait_for(f"{tile('2001', 'forwarding')} === '\\u21aa Forwarded to 2000'",
                     what="forwarding line")
    assert await b.evaluate(
        "document.querySelector('li[data-user=\"2001\"] .tile-forwarding').hidden") is False


async def test_the_board_tab_is_a_session(env: Env) -> None:
    b = env.browser
    await env.sign_in()
    source: Any = env.running.daemon.sources["sessions"]
    await b.wait_for("document.documentElement.dataset.session === 'active'",
                     what="the tab's session active")
    [tab] = source.of("2000")
    assert (tab.kind.value, tab.activity.value) == ("board", "active")
    # The tab is hidden (another tab in front): idle at once, away after the
    # server's idle_away_after (1 s here).
    await b.evaluate("Object.defineProperty(document, 'hidden', {configurable: true, "
                     "get: () => true}); document.dispatchEvent(new Event('visibilitychange'))")
    await b.wait_for("document.documentElement.dataset.session === 'idle'", what="idle")
    await b.wait_for(f"{tile('2000', 'data-state')} === 'away'", 5, "away after idle")
    # Back to the tab: active again, and the presence is what it was.
    await b.evaluate("Object.defineProperty(document, 'hidden', {configurable: true, "
                     "get: () => false}); document.dispatchEvent(new Event('visibilitychange'))")
    await b.wait_for("document.documentElement.dataset.session === 'active'", what="active")
    await b.wait_for(f"{tile('2000', 'data-state')} !== 'away'", 5, "idle over")
