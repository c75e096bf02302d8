"""AMIClient against the fake Asterisk over real TCP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import AsyncIterator, Awaitable, Callable

import pytest

from astpresence.asterisk.ami.incoming import READ_CHUNK
from astpresence.asterisk.ami.client import (
    AMIClient,
    AMIConnectionError,
    AMIError,
    ActionError,
    ActionTimeout,
    AuthenticationError,
    EventHandler,
)
from astpresence.asterisk.ami.frames import ActionEncodeError, Message
from tests.support.processes import free_port
from tests.support.wire import encode_message
from tests.support.fakeami import FakeAsterisk, Hint, QueueMember

LOGGER = "astpresence.asterisk.ami.client"


class Recorder:
    """An on_event handler that keeps what it got and can wait for it."""

    def __init__(self) -> None:
        self.events: list[Message] = []
        self._arrived = asyncio.Condition()

    async def __call__(self, event: Message) -> None:
        self.events.append(event)
        async with self._arrived:
            self._arrived.notify_all()

    def named(self, name: str) -> list[Message]:
        return [e for e in self.events if e.event == name]

    async def wait_for(self, pred: Callable[[Message], bool], timeout: float = 2.0) -> Message:
        async with asyncio.timeout(timeout):
            async with self._arrived:
                await self._arrived.wait_for(lambda: any(pred(e) for e in self.events))
        return next(e for e in self.events if pred(e))


ClientFactory = Callable[..., Awaitable[AMIClient]]


@pytest.fixture
async def make_client(fake_ami: FakeAsterisk) -> AsyncIterator[ClientFactory]:
    """Connected clients on the fake; all closed after the test."""
    clients: list[AMIClient] = []

    async def make(
        on_event: EventHandler | None = None, *, connect: bool = True, **kwargs: object
    ) -> AMIClient:
        client = AMIClient(
            fake_ami.host, fake_ami.port, fake_ami.username, fake_ami.secret,
            on_event=on_event, **kwargs,  # type: ignore[arg-type]
        )
        clients.append(client)
        if connect:
            await client.connect()
        return client

    yield make
    for client in clients:
        await client.close()


@contextlib.asynccontextmanager
async def raw_server(reply: bytes | None) -> AsyncIterator[int]:
    """A TCP server that writes ``reply`` (or nothing) and keeps the socket open."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        if reply:
            writer.write(reply)
        await reader.read()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in writers:
            writer.transport.abort()
        server.close()
        await server.wait_closed()


# -- connect and login ---------------------------------------------------------------


async def test_connect_logs_in_with_events_on(
    fake_ami: FakeAsterisk, make_client: ClientFactory
) -> None:
    events = Recorder()
    client = await make_client(events)
    assert client.connected
    assert client.banner == "Asterisk Call Manager/13.0.0"
    login = fake_ami.actions[0]
    assert (login.get("Action"), login.get("Username"), login.get("Events")) == (
        "Login", "astpresence", "on"
    )
    assert login.action_id
    await events.wait_for(lambda e: e.event == "FullyBooted")


async def test_secret_is_never_logged(
    fake_ami: FakeAsterisk, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    client = await make_client()
    await client.send_action("Ping")
    await client.close()
    assert "Login as user astpresence" in caplog.text
    assert all("s3cret" not in record.getMessage() for record in caplog.records)


async def test_refused_login_raises_authentication_error(
    fake_ami: FakeAsterisk, make_client: ClientFactory
) -> None:
    fake_ami.refuse_logins = True
    client = await make_client(connect=False)
    with pytest.raises(AuthenticationError) as caught:
        await client.connect()
    assert str(caught.value) == "authentication failed for user astpresence"
    # Raised "from None": nothing chained for the caller to print.
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert not client.connected
    with pytest.raises(AMIConnectionError):
        await client.wait_closed()


async def test_wrong_secret_raises_authentication_error(fake_ami: FakeAsterisk) -> None:
    client = AMIClient(fake_ami.host, fake_ami.port, "astpresence", "wrong")
    with pytest.raises(AuthenticationError, match="^authentication failed for user astpresence$"):
        await client.connect()
    await client.close()


async def test_connection_refused() -> None:
    client = AMIClient("127.0.0.1", free_port(), "u", "s", connect_timeout=2.0)
    with pytest.raises(AMIConnectionError, match="cannot connect"):
        await client.connect()
    await client.close()


async def test_non_asterisk_banner_is_refused() -> None:
    async with raw_server(b"SSH-2.0-OpenSSH_9.6\r\n") as port:
        client = AMIClient("127.0.0.1", port, "u", "s", connect_timeout=2.0)
        with pytest.raises(AMIConnectionError, match="not an Asterisk AMI server.*SSH-2.0"):
            await client.connect()
        await client.close()


async def test_server_without_banner_times_out() -> None:
    async with raw_server(None) as port:
        client = AMIClient("127.0.0.1", port, "u", "s", connect_timeout=0.2)
        with pytest.raises(AMIConnectionError, match="within 0.2 s"):
            await client.connect()
        await client.close()


async def test_unanswered_login_times_out(fake_ami: FakeAsterisk) -> None:
    fake_ami.stall()
    client = AMIClient(fake_ami.host, fake_ami.port, "astpresence", "s3cret", connect_timeout=0.3)
    with pytest.raises(AMIConnectionError, match="could not log in .* within 0.3 s"):
        await client.connect()
    await client.close()


async def test_connect_only_once(make_client: ClientFactory) -> None:
    client = await make_client()
    with pytest.raises(AMIError):
        await client.connect()


# -- framing over TCP --------------------------------------------------------------------


TEXT = "été à Paris — 😀 ok"


def reads_of(client: AMIClient) -> list[int]:
    """The size of each read the client's parser is fed from now on."""
    sizes: list[int] = []
    feed = client._parser.feed

    def spy(data: bytes) -> list[object]:
        sizes.append(len(data))
        return feed(data)  # type: ignore[return-value]

    client._parser.feed = spy  # type: ignore[method-assign, assignment]
    return sizes


@pytest.mark.parametrize("chunk", [1, 2, 3, 5])
async def test_utf8_split_by_server_arrives_intact(
    fake_ami: FakeAsterisk, make_client: ClientFactory, chunk: int
) -> None:
    fake_ami.hints = [Hint("2000", "internal", ["PJSIP/2000"], "CustomPresence:2000")]
    events = Recorder()
    client = await make_client(events)
    sizes = reads_of(client)
    fake_ami.split_writes = chunk
    fake_ami.split_delay = 0.0005
    await fake_ami.external_presence_change("2000", "away", TEXT, TEXT)
    status = await events.wait_for(lambda e: e.event == "PresenceStatus")
    change = await events.wait_for(lambda e: e.event == "PresenceStateChange")
    assert (status.get("Subtype"), status.get("Message")) == (TEXT, TEXT)
    assert (change.get("Subtype"), change.get("Message")) == (TEXT, TEXT)
    # The reads really were small: characters were cut between reads.
    assert max(sizes) < 100


async def test_utf8_split_at_each_byte_of_a_character(
    fake_ami: FakeAsterisk, make_client: ClientFactory
) -> None:
    events = Recorder()
    await make_client(events)
    for n, char in enumerate(["é", "€", "😀"]):
        frame = encode_message([("Event", "Test"), ("N", str(n)), ("Text", f"<{char}>")])
        start = frame.index(b"<") + 1
        for cut in range(start + 1, start + len(char.encode())):
            await fake_ami.send_raw(frame[:cut])
            await asyncio.sleep(0.02)  # the client reads the first part alone
            await fake_ami.send_raw(frame[cut:])
    await events.wait_for(lambda e: len(events.named("Test")) == 1 + 2 + 3)
    assert [e.get("Text") for e in events.named("Test")] == [
        "<é>", "<€>", "<€>", "<😀>", "<😀>", "<😀>"
    ]


async def test_reads_are_bounded(fake_ami: FakeAsterisk, make_client: ClientFactory) -> None:
    events = Recorder()
    client = await make_client(events)
    read = reads_of(client)
    big = encode_message([("Event", "Big"), *[("Data", "x" * 10_000)] * 30])
    await fake_ami.send_raw(big)
    big_event = await events.wait_for(lambda e: e.event == "Big")
    assert len(big_event.get_all("Data")) == 30
    assert len(read) > 1 and all(0 < n <= READ_CHUNK for n in read)


async def test_over_long_frame_is_refused_and_link_survives(
    fake_ami: FakeAsterisk, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    events = Recorder()
    client = await make_client(events, max_frame=4096, max_line=1024)
    await fake_ami.send_raw(encode_message([("Event", "Huge"), ("Data", "x" * 10_000)]))
    await fake_ami.send_raw(encode_message([("Event", "Long"), ("Data", "y" * 2000)]))
    await fake_ami.send_raw(b"this is not a header\r\n\r\n")
    await fake_ami.broadcast_event([("Event", "After")])
    await events.wait_for(lambda e: e.event == "After")
    assert not events.named("Huge") and not events.named("Long")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == LOGGER]
    reasons = " ".join(r.getMessage() for r in warnings)
    assert "frame too long" in reasons and "line too long" in reasons
    assert "malformed header line" in reasons
    assert client.connected
    assert (await client.send_action("Ping")).get("Ping") == "Pong"


async def test_forged_frames_from_unescaped_crlf_are_survived(
    fake_ami: FakeAsterisk, make_client: ClientFactory
) -> None:
    # escaping-and-limits.txt, inj-1: Asterisk writes the CR/LF raw.
    fake_ami.hints = [Hint("2001", "internal", ["PJSIP/2001"], "CustomPresence:2001")]
    events = Recorder()
    client = await make_client(events)
    response = await client.send_action(
        "Setvar",
        [
            ("Variable", "PRESENCE_STATE(CustomPresence:2001)"),
            ("Value", "away,,bDENCkV2ZW50OiBGb3JnZWQNCg0KeA==,e"),
        ],
    )
    assert response.get("Message") == "Variable Set"
    status = await events.wait_for(lambda e: e.event == "PresenceStatus")
    assert status.get("Message") == "l1"  # truncated by the forgery, but no crash
    state = await client.send_action("PresenceState", [("Provider", "CustomPresence:2001")])
    assert state.get("State") == "away"
    assert client.connected


# -- events ------------------------------------------------------------------------------


async def test_events_are_handled_one_at_a_time_in_wire_order(
    fake_ami: FakeAsterisk, make_client: ClientFactory
) -> None:
    seen: list[int] = []
    active = 0
    overlap = False
    done = asyncio.Event()

    async def handler(event: Message) -> None:
        nonlocal active, overlap
        if event.event != "Seq":
            return
        active += 1
        overlap = overlap or active > 1
        await asyncio.sleep(random.uniform(0, 0.01))
        seen.append(int(event["N"]))
        active -= 1
        if len(seen) == 40:
            done.set()

    await make_client(handler)
    for n in range(40):
        await fake_ami.broadcast_event([("Event", "Seq"), ("N", str(n))])
    await asyncio.wait_for(done.wait(), 5.0)
    assert seen == list(range(40))
    assert not overlap


async def test_sync_handler_is_called(fake_ami: FakeAsterisk, make_client: ClientFactory) -> None:
    got: list[str | None] = []
    await make_client(lambda event: got.append(event.event))
    await fake_ami.broadcast_event([("Event", "Hello")])
    async with asyncio.timeout(2):
        while "Hello" not in got:
            await asyncio.sleep(0.01)
    assert got == ["FullyBooted", "Hello"]


async def test_failing_handler_is_logged_and_next_event_handled(
    fake_ami: FakeAsterisk, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    events = Recorder()

    async def handler(event: Message) -> None:
        if event.event == "Boom":
            raise RuntimeError("handler bug")
        await events(event)

    client = await make_client(handler)
    await fake_ami.broadcast_event([("Event", "Boom")])
    await fake_ami.broadcast_event([("Event", "Fine")])
    await events.wait_for(lambda e: e.event == "Fine")
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == LOGGER]
    assert "Boom" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError
    assert client.connected


# -- actions -----------------------------------------------------------------------------


async def test_send_action_returns_response(make_client: ClientFactory) -> None:
    client = await make_client()
    response = await client.send_action("Ping")
    assert (response.response, response.get("Ping")) == ("Success", "Pong")
    assert response.action_id is not None and response.action_id.startswith("astp-")


async def test_action_ids_are_unique(fake_ami: FakeAsterisk, make_client: ClientFactory) -> None:
    client = await make_client()
    await asyncio.gather(*(client.send_action("Ping") for _ in range(20)))
    ids = [m.action_id for m in fake_ami.actions]
    assert len(set(ids)) == len(ids) == 21


async def test_action_error_names_action_and_message(
    fake_ami: FakeAsterisk, make_client: ClientFactory
) -> None:
    client = await make_client()
    with pytest.raises(ActionError) as caught:
        await client.send_action(
            "Setvar", {"Variable": "PRESENCE_STATE(CustomPresence:2000)", "Value": "bogus,x,y"}
        )
    assert str(caught.value) == "Setvar failed: Variable not set"
    assert caught.value.action == "Setvar"
    assert caught.value.response.get("Message") == "Variable not set"
    assert client.connected


async def test_action_timeout_names_the_action_and_link_survives(
    fake_ami: FakeAsterisk, make_client: ClientFactory
) -> None:
    client = await make_client()
    fake_ami.action_delay = 0.3
    with pytest.raises(ActionTimeout) as caught:
        await client.send_action("Ping", timeout=0.1)
    assert str(caught.value) == "Ping got no response within 0.1 s"
    fake_ami.action_delay = 0
    # The late answer is dropped; the next action gets its own.
    response = await client.send_action("ModuleCheck", {"Module": "app_queue"})
    assert response.get("Ping") is None and response.response == "Success"


async def test_default_action_timeout_applies(
    fake_ami: FakeAsterisk, make_client: ClientFactory
) -> None:
    client = await make_client(action_timeout=0.1)
    fake_ami.stall()
    with pytest.raises(ActionTimeout, match="^Setvar got no response within 0.1 s$"):
        await client.send_action("Setvar", {"Variable": "X", "Value": "1"})


async def test_caller_may_not_set_action_id(make_client: ClientFactory) -> None:
    client = await make_client()
    with pytest.raises(ValueError, match="ActionID"):
        await client.send_action("Ping", {"ActionID": "mine"})


async def test_unsafe_header_is_refused_before_sending(
    fake_ami: FakeAsterisk, make_client: ClientFactory
) -> None:
    client = await make_client()
    before = len(fake_ami.actions)
    with pytest.raises(ActionEncodeError):
        await client.send_action("Setvar", {"Variable": "X", "Value": "a\r\nAction: Logoff"})
    assert len(fake_ami.actions) == before
    assert (await client.send_action("Ping")).get("Ping") == "Pong"


# -- list actions --------------------------------------------------------------------------


def seed_lists(fake: FakeAsterisk) -> None:
    fake.hints = [
        Hint("2000", "internal", ["PJSIP/2000"], "CustomPresence:2000"),
        Hint("2001", "internal", ["PJSIP/2001", "Custom:presence-2001"], "CustomPresence:2001"),
    ]
    fake.devices = {"PJSIP/2000": "NOT_INUSE", "PJSIP/2001": "UNAVAILABLE",
                    "Custom:presence-2001": "INVALID"}
    fake.presences = {"2000": ("away", "at home", "back at 3"), "2001": ("dnd", "", "")}
    fake.queue_members = [
        QueueMember("support", "Alice", "PJSIP/2000", state_interface="hint:2000@internal")
    ]


async def test_list_actions_are_collected(
    fake_ami: FakeAsterisk, make_client: ClientFactory
) -> None:
    seed_lists(fake_ami)
    events = Recorder()
    client = await make_client(events)
    presences = await client.send_list_action("PresenceStateList")
    assert [(e.event, e.get("Presentity"), e.get("Status")) for e in presences] == [
        ("PresenceStateChange", "CustomPresence:2000", "away"),
        ("PresenceStateChange", "CustomPresence:2001", "dnd"),
    ]
    devices = await client.send_list_action("DeviceStateList")
    assert {e.get("Device"): e.get("State") for e in devices} == fake_ami.devices
    extensions = await client.send_list_action("ExtensionStateList")
    assert [(e.get("Exten"), e.get("StatusText")) for e in extensions] == [
        ("2000", "Idle"), ("2001", "Unavailable")
    ]
    queue = await client.send_list_action("QueueStatus")
    assert [e.event for e in queue] == ["QueueParams", "QueueMember"]
    assert queue[1].get("Status") == "1"  # hint Idle -> AST_DEVICE_NOT_INUSE
    # None of the list items reached on_event.
    await client.send_action("Ping")
    assert [e.event for e in events.events] == ["FullyBooted"]


async def test_empty_list(make_client: ClientFactory) -> None:
    client = await make_client()
    assert await client.send_list_action("PresenceStateList") == []


async def test_list_action_error(make_client: ClientFactory) -> None:
    client = await make_client()
    with pytest.raises(ActionError, match="ExtensionStateList failed: No dialplan hints"):
        await client.send_list_action("ExtensionStateList")


async def test_list_items_and_live_events_are_separated(
    fake_ami: FakeAsterisk, make_client: ClientFactory
) -> None:
    events = Recorder()
    client = await make_client(events)
    fake_ami.stall()  # the test writes the answer itself, interleaved
    start = len(fake_ami.actions)
    task = asyncio.create_task(client.send_list_action("PresenceStateList"))
    request = await fake_ami.wait_for_action(
        lambda m: m.get("Action") == "PresenceStateList", start=start
    )
    aid = request["ActionID"]
    for headers in [
        [("Response", "Success"), ("ActionID", aid), ("EventList", "start")],
        [("Event", "PresenceStateChange"), ("ActionID", aid), ("Presentity", "A")],
        [("Event", "PresenceStateChange"), ("Presentity", "live")],
        [("Event", "PresenceStateChange"), ("ActionID", "someone-else"), ("Presentity", "other")],
        [("Event", "PresenceStateChange"), ("ActionID", aid), ("Presentity", "B")],
        [("Event", "PresenceStateListComplete"), ("ActionID", aid),
         ("EventList", "Complete"), ("ListItems", "2")],
    ]:
        await fake_ami.send_raw(encode_message(headers))
    items = await asyncio.wait_for(task, 2.0)
    assert [e.get("Presentity") for e in items] == ["A", "B"]
    await events.wait_for(lambda e: e.get("Presentity") == "other")
    assert [e.get("Presentity") for e in events.named("PresenceStateChange")] == [
        "live", "other"
    ]
    assert not events.named("PresenceStateListComplete")


async def test_list_timeout_covers_the_whole_list_and_late_items_are_dropped(
    fake_ami: FakeAsterisk, make_client: ClientFactory
) -> None:
    events = Recorder()
    client = await make_client(events)
    fake_ami.stall()
    start = len(fake_ami.actions)
    task = asyncio.create_task(client.send_list_action("DeviceStateList", timeout=0.3))
    request = await fake_ami.wait_for_action(
        lambda m: m.get("Action") == "DeviceStateList", start=start
    )
    aid = request["ActionID"]
    # The start arrives in time; the list never completes.
    await fake_ami.send_raw(encode_message(
        [("Response", "Success"), ("ActionID", aid), ("EventList", "start")]
    ))
    with pytest.raises(ActionTimeout, match="^DeviceStateList got no response within 0.3 s$"):
        await task
    await fake_ami.send_raw(encode_message(
        [("Event", "DeviceStateChange"), ("ActionID", aid), ("Device", "late")]
    ))
    await fake_ami.send_raw(encode_message([("Event", "Marker")]))
    await events.wait_for(lambda e: e.event == "Marker")
    assert not events.named("DeviceStateChange")


# -- liveness and the end of the link --------------------------------------------------------


async def test_silent_server_is_detected_within_two_ping_intervals(
    fake_ami: FakeAsterisk, make_client: ClientFactory
) -> None:
    interval = 0.2
    client = await make_client(ping_interval=interval)
    await asyncio.sleep(interval * 1.5)  # at least one ping answered
    pings = [m for m in fake_ami.actions if m.get("Action") == "Ping"]
    assert pings, "the client pings every ping_interval"
    loop = asyncio.get_running_loop()
    fake_ami.stall()
    stalled_at = loop.time()
    with pytest.raises(AMIConnectionError, match="^link lost: no answer to Ping within 0.2 s$"):
        await asyncio.wait_for(client.wait_closed(), 5 * interval)
    elapsed = loop.time() - stalled_at
    assert elapsed < 2 * interval + 0.1
    assert not client.connected
    # The client closed its side: the fake sees the connection go.
    async with asyncio.timeout(2):
        while fake_ami.connections:
            await asyncio.sleep(0.01)


async def unanswered_ping(fake_ami: FakeAsterisk, client: AMIClient) -> asyncio.Task[Message]:
    """A Ping the stalled server has read and will not answer."""
    fake_ami.stall()
    task = asyncio.create_task(client.send_action("Ping", timeout=5))
    await fake_ami.wait_for_action(lambda m: m.get("Action") == "Ping")
    return task


async def test_pending_action_fails_when_link_is_lost(
    fake_ami: FakeAsterisk, make_client: ClientFactory
) -> None:
    client = await make_client()
    task = await unanswered_ping(fake_ami, client)
    await fake_ami.drop_clients()
    with pytest.raises(AMIConnectionError, match="^link lost: "):
        await asyncio.wait_for(task, 2.0)
    with pytest.raises(AMIConnectionError, match="^link lost: "):
        await client.wait_closed()
    with pytest.raises(AMIConnectionError):
        await client.send_action("Ping")


async def test_server_restart_ends_the_link(
    fake_ami: FakeAsterisk, make_client: ClientFactory
) -> None:
    client = await make_client()
    await fake_ami.restart()
    with pytest.raises(AMIConnectionError, match="server closed the connection|read failed"):
        await asyncio.wait_for(client.wait_closed(), 2.0)
    # A new client logs in to the restarted server on the same port.
    again = await make_client()
    assert again.connected and fake_ami.logins == 2


async def test_close_is_idempotent_and_fails_pending_actions(
    fake_ami: FakeAsterisk, make_client: ClientFactory
) -> None:
    client = await make_client()
    task = await unanswered_ping(fake_ami, client)
    await client.close()
    await client.close()
    with pytest.raises(AMIConnectionError, match="closed by client"):
        await task
    await client.wait_closed()  # closed by us: returns
    assert not client.connected
    assert not client._tasks
    await fake_ami.wait_for_action(lambda m: m.get("Action") == "Logoff")


async def test_close_from_inside_a_handler(
    fake_ami: FakeAsterisk, make_client: ClientFactory
) -> None:
    holder: list[AMIClient] = []

    async def handler(event: Message) -> None:
        if event.event == "Bye":
            await holder[0].close()

    holder.append(await make_client(handler))
    await fake_ami.broadcast_event([("Event", "Bye")])
    await asyncio.wait_for(holder[0].wait_closed(), 2.0)
    assert not holder[0].connected


async def test_slow_handlers_hold_the_reader_back_not_memory(
        fake_ami: FakeAsterisk, make_client: ClientFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("astpresence.asterisk.ami.incoming.MAX_QUEUED_EVENTS", 10)
    gate = asyncio.Event()
    seen: list[str] = []

    async def slow(event: Message) -> None:
        await gate.wait()
        if event.event == "Flood":
            seen.append(event.get("N") or "")

    client = await make_client(slow)
    flood = b"".join(encode_message([("Event", "Flood"), ("N", str(i))]) for i in range(500))
    await fake_ami.send_raw(flood)
    # Reading stops at the bound (the rest waits in the socket buffers)...
    async with asyncio.timeout(5):
        while client._events.qsize() < 10:
            await asyncio.sleep(0.01)
    assert client._events.qsize() == 10
    # what the read that filled the queue brought waits beside it; no more is read
    assert client._link is not None and client._link.transport is not None
    assert not client._link.transport.is_reading()
    assert 10 < (client._events.held_back() or 0) <= 500
    # ...and nothing is lost: released, every event arrives, in order.
    gate.set()
    async with asyncio.timeout(10):
        while len(seen) < 500:
            await asyncio.sleep(0.01)
    assert seen == [str(i) for i in range(500)]
    assert (await client.send_action("Ping")).get("Ping") == "Pong"


async def test_an_event_waits_for_the_handler_of_the_one_before(
        fake_ami: FakeAsterisk, make_client: ClientFactory) -> None:
    """Events are handled in the read's callback when none wait; one whose handler
    suspends holds back those after it, whichever read brings them."""
    gate, last = asyncio.Event(), asyncio.Event()
    done: list[str] = []

    def handler(event: Message) -> Awaitable[None] | None:
        name = event.event or ""
        if name == "Slow":
            async def slow() -> None:
                await gate.wait()
                done.append(name)
            return slow()
        if name in ("Quick", "Last"):
            done.append(name)
            if name == "Last":
                last.set()
        return None

    client = await make_client(handler)
    await fake_ami.broadcast_event([("Event", "Quick")])
    await fake_ami.broadcast_event([("Event", "Slow")])
    await fake_ami.broadcast_event([("Event", "Last")])
    # a round trip: both reads are in before the Pong
    assert (await client.send_action("Ping")).get("Ping") == "Pong"
    assert done == ["Quick"]
    gate.set()
    await asyncio.wait_for(last.wait(), 5)
    assert done == ["Quick", "Slow", "Last"]


async def test_pings_do_not_end_a_link_that_is_only_busy(
        fake_ami: FakeAsterisk, make_client: ClientFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A hint flood faster than the handlers: the Ping's answer waits in the socket
    behind the events there is no room for. That is a busy link, not a dead one."""
    monkeypatch.setattr("astpresence.asterisk.ami.incoming.MAX_QUEUED_EVENTS", 10)
    gate = asyncio.Event()

    async def slow(event: Message) -> None:
        await gate.wait()

    interval = 0.2
    client = await make_client(slow, ping_interval=interval)
    flood = b"".join(encode_message([("Event", "Flood"), ("N", str(i))]) for i in range(2000))
    await fake_ami.send_raw(flood)
    async with asyncio.timeout(5):
        while client._events.qsize() < 10:
            await asyncio.sleep(0.01)
    pings = len([m for m in fake_ami.actions if m.get("Action") == "Ping"])
    async with asyncio.timeout(5):  # several ping intervals pass with the reader held back
        while len([m for m in fake_ami.actions if m.get("Action") == "Ping"]) < pings + 4:
            await asyncio.sleep(0.01)
    assert client.connected
    gate.set()
    assert (await client.send_action("Ping")).get("Ping") == "Pong"
    # and a server that stops answering while nothing is held back is still caught
    fake_ami.stall()
    with pytest.raises(AMIConnectionError, match="no answer to Ping"):
        await asyncio.wait_for(client.wait_closed(), 10 * interval)


async def test_a_backlog_of_events_lets_other_tasks_run(
        fake_ami: FakeAsterisk, make_client: ClientFactory) -> None:
    """Handlers that never suspend, a backlog of thousands: the API, pings and timers
    still get turns (the dispatcher yields every few milliseconds), not after it all."""
    handled: list[int] = []

    def busy(event: Message) -> None:  # a synchronous handler: no await, ever
        if event.event == "Flood":
            t = time.perf_counter() + 0.0002
            while time.perf_counter() < t:
                pass
            handled.append(1)

    client = await make_client(busy)
    flood = b"".join(encode_message([("Event", "Flood"), ("N", str(i))]) for i in range(5000))
    await fake_ami.send_raw(flood)
    async with asyncio.timeout(5):
        while not handled:
            await asyncio.sleep(0)
    seen_at: list[int] = []
    for _ in range(5):  # another task's turns while the backlog is worked off
        await asyncio.sleep(0)
        seen_at.append(len(handled))
    assert seen_at[-1] < 5000, "the dispatcher held the loop for the whole backlog"
    async with asyncio.timeout(10):
        while len(handled) < 5000:
            await asyncio.sleep(0.01)
    assert client.connected
