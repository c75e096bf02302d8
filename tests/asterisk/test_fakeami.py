"""The fake Asterisk answers exactly what the real one did in the captures.

Each capture in tests/support/captures/ is replayed over TCP against a fake
seeded like the Asterisk that was recorded; the bytes must be identical except
for the documented variable parts: the values of Uptime, LastReload,
Timestamp, LoginTime and LastPause. The order of PresenceStatus and
PresenceStateChange varies on a real Asterisk; the fake is told per step which
order the capture shows, so the comparison stays byte-exact.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
from pathlib import Path

import pytest

from astpresence.asterisk.ami.frames import FrameParser, Message, encode_action
from tests.support.fakeami import (
    CAPTURE_DIR,
    FakeAsterisk,
    Hint,
    QueueMember,
    load_capture,
)

CAPTURES = sorted(CAPTURE_DIR.glob("*.txt"))
VARIABLE = re.compile(
    rb"(?m)^(Uptime|LastReload|Timestamp|LoginTime|LastPause): \d+(?:\.\d{6})?(?=\r$)"
)

HINT_2000 = "PJSIP/2000,CustomPresence:2000"
HINT_2001 = "PJSIP/2001&Custom:presence-2001,CustomPresence:2001"


async def shut(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


def normalise(data: bytes) -> bytes:
    return VARIABLE.sub(rb"\1: <N>", data)


def hints() -> list[Hint]:
    return [
        Hint("2000", "internal", ["PJSIP/2000"], "CustomPresence:2000", watchers=2),
        Hint("2001", "internal", ["PJSIP/2001", "Custom:presence-2001"],
             "CustomPresence:2001", watchers=1),
    ]


def seeded(capture: str) -> FakeAsterisk:
    """A fake in the state the recorded Asterisk was in when the capture began."""
    fake = FakeAsterisk()
    fake.hints = hints()
    fake.devices = {
        "PJSIP/2000": "UNAVAILABLE",
        "PJSIP/2001": "UNAVAILABLE",
        "Custom:presence-2001": "INVALID",
    }
    if capture == "escaping-and-limits.txt":
        # dev-idle (NOT_INUSE) got no events at all: it already was NOT_INUSE.
        fake.devices["Custom:presence-2001"] = "NOT_INUSE"
    if capture == "devstate-lists-queue-misc.txt":
        # The order DeviceStateList showed (a hash order on Asterisk).
        fake.devices = {
            "PJSIP/watcher": "UNAVAILABLE",
            "Queue:support_avail": "INUSE",
            "PJSIP/2000": "UNAVAILABLE",
            "PJSIP/2001": "UNAVAILABLE",
            "Custom:presence-2001": "INVALID",
            "Queue:support_pause_PJSIP/2000": "NOT_INUSE",
        }
        fake.presences = {"2000": ("xa", "", ""), "2001": ("dnd", "", "")}
        fake.queue_members = [
            QueueMember("support", "Alice", "PJSIP/2000", state_interface="hint:2000@internal")
        ]
    return fake


def received_frames_count(expected: bytes) -> int:
    return expected.count(b"\r\n\r\n")


async def read_like(reader: asyncio.StreamReader, expected: bytes) -> bytes:
    """Read as many bytes / frames from the fake as the capture shows."""
    if b"\r\n\r\n" not in expected:  # the banner line
        return await reader.readexactly(len(expected))
    parts = [await reader.readuntil(b"\r\n\r\n") for _ in range(received_frames_count(expected))]
    return b"".join(parts)


def event_order(expected: bytes) -> str:
    status = expected.find(b"Event: PresenceStatus\r\n")
    change = expected.find(b"Event: PresenceStateChange\r\n")
    return "status_first" if 0 <= status < change else "change_first"


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.stem)
async def test_replay_capture(capture: Path) -> None:
    fake = seeded(capture.name)
    await fake.start()
    try:
        reader, writer = await asyncio.open_connection(fake.host, fake.port)
        for step in load_capture(capture):
            fake.presence_event_order = event_order(step.received)
            writer.write(step.sent)
            got = await asyncio.wait_for(read_like(reader, step.received), 5.0)
            assert normalise(got) == normalise(step.received), step.sent.decode()
        if capture.name == "login-failed.txt":
            # manager.c action_login() returns -1: Asterisk ends the session.
            assert await asyncio.wait_for(reader.read(), 5.0) == b""
        await shut(writer)
    finally:
        await fake.stop()


def test_captures_are_present() -> None:
    assert {p.name for p in CAPTURES} >= {
        "devstate-lists-queue-misc.txt",
        "escaping-and-limits.txt",
        "login-failed.txt",
        "presence-set-list-query.txt",
    }


# -- behaviour beyond the captures ------------------------------------------------


class Client:
    """A bare AMI client on the fake, for checking what it writes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = FrameParser()
        self.queue: list[Message] = []
        self.ids = 0

    @classmethod
    async def login(cls, fake: FakeAsterisk, events: str = "on") -> Client:
        reader, writer = await asyncio.open_connection(fake.host, fake.port)
        client = cls(reader, writer)
        response = await client.action(
            "Login", [("Username", fake.username), ("Secret", fake.secret), ("Events", events)]
        )
        assert response.response == "Success"
        if events == "on":
            assert (await client.next()).event == "FullyBooted"
        return client

    async def next(self, timeout: float = 2.0) -> Message:
        while not self.queue:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            assert data, "connection closed"
            self.queue += [m for m in self.parser.feed(data) if isinstance(m, Message)]
        return self.queue.pop(0)

    async def action(self, name: str, headers: list[tuple[str, str]] | None = None) -> Message:
        self.ids += 1
        action_id = f"t-{self.ids}"
        self.writer.write(encode_action(name, [*(headers or []), ("ActionID", action_id)]))
        while True:
            message = await self.next()
            if message.response is not None and message.action_id == action_id:
                return message

    async def events(self, count: int) -> list[Message]:
        return [await self.next() for _ in range(count)]

    async def close(self) -> None:
        await shut(self.writer)


async def test_refused_login_closes_socket(fake_ami: FakeAsterisk) -> None:
    fake_ami.refuse_logins = True
    reader, writer = await asyncio.open_connection(fake_ami.host, fake_ami.port)
    writer.write(encode_action("Login", [("Username", "astpresence"), ("Secret", "s3cret")]))
    data = await asyncio.wait_for(reader.read(), 2.0)
    assert data.endswith(b"Response: Error\r\nMessage: Authentication failed\r\n\r\n")
    assert fake_ami.logins == 0
    await shut(writer)


async def test_actions_before_login_are_denied(fake_ami: FakeAsterisk) -> None:
    reader, writer = await asyncio.open_connection(fake_ami.host, fake_ami.port)
    writer.write(encode_action("Ping", [("ActionID", "p")]))
    await reader.readline()  # banner
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2.0) == (
        b"Response: Error\r\nActionID: p\r\nMessage: Permission denied\r\n\r\n"
    )
    await shut(writer)


async def test_events_off_gets_no_events(fake_ami: FakeAsterisk) -> None:
    fake_ami.hints = hints()
    quiet = await Client.login(fake_ami, events="off")
    loud = await Client.login(fake_ami)
    await fake_ami.external_presence_change("2000", "away")
    assert {m.event for m in await loud.events(2)} == {"PresenceStateChange", "PresenceStatus"}
    # The quiet client sees only the answer to its own action.
    assert (await quiet.action("Ping")).get("Ping") == "Pong"
    assert quiet.queue == []
    await quiet.close()
    await loud.close()


async def test_external_presence_change_escapes_only_presencestatechange(
    fake_ami: FakeAsterisk,
) -> None:
    fake_ami.hints = hints()
    client = await Client.login(fake_ami)
    await fake_ami.external_presence_change("2001", "DND", "a\\b", 'say "hi"\tnow')
    change, status = await client.events(2)
    assert change.event == "PresenceStateChange"
    assert change.get("Presentity") == "CustomPresence:2001"
    assert (change.get("Status"), change.get("Subtype"), change.get("Message")) == (
        "dnd", "a\\\\b", 'say \\"hi\\"\\tnow'
    )
    assert status.event == "PresenceStatus"
    assert (status.get("Exten"), status.get("Hint")) == ("2001", HINT_2001)
    assert (status.get("Subtype"), status.get("Message")) == ("a\\b", 'say "hi"\tnow')
    assert fake_ami.presences["2001"] == ("dnd", "a\\b", 'say "hi"\tnow')
    await client.close()


async def test_unchanged_presence_sends_no_presencestatus(fake_ami: FakeAsterisk) -> None:
    fake_ami.hints = hints()
    fake_ami.presences["2000"] = ("away", "", "lunch")
    client = await Client.login(fake_ami)
    await fake_ami.external_presence_change("2000", "away", "", "lunch")
    await fake_ami.external_presence_change("2000", "xa")
    events = await client.events(3)
    assert [m.event for m in events] == [
        "PresenceStateChange", "PresenceStateChange", "PresenceStatus"
    ]
    await client.close()


async def test_random_order_produces_both_orders(fake_ami: FakeAsterisk) -> None:
    fake_ami.hints = hints()
    fake_ami.presence_event_order = "random"
    client = await Client.login(fake_ami)
    firsts = set()
    for i in range(40):
        await fake_ami.external_presence_change("2000", "away", "", str(i))
        firsts.add((await client.events(2))[0].event)
        if len(firsts) == 2:
            break
    assert firsts == {"PresenceStateChange", "PresenceStatus"}
    await client.close()


async def test_not_set_leaves_presences_but_stays_listed(fake_ami: FakeAsterisk) -> None:
    fake_ami.hints = hints()
    fake_ami.presences["2000"] = ("away", "x", "y")
    client = await Client.login(fake_ami)
    response = await client.action(
        "Setvar", [("Variable", "PRESENCE_STATE(CustomPresence:2000)"), ("Value", "not_set,,")]
    )
    assert response.get("Message") == "Variable Set"
    assert "2000" not in fake_ami.presences
    await client.action("PresenceStateList")
    items = []
    while (message := await client.next()).event != "PresenceStateListComplete":
        if message.action_id:
            items.append(message)
    assert [(m.get("Presentity"), m.get("Status")) for m in items] == [
        ("CustomPresence:2000", "not_set")
    ]
    await client.close()


async def test_setvar_truncates_decoded_text_to_255_bytes(fake_ami: FakeAsterisk) -> None:
    client = await Client.login(fake_ami)
    long = base64.b64encode(("é" * 200).encode()).decode()
    await client.action(
        "Setvar",
        [("Variable", "PRESENCE_STATE(CustomPresence:9)"), ("Value", f"away,,{long},e")],
    )
    state, _, message = fake_ami.presences["9"]
    assert state == "away"
    # 127 whole "é" (254 bytes); the cut half character reads as U+FFFD.
    assert message == "é" * 127 + "\ufffd"
    await client.close()


@pytest.mark.parametrize(
    "value",
    ["bogus", "", "away,a,b,x"],
    ids=["state", "empty", "options"],
)
async def test_setvar_presence_refusals(fake_ami: FakeAsterisk, value: str) -> None:
    client = await Client.login(fake_ami)
    response = await client.action(
        "Setvar", [("Variable", "PRESENCE_STATE(CustomPresence:2000)"), ("Value", value)]
    )
    assert (response.response, response.get("Message")) == ("Error", "Variable not set")
    assert fake_ami.presences == {}
    await client.close()


@pytest.mark.parametrize(("sub", "stored"), [
    ("QUJD", "ABC"), ("QUJ", "AB"), ("!!!!", "\ufffd" * 3),
    ("bad base64!", "m\ufffd\x7fm\ufffd\x1e\ufffd"),
])
async def test_setvar_presence_decodes_any_base64_as_asterisk_does(
        fake_ami: FakeAsterisk, sub: str, stored: str) -> None:
    """Asterisk 22 refuses no ``,e`` text: ast_base64decode() reads a character
    outside the alphabet as 63 (each pair seen on a real server)."""
    client = await Client.login(fake_ami)
    response = await client.action(
        "Setvar", [("Variable", "PRESENCE_STATE(CustomPresence:2000)"),
                   ("Value", f"away,{sub},TWVzc2FnZQ==,e")])
    assert response.response == "Success"
    assert fake_ami.presences["2000"] == ("away", stored, "Message")
    await client.close()


async def test_only_custompresence_is_writable(fake_ami: FakeAsterisk) -> None:
    client = await Client.login(fake_ami)
    response = await client.action(
        "Setvar", [("Variable", "PRESENCE_STATE(Nope:2000)"), ("Value", "away")]
    )
    assert response.response == "Error"
    await client.close()


@pytest.mark.parametrize(
    ("states", "status", "text"),
    [
        (["NOT_INUSE", "INVALID"], 0, "Idle"),
        (["UNAVAILABLE", "INVALID"], 4, "Unavailable"),
        (["UNAVAILABLE", "NOT_INUSE"], 0, "Idle"),
        (["INVALID", "INVALID"], 4, "Unavailable"),
        (["UNKNOWN", "INVALID"], 0, "Idle"),
        (["INUSE", "NOT_INUSE"], 1, "InUse"),
        (["BUSY", "NOT_INUSE"], 2, "Busy"),
        (["RINGING", "NOT_INUSE"], 8, "Ringing"),
        (["INUSE", "RINGING"], 9, "InUse&Ringing"),
        (["RINGING", "BUSY"], 9, "InUse&Ringing"),
        (["ONHOLD", "NOT_INUSE"], 16, "Hold"),
    ],
)
async def test_extension_state_aggregation(
    fake_ami: FakeAsterisk, states: list[str], status: int, text: str
) -> None:
    fake_ami.hints = hints()
    fake_ami.devices = {"PJSIP/2001": states[0], "Custom:presence-2001": states[1]}
    client = await Client.login(fake_ami)
    response = await client.action("ExtensionState", [("Exten", "2001"), ("Context", "internal")])
    assert (response.get("Status"), response.get("StatusText")) == (str(status), text)
    await client.close()


async def test_device_change_events(fake_ami: FakeAsterisk) -> None:
    fake_ami.hints = hints()
    fake_ami.devices = {"PJSIP/2001": "UNAVAILABLE", "Custom:presence-2001": "INVALID"}
    client = await Client.login(fake_ami)
    await fake_ami.external_device_change("Custom:presence-2001", "NOT_INUSE")
    ext, dev = await client.events(2)
    assert (ext.event, ext.get("Exten"), ext.get("Status"), ext.get("StatusText")) == (
        "ExtensionStatus", "2001", "0", "Idle"
    )
    assert (dev.event, dev.get("Device"), dev.get("State")) == (
        "DeviceStateChange", "Custom:presence-2001", "NOT_INUSE"
    )
    # Same state again: Asterisk publishes nothing (aggregate unchanged).
    await fake_ami.external_device_change("Custom:presence-2001", "NOT_INUSE")
    # A device in no hint: only DeviceStateChange.
    await fake_ami.external_device_change("PJSIP/9", "INUSE")
    (only,) = await client.events(1)
    assert (only.event, only.get("Device")) == ("DeviceStateChange", "PJSIP/9")
    await client.close()


async def test_getvar_device_state_and_presence_fields(fake_ami: FakeAsterisk) -> None:
    fake_ami.devices["Custom:x"] = "BUSY"
    fake_ami.presences["7"] = ("away", "sub", "msg")
    client = await Client.login(fake_ami)

    async def get(variable: str) -> str | None:
        return (await client.action("Getvar", [("Variable", variable)])).get("Value")

    assert await get("DEVICE_STATE(Custom:x)") == "BUSY"
    assert await get("DEVICE_STATE(Custom:never)") == "UNKNOWN"
    assert await get("PRESENCE_STATE(CustomPresence:7,subtype)") == "sub"
    assert await get("PRESENCE_STATE(CustomPresence:7,message,e)") == "bXNn"
    assert await get("PRESENCE_STATE(CustomPresence:8,value)") == "not_set"
    await client.close()


async def test_modulecheck(fake_ami: FakeAsterisk) -> None:
    client = await Client.login(fake_ami)
    ok = await client.action("ModuleCheck", [("Module", "res_manager_presencestate.so")])
    assert ok.headers == [("Response", "Success"), ("ActionID", ok.action_id), ("Version", "")]
    fake_ami.modules.discard("res_manager_presencestate")
    missing = await client.action("ModuleCheck", [("Module", "res_manager_presencestate")])
    assert (missing.response, missing.get("Message")) == ("Error", "Module not loaded")
    await client.close()


async def test_queuepause_reason_and_all_queues(fake_ami: FakeAsterisk) -> None:
    fake_ami.devices["PJSIP/2000"] = "NOT_INUSE"
    fake_ami.queue_members = [
        QueueMember("sales", "Alice", "PJSIP/2000"),
        QueueMember("support", "Alice", "PJSIP/2000"),
    ]
    client = await Client.login(fake_ami)
    response = await client.action(
        "QueuePause", [("Interface", "PJSIP/2000"), ("Paused", "yes"), ("Reason", "dnd")]
    )
    assert response.get("Message") == "Interface paused successfully"
    assert all(m.paused and m.paused_reason == "dnd" for m in fake_ami.queue_members)
    events = await client.events(6)
    assert [(m.event, m.get("Device") or m.get("Queue")) for m in events] == [
        ("DeviceStateChange", "Queue:sales_pause_PJSIP/2000"),
        ("DeviceStateChange", "Queue:sales_avail"),
        ("QueueMemberPause", "sales"),
        ("DeviceStateChange", "Queue:support_pause_PJSIP/2000"),
        ("DeviceStateChange", "Queue:support_avail"),
        ("QueueMemberPause", "support"),
    ]
    assert events[2].get("Privilege") == "agent,all"
    status = await client.action("QueueStatus", [("Queue", "support")])
    assert status.get("EventList") == "start"
    params, member, complete = await client.events(3)
    assert (member.get("Paused"), member.get("PausedReason"), member.get("Status")) == (
        "1", "dnd", "1"
    )
    assert complete.get("ListItems") == "2"
    await client.close()


async def test_line_too_long_then_next_action_works(fake_ami: FakeAsterisk) -> None:
    client = await Client.login(fake_ami)
    client.writer.write(b"Action: Setvar\r\nValue: " + b"y" * 1100 + b"\r\nActionID: big\r\n\r\n")
    response = await client.next()
    assert response.headers == [
        ("Response", "Error"),
        ("ActionID", "big"),
        ("Message", "Failed to parse message: line too long"),
    ]
    assert (await client.action("Ping")).get("Ping") == "Pong"
    await client.close()


async def test_unknown_command(fake_ami: FakeAsterisk) -> None:
    client = await Client.login(fake_ami)
    response = await client.action("Command", [("Command", "core show nothing")])
    assert response.response == "Error"
    assert response.get_all("Output")[0].startswith("No such command 'core show nothing'")
    await client.close()


async def test_logoff_says_goodbye_and_closes(fake_ami: FakeAsterisk) -> None:
    client = await Client.login(fake_ami)
    response = await client.action("Logoff")
    assert (response.response, response.get("Message")) == ("Goodbye", "Thanks for all the fish.")
    assert await asyncio.wait_for(client.reader.read(), 2.0) == b""
    await client.close()


async def test_split_writes_deliver_small_chunks(fake_ami: FakeAsterisk) -> None:
    fake_ami.split_writes = 3
    reader, writer = await asyncio.open_connection(fake_ami.host, fake_ami.port)
    assert await asyncio.wait_for(reader.readline(), 2.0) == b"Asterisk Call Manager/13.0.0\r\n"
    await shut(writer)


async def test_wait_helpers_and_counters(fake_ami: FakeAsterisk) -> None:
    client = await Client.login(fake_ami)
    await fake_ami.wait_for_login(1, timeout=1.0)
    assert (fake_ami.connections, fake_ami.logins) == (1, 1)
    start = len(fake_ami.actions)
    await client.action(
        "Setvar", [("Variable", "PRESENCE_STATE(CustomPresence:5)"), ("Value", "chat")]
    )
    found = await fake_ami.wait_for_action(lambda m: m.get("Action") == "Setvar", start=start)
    assert found.get("Value") == "chat"
    assert fake_ami.setvars("PRESENCE_STATE(CustomPresence:5") == [found]
    with pytest.raises(TimeoutError):
        await fake_ami.wait_for_action(lambda m: m.get("Action") == "Nope", timeout=0.05)
    await fake_ami.drop_clients()
    assert fake_ami.connections == 0
    await client.close()


async def test_restart_keeps_port_and_state(fake_ami: FakeAsterisk) -> None:
    fake_ami.presences["1"] = ("away", "", "")
    port = fake_ami.port
    client = await Client.login(fake_ami)
    await fake_ami.restart()
    assert await asyncio.wait_for(client.reader.read(), 2.0) == b""
    assert fake_ami.port == port
    again = await Client.login(fake_ami)
    response = await again.action("PresenceState", [("Provider", "CustomPresence:1")])
    assert response.get("State") == "away"
    assert fake_ami.logins == 2
    await again.close()
    await client.close()


async def test_stall_answers_nothing(fake_ami: FakeAsterisk) -> None:
    client = await Client.login(fake_ami)
    fake_ami.stall()
    client.writer.write(encode_action("Ping", [("ActionID", "silent")]))
    await fake_ami.wait_for_action(lambda m: m.action_id == "silent", timeout=1.0)
    with pytest.raises(TimeoutError):
        await client.next(timeout=0.1)
    fake_ami.stall(False)
    assert (await client.action("Ping")).get("Ping") == "Pong"
    await client.close()

