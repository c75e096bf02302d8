"""The HA group's notices: what a leader tells its followers, parsed back exactly,
and always small enough for PostgreSQL's NOTIFY (payloads under 8,000 bytes)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from astpresence.engine.events import EventHub, LinkEvent
from astpresence.domain.forwarding import Forwarding
from astpresence.domain.model import InvalidInput, Presence, State
from astpresence.domain.records import PresenceView
from astpresence.cluster.notices import (
    USERS_NOTICE,
    Change,
    UsersChanged,
    Written,
    change_notice,
    link_notice,
    parse_notice,
    written_notice,
)
from astpresence.cluster.replica import Replica

#: PostgreSQL refuses a NOTIFY payload of 8,000 bytes or more.
NOTIFY_LIMIT = 8000

text = st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs"),
                                      exclude_characters="\u2028\u2029"))


def fits(value: str) -> bool:
    return len(value.encode()) <= 255


@given(state=st.sampled_from(list(State)), subtype=text.filter(fits),
       message=text.filter(fits), name=st.text(max_size=100), actor=st.text(max_size=80),
       voicemail=st.none() | st.integers(0, 10_000), pending=st.booleans())
def test_a_change_notice_round_trips_and_fits_a_notify(
        state: State, subtype: str, message: str, name: str, actor: str,
        voicemail: int | None, pending: bool) -> None:
    view = PresenceView("2000", Presence(state, subtype, message), "manual", actor,
                        datetime(2026, 12, 3, 14, 0, 0, 123456, tzinfo=UTC), pending,
                        "manual: set by " + actor, name, voicemail)
    notice = change_notice(123, view)
    assert len(notice.encode()) < NOTIFY_LIMIT
    assert parse_notice(notice) == Change(123, view)


def test_the_largest_change_notice_fits() -> None:
    worst = "\\" * 255  # escaped twice as long in JSON
    view = PresenceView("u" * 80, Presence(State.AVAILABLE, worst, worst), "s" * 80,
                        "\\" * 200, datetime.now(UTC), False, "r" * 300 + worst,
                        "\\" * 100, 10**9)
    assert len(change_notice(2**62, view).encode()) < NOTIFY_LIMIT


def test_link_and_users_notices() -> None:
    event = LinkEvent("down", datetime(2026, 12, 3, tzinfo=UTC), "10.0.0.1:5038",
                      "connection refused", "east")
    assert parse_notice(link_notice(event)) == event
    assert parse_notice(USERS_NOTICE) == UsersChanged()
    assert parse_notice(written_notice("2000")) == Written("2000")


@pytest.mark.parametrize("payload", [
    "", "not json", "[]", '{"t":"change"}', '{"t":"change","seq":"x","view":{}}',
    '{"t":"change","seq":1,"view":{"user":"a","presence":{"state":"sleepy","subtype":"",'
    '"message":""},"source":"","actor":"","since":null,"rule":""}}',
    '{"t":"link","state":"down","since":"yesterday","asterisk":"","node":"a"}',
    '{"t":"somethingelse"}', '{"t":"change","seq":1,"view":{"user":"a","presence":'
    '{"state":"away","subtype":"","message":""},"source":"","actor":"",'
    '"since":"2026-12-03T10:00:00","rule":""}}',
])
def test_anything_else_is_refused(payload: str) -> None:
    with pytest.raises(InvalidInput):
        parse_notice(payload)


def view(state: State) -> PresenceView:
    return PresenceView("2000", Presence(state), "manual", "a", None, False)


def test_a_follower_numbers_as_the_leader_and_forgets_across_a_gap() -> None:
    hub = EventHub(first_seq=500)
    hub.renumber(10)  # loaded at the leader's event 10
    assert hub.seq == 10 and hub.events_since(10) == []
    hub.relay(11, view(State.AWAY), view(State.DND))
    hub.relay(12, view(State.DND), view(State.XA))
    assert [e.seq for e in hub.events_since(10) or []] == [11, 12]
    hub.relay(15, view(State.XA), view(State.CHAT))  # 13 and 14 never came
    assert hub.events_since(12) is None  # a snapshot, not a backlog with a hole
    assert [e.seq for e in hub.events_since(14) or []] == [15]
    hub.continue_after(15)  # taking over where it was: nothing lost
    assert hub.publish(view(State.CHAT), view(State.AWAY)).seq == 16
    assert [e.seq for e in hub.events_since(14) or []] == [15, 16]


def test_a_replica_shows_what_the_leader_told() -> None:
    replica = Replica()
    assert replica.view("2000") is None and replica.card("2000") == ("", None, None)
    told = PresenceView("2000", Presence(State.DND), "manual", "a", None, True,
                        name="Al", voicemail=2)
    replica.changed(told)
    assert replica.view("2000") == told and replica.pending_users() == ["2000"]
    replica.written("2000")
    assert replica.view("2000") == PresenceView("2000", Presence(State.DND), "manual", "a",
                                                None, False, name="Al", voicemail=2)
    assert replica.pending_users() == []
    replica.written("2001")  # never told: nothing to clear
    replica.cards_read({"2000": ("Alice", 3, Forwarding("2002")), "2001": ("Bea", None, None)})
    view = replica.view("2000")
    assert view is not None and (view.name, view.voicemail) == ("Alice", 3)
    assert view.forwarding == Forwarding("2002")
    assert replica.card("2001") == ("Bea", None, None) and replica.view("2001") is None
    replica.clear()
    assert replica.view("2000") is None and replica.card("2001") == ("", None, None)
