"""Answers nobody awaits wait in the socket (ami/client.py, ``answer_hold``).

Real clients on the fake Asterisk, on both event loops (conftest.py). Nothing
waits on a fixed sleep: a write has left once the fake has the action, and "not
read yet" is asserted once a second client has seen the event the server sent
after that answer (so the answer was written).
"""

from __future__ import annotations

import asyncio

from astpresence.asterisk.ami.client import AMIClient, AMIConnectionError
from astpresence.asterisk.ami.frames import Message
from tests.asterisk.ami.test_read_gate import reading
from tests.support.fakeami import FakeAsterisk

#: Long enough that only the test's own steps end it.
LONG = 60.0
SETVAR = (("Variable", "PRESENCE_STATE(CustomPresence:2000)"), ("Value", "away"))


async def connect(fake: FakeAsterisk, made: list[AMIClient], hold: float = 0.0,
                  on_event: object = None) -> AMIClient:
    client = AMIClient(fake.host, fake.port, fake.username, fake.secret,
                       answer_hold=hold, on_event=on_event)  # type: ignore[arg-type]
    made.append(client)
    await client.connect()
    return client


class Watcher:
    """A second client: it has seen the server's PresenceStateChange for 2000."""

    def __init__(self) -> None:
        self.seen = asyncio.Event()

    def __call__(self, msg: Message) -> None:
        if msg.event == "PresenceStateChange" and msg.get("Presentity") == "CustomPresence:2000":
            self.seen.set()


async def sent(fake: FakeAsterisk, action: str, start: int) -> None:
    """Until the fake has ``action`` (among the actions after ``start``): the client's
    socket write is done, and so is what the client does after one (outgoing.py)."""
    await fake.wait_for_action(lambda m: m.get("Action") == action, start=start)


async def test_the_answers_of_an_unawaited_write_wait_until_an_awaited_action(
        fake_ami: FakeAsterisk, clients: list[AMIClient]) -> None:
    watcher = Watcher()
    await connect(fake_ami, clients, on_event=watcher)
    client = await connect(fake_ami, clients, hold=LONG)
    start = len(fake_ami.actions)
    written = client.submit("Setvar", SETVAR, unawaited=True)
    await sent(fake_ami, "Setvar", start)
    assert not reading(client)
    async with asyncio.timeout(10):
        await watcher.seen.wait()  # the server answered, then sent the event
    assert not written.done()  # the answer is in the socket, not read
    pong = await client.send_action("Ping")  # awaited: the hold ends at once
    assert pong.get("Ping") == "Pong"
    assert written.done() and written.result().response == "Success"  # read before the Pong
    assert reading(client) and client.answer_holds == 1


async def test_a_hold_ends_by_itself(fake_ami: FakeAsterisk, clients: list[AMIClient]) -> None:
    client = await connect(fake_ami, clients, hold=0.05)
    written = client.submit("Setvar", SETVAR, unawaited=True)
    async with asyncio.timeout(10):
        assert (await written).response == "Success"  # no awaited action ended the hold
    assert client.answer_holds == 1 and reading(client)


async def test_awaited_actions_and_clients_without_a_hold_are_read_at_once(
        fake_ami: FakeAsterisk, clients: list[AMIClient]) -> None:
    held = await connect(fake_ami, clients, hold=LONG)
    start = len(fake_ami.actions)
    ping = asyncio.ensure_future(held.send_action("Ping"))
    await sent(fake_ami, "Ping", start)
    assert reading(held) and held.answer_holds == 0
    await ping
    plain = await connect(fake_ami, clients)
    start = len(fake_ami.actions)
    written = plain.submit("Setvar", SETVAR, unawaited=True)
    await sent(fake_ami, "Setvar", start)
    assert reading(plain)
    async with asyncio.timeout(10):
        await written


async def test_a_link_that_ends_while_held_leaves_no_timer(
        fake_ami: FakeAsterisk, clients: list[AMIClient]) -> None:
    client = await connect(fake_ami, clients, hold=LONG)
    start = len(fake_ami.actions)
    written = client.submit("Setvar", SETVAR, unawaited=True)
    await sent(fake_ami, "Setvar", start)
    link = client._link
    assert link is not None and link._hold_timers
    await client.close()
    assert link._hold_timers == {}
    # its answer never read: the close failed it, as every action in flight
    assert isinstance(written.exception(), AMIConnectionError)
