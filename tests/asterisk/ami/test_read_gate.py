"""Reading AMI links in batches while events keep coming (asterisk/ami/gate.py).

Real clients on the fake Asterisk, on both event loops (conftest.py). The hold
is long (1 s) so that "sent while the gate was closed" holds on a slow machine;
nothing waits on a fixed sleep: each step waits for what it needs.
"""

from __future__ import annotations

import asyncio

import pytest

from astpresence.asterisk.ami.client import AMIClient
from astpresence.asterisk.ami.frames import Message
from astpresence.asterisk.ami.gate import ReadGate
from tests.asterisk.ami.test_ami_client import reads_of
from tests.support.fakeami import FakeAsterisk, encode_message

HOLD = 1.0


def event(n: int) -> bytes:
    return encode_message([("Event", "Burst"), ("N", str(n))])


class Seen:
    """Each Burst event's number, with how many times the gate had closed then."""

    def __init__(self, gate: ReadGate) -> None:
        self.gate = gate
        self.items: list[tuple[str, int]] = []
        self.changed = asyncio.Event()

    def __call__(self, msg: Message) -> None:
        if msg.event == "Burst":
            self.items.append((msg.get("N") or "", self.gate.closes))
            self.changed.set()

    async def until(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.items) < count:
                self.changed.clear()
                await self.changed.wait()


async def connect(fake: FakeAsterisk, gate: ReadGate, made: list[AMIClient],
                  on_event: Seen | None = None) -> AMIClient:
    client = AMIClient(fake.host, fake.port, fake.username, fake.secret,
                       on_event=on_event, read_gate=gate)
    made.append(client)
    await client.connect()
    return client


def reading(client: AMIClient) -> bool:
    assert client._link is not None and client._link.transport is not None
    return client._link.transport.is_reading()


class WatchedGate(ReadGate):
    """The gate, telling the test each time it closes or opens: tests wait on
    that, not on a poll."""

    def __init__(self, hold: float) -> None:
        super().__init__(hold)
        self.changed = asyncio.Event()

    def _close(self) -> None:
        super()._close()
        self.changed.set()

    def _open(self) -> None:
        super()._open()
        self.changed.set()

    async def until(self, holding: bool) -> None:
        """Until the gate holds the links (True) or lets them be read (False)."""
        async with asyncio.timeout(10):
            while (self._timer is not None) != holding or (not holding and self._closing):
                self.changed.clear()
                await self.changed.wait()


async def gate_open(gate: WatchedGate) -> None:
    await gate.until(holding=False)


async def test_a_lone_event_is_read_at_once_and_a_burst_waits_for_the_gate(
        fake_ami: FakeAsterisk, clients: list[AMIClient]) -> None:
    gate = WatchedGate(HOLD)
    seen = Seen(gate)
    client = await connect(fake_ami, gate, clients, seen)
    await gate_open(gate)  # the login's answers were reads too
    before = gate.closes
    sizes = reads_of(client)
    await fake_ami.send_raw(event(1))
    await seen.until(1)
    # handled in the read that brought it: the gate had not closed for it
    assert seen.items == [("1", before)]
    await fake_ami.send_raw(event(2))
    await fake_ami.send_raw(event(3))
    await seen.until(3)
    # two writes of the server, read together once the gate opened
    assert seen.items[1:] == [("2", before + 1), ("3", before + 1)]
    assert sizes == [len(event(1)), len(event(2)) + len(event(3))]


async def two_links(fake: FakeAsterisk,
                    made: list[AMIClient]) -> tuple[WatchedGate, AMIClient, AMIClient]:
    """Two links through one gate, both being read."""
    gate = WatchedGate(HOLD)
    first = await connect(fake, gate, made)
    second = await connect(fake, gate, made)
    await gate_open(gate)
    assert reading(first) and reading(second)
    return gate, first, second


async def test_a_read_on_one_link_holds_every_link(
        fake_ami: FakeAsterisk, clients: list[AMIClient]) -> None:
    gate, first, second = await two_links(fake_ami, clients)
    ping = asyncio.ensure_future(first.send_action("Ping"))  # its answer is a read
    await gate.until(holding=True)
    assert not reading(first) and not reading(second)
    assert (await ping).get("Ping") == "Pong"
    await gate_open(gate)
    assert reading(first) and reading(second)


async def test_an_awaited_action_lets_its_link_go_while_the_gate_holds(
        fake_ami: FakeAsterisk, clients: list[AMIClient]) -> None:
    gate, first, second = await two_links(fake_ami, clients)
    await first.send_action("Ping")  # a read: the gate holds both links for HOLD
    await gate.until(holding=True)
    before = gate.closes
    assert not reading(second)
    sent = len(fake_ami.actions)
    ping = asyncio.ensure_future(second.send_action("Ping"))
    await fake_ami.wait_for_action(lambda m: m.get("Action") == "Ping", start=sent)  # it left
    assert reading(second) and not reading(first)  # only the link that awaits
    assert (await ping).get("Ping") == "Pong"  # read at once, not after the gate
    assert gate.closes == before and gate._timer is not None  # the same hold


async def test_the_gate_does_not_resume_a_link_held_for_its_backlog(
        fake_ami: FakeAsterisk, clients: list[AMIClient]) -> None:
    gate, busy, other = await two_links(fake_ami, clients)
    busy._pause_reading()  # what the event queue does when it is full
    assert not reading(busy)
    await other.send_action("Ping")  # a read: the gate closes, then opens
    await gate_open(gate)
    assert reading(other) and not reading(busy)
    busy._resume_reading()
    assert reading(busy)
    assert (await busy.send_action("Ping")).get("Ping") == "Pong"


async def test_a_link_that_ends_leaves_the_gate(
        fake_ami: FakeAsterisk, clients: list[AMIClient]) -> None:
    gate = WatchedGate(HOLD)
    client = await connect(fake_ami, gate, clients)
    assert len(gate._links) == 1
    await client.close()
    assert gate._links == set()


def test_a_gate_holds_for_some_time() -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        ReadGate(0)
