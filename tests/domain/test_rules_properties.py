"""Properties of the rules (hypothesis)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from astpresence.domain.model import DeviceState, InvalidInput, Presence, State
from astpresence.domain.behaviours import (
    MissedCallEvent,
    is_our_pause_reason,
    missed_calls_step,
    pause_wanted,
    queue_pause_action,
)
from astpresence.domain.rules import (
    DEFAULT_RULES,
    RULE_KEYS,
    Decision,
    DeviceView,
    RuleConfig,
    all_unavailable,
    call_presence,
    decide,
    in_window,
    next_change_at,
)
from astpresence.domain.records import SourceRecord
from tests.support.rules import (
    D,
    OFFLINE,
    ON_PHONE,
    S,
    at,
)


# --- properties ------------------------------------------------------------

FAST = settings(max_examples=200, deadline=None)
BASE = at(10)

# Ten-second steps over a short span, so boundaries coincide often.
times = st.integers(min_value=-30, max_value=30).map(lambda k: BASE + timedelta(seconds=10 * k))
maybe_times = st.none() | times
presences = st.builds(
    Presence,
    st.sampled_from(list(State)),
    st.sampled_from(["", "meeting", "lunch"]),
    st.sampled_from(["", "back at 3"]),
)
manuals = st.builds(
    lambda p, since, end: SourceRecord("2000", "manual", p, since, "api", end=end),
    presences,
    times,
    st.none() | st.none() | times,
)
timed_entries = st.builds(
    lambda src, p, since, start, end: SourceRecord(
        "2000", src, p, since, "cal", start=start, end=end
    ),
    st.sampled_from(["calendar", "travel", "focus"]),
    presences,
    times,
    maybe_times,
    maybe_times,
)
timed_lists = st.lists(timed_entries, max_size=4).map(tuple)
autos = st.builds(
    lambda p, since, end: SourceRecord("2000", "auto", p, since, "auto", end=end),
    presences,
    times,
    maybe_times,
)
device_states = st.lists(st.sampled_from(list(DeviceState)), max_size=3).map(tuple)
devices = st.builds(DeviceView, device_states, maybe_times)
call_states = st.sampled_from([D.INUSE, D.BUSY, D.RINGINUSE, D.ONHOLD])
configs = st.builds(
    RuleConfig,
    on_phone=st.sampled_from([ON_PHONE, None, Presence(S.DND, "call")]),
    offline=st.sampled_from([OFFLINE, None]),
    offline_after=st.sampled_from(
        [timedelta(seconds=60), timedelta(seconds=5), timedelta(seconds=95)]
    ),
    timed_priority=st.sampled_from([(), ("calendar",), ("focus", "travel")]),
    missed_calls_away=st.sampled_from([0, 2]),
    registered=st.sampled_from([None, Presence(S.AVAILABLE)]),
    call_keeps_message=st.booleans(),
)
PROTECTED = [S.DND, S.AWAY, S.XA, S.UNAVAILABLE]


def _without_calls(view: DeviceView) -> DeviceView:
    return replace(
        view,
        states=tuple(D.NOT_INUSE if s in DEFAULT_RULES.call_states else s for s in view.states),
    )


@FAST
@given(
    p=presences.filter(lambda p: p.state in PROTECTED),
    since=times,
    t=timed_lists,
    d=devices,
    a=st.none() | autos,
    now=times,
    config=configs,
)
def test_prop_rule1_protected_manual_is_never_overridden(
    p: Presence,
    since: datetime,
    t: tuple[SourceRecord, ...],
    d: DeviceView,
    a: SourceRecord | None,
    now: datetime,
    config: RuleConfig,
) -> None:
    assume(since <= now)
    m = SourceRecord("2000", "manual", p, since, "api")
    decision = decide(m, t, d, a, now, config)
    assert decision == Decision(p, "manual", "manual-protected", p, decision.activity)
    assert decision.presence is p


@FAST
@given(
    m=st.none() | manuals,
    t=timed_lists,
    d=devices,
    call=call_states,
    a=st.none() | autos,
    now=times,
    config=configs,
)
def test_prop_rule2_call_overlay_then_exact_return(
    m: SourceRecord | None,
    t: tuple[SourceRecord, ...],
    d: DeviceView,
    call: DeviceState,
    a: SourceRecord | None,
    now: datetime,
    config: RuleConfig,
) -> None:
    assume(m is None or not in_window(m, now) or m.presence.state in config.overridable_manual)
    in_call = replace(d, states=(*d.states, call))
    during = decide(m, t, in_call, a, now, config)
    ended = decide(m, t, _without_calls(in_call), a, now, config)
    if config.on_phone is None:
        assert during.rule != "on-the-phone"
    else:
        assert (during.presence, during.source, during.rule) == (
            call_presence(ended.chosen, config), "device", "on-the-phone")
    assert during.activity in ("on-the-phone", "on-hold")
    # With the overlay off, or the call over, the result is what the other
    # contributions give: the overlay hid it without altering it.
    hidden = decide(m, t, in_call, a, now, replace(config, on_phone=None))
    assert replace(hidden, activity="") == replace(ended, activity="")
    # What the person chose is the same during the call: nothing that follows it
    # (queue pause, FreePBX DND, the mirror, routing) sees the call.
    assert during.chosen == ended.chosen


@FAST
@given(
    m=st.none() | manuals,
    t=timed_lists,
    n=st.integers(min_value=1, max_value=3),
    extra_invalid=st.booleans(),
    since=times,
    a=st.none() | autos,
    now=times,
    config=configs,
)
def test_prop_rule3_offline_overlay(
    m: SourceRecord | None,
    t: tuple[SourceRecord, ...],
    n: int,
    extra_invalid: bool,
    since: datetime,
    a: SourceRecord | None,
    now: datetime,
    config: RuleConfig,
) -> None:
    assume(m is None or not in_window(m, now) or m.presence.state in config.overridable_manual)
    states = (D.UNAVAILABLE,) * n + ((D.INVALID,) if extra_invalid else ())
    d = DeviceView(states, since)
    decision = decide(m, t, d, a, now, config)
    if config.offline is not None and now - since >= config.offline_after:
        assert (decision.presence, decision.source, decision.rule) == (config.offline, "device",
                                                                       "offline")
        assert decision.activity == "offline"
    else:
        assert decision == decide(m, t, d, a, now, replace(config, offline=None))
        assert decision.rule != "offline"


@FAST
@given(
    m=st.none() | manuals,
    t=timed_lists,
    d=devices,
    a=st.none() | autos,
    now=times,
    config=configs,
)
def test_prop_rule4_timed_only_inside_window_and_not_superseded(
    m: SourceRecord | None,
    t: tuple[SourceRecord, ...],
    d: DeviceView,
    a: SourceRecord | None,
    now: datetime,
    config: RuleConfig,
) -> None:
    decision = decide(m, t, d, a, now, config)
    live_m = m if m is not None and in_window(m, now) else None
    if decision.rule.startswith("timed:"):
        assert decision.rule == "timed:" + decision.source
        assert any(
            e.source == decision.source
            and e.presence == decision.presence
            and in_window(e, now)
            and not (live_m is not None and live_m.since >= (e.start or e.since))
            for e in t
        )
    # Entries outside their window can be dropped without changing anything.
    inside = tuple(e for e in t if in_window(e, now))
    assert decide(m, inside, d, a, now, config) == decision
    # The order of the entries does not matter.
    assert decide(m, tuple(reversed(t)), d, a, now, config) == decision


@FAST
@given(
    m=st.none() | manuals,
    t=timed_lists,
    d=devices,
    a=st.none() | autos,
    now=times,
    config=configs,
    stale=st.lists(timed_entries, max_size=2),
    stale_auto=st.booleans(),
    stale_manual=st.booleans(),
)
def test_prop_rule5_expired_contributions_leave_nothing(
    m: SourceRecord | None,
    t: tuple[SourceRecord, ...],
    d: DeviceView,
    a: SourceRecord | None,
    now: datetime,
    config: RuleConfig,
    stale: list[SourceRecord],
    stale_auto: bool,
    stale_manual: bool,
) -> None:
    expected = decide(m, t, d, a, now, config)
    expired_end = now - timedelta(seconds=1)
    expired = tuple(replace(e, end=min(e.end or expired_end, expired_end)) for e in stale)
    assert decide(m, (*t, *expired), d, a, now, config) == expected
    if a is None and stale_auto:
        gone = SourceRecord(
            "2000", "auto", config.auto_presence, now - timedelta(hours=1), "auto", end=now
        )
        assert decide(m, t, d, gone, now, config) == expected
    if m is None and stale_manual:
        gone_m = SourceRecord(
            "2000", "manual", Presence(S.DND), now - timedelta(hours=1), "api", end=now
        )
        assert decide(gone_m, t, d, a, now, config) == expected


@FAST
@given(
    m=st.none() | manuals,
    t=timed_lists,
    d=devices,
    a=st.none() | autos,
    now=times,
    config=configs,
)
def test_prop_source_matches_rule(
    m: SourceRecord | None,
    t: tuple[SourceRecord, ...],
    d: DeviceView,
    a: SourceRecord | None,
    now: datetime,
    config: RuleConfig,
) -> None:
    decision = decide(m, t, d, a, now, config)
    expected_source = {
        "manual-protected": "manual",
        "manual": "manual",
        "on-the-phone": "device",
        "offline": "device",
        "auto:missed-calls": "auto",
        "registered": "device",
        "default": "default",
    }.get(decision.rule, decision.rule.removeprefix("timed:"))
    assert decision.source == expected_source
    if decision.rule == "auto:missed-calls":
        assert a is not None and decision.presence == a.presence and config.missed_calls_away > 0
    if decision.rule in ("manual", "manual-protected"):
        assert m is not None and decision.presence == m.presence


@FAST
@given(
    m=st.none() | manuals,
    t=timed_lists,
    d=devices,
    a=st.none() | autos,
    now=times,
    config=configs,
    probes=st.lists(st.integers(min_value=1, max_value=700), max_size=6),
)
def test_prop_next_change_at_is_the_next_change(
    m: SourceRecord | None,
    t: tuple[SourceRecord, ...],
    d: DeviceView,
    a: SourceRecord | None,
    now: datetime,
    config: RuleConfig,
    probes: list[int],
) -> None:
    current = decide(m, t, d, a, now, config)
    nxt = next_change_at(m, t, d, a, now, config)
    # Every record boundary and the offline threshold, plus random probes.
    points = {now + timedelta(seconds=s) for s in probes}
    for r in (m, a, *t):
        if r is not None:
            points |= {x for x in (r.start, r.since, r.end) if x is not None}
    if d.unavailable_since is not None:
        points.add(d.unavailable_since + config.offline_after)
    points = {p for p in points if p > now}
    if nxt is None:
        for p in points:
            assert decide(m, t, d, a, p, config) == current
    else:
        assert nxt > now
        assert decide(m, t, d, a, nxt, config) != current
        for p in points:
            if p < nxt:
                assert decide(m, t, d, a, p, config) == current
        just_before = nxt - timedelta(microseconds=1)
        if just_before > now:
            assert decide(m, t, d, a, just_before, config) == current


@FAST
@given(
    limit=st.integers(min_value=0, max_value=4),
    events=st.lists(st.sampled_from(["missed", "answered", "manual"]), max_size=12),
)
def test_prop_missed_calls_counts_trailing_misses(
    limit: int, events: list[MissedCallEvent]
) -> None:
    cfg = RuleConfig(missed_calls_away=limit)
    count, active = 0, False
    for event in events:
        count, active = missed_calls_step(count, event, cfg)
    trailing = 0
    for event in reversed(events):
        if event != "missed":
            break
        trailing += 1
    assert active is (limit > 0 and trailing >= limit)
    assert count == (min(trailing, limit) if limit > 0 else 0)


@FAST
@given(
    state=st.sampled_from(list(State)),
    paused=st.booleans(),
    reason=st.none()
    | st.text(max_size=20)
    | st.sampled_from([f"astpresence:{s.value}" for s in State]),
)
def test_prop_never_touch_someone_elses_pause(
    state: State, paused: bool, reason: str | None
) -> None:
    action = queue_pause_action(state, paused, reason)
    if paused and not is_our_pause_reason(reason):
        assert action is None
    if action == "unpause":
        assert not pause_wanted(state) and paused
    if action == "pause":
        assert pause_wanted(state)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


@FAST
@given(
    st.dictionaries(
        st.sampled_from([*RULE_KEYS, "bogus"]) | st.text(max_size=6),
        json_values
        | st.sampled_from(
            [["dnd"], ["INUSE"], {"state": "away"}, 30, "presence-", {"dnd": "BUSY"}, False]
        ),
        max_size=4,
    )
)
def test_prop_from_mapping_only_raises_invalid_input(d: dict[str, object]) -> None:
    try:
        cfg = RuleConfig.from_mapping(d)
    except InvalidInput as exc:
        assert str(exc).startswith("rules")
    else:
        assert isinstance(cfg, RuleConfig)
        assert set(d) <= set(RULE_KEYS)


def test_all_unavailable() -> None:
    assert all_unavailable((D.UNAVAILABLE,))
    assert all_unavailable((D.UNAVAILABLE, D.UNKNOWN, D.INVALID))
    assert not all_unavailable(())
    assert not all_unavailable((D.INVALID,))
    assert not all_unavailable((D.UNAVAILABLE, D.NOT_INUSE))


@FAST
@given(
    m=st.none() | manuals,
    t=timed_lists,
    d=devices,
    call=call_states,
    a=st.none() | autos,
    now=times,
)
def test_prop_a_call_never_reads_offline_nor_moves_a_behaviour(
    m: SourceRecord | None,
    t: tuple[SourceRecord, ...],
    d: DeviceView,
    call: DeviceState,
    a: SourceRecord | None,
    now: datetime,
) -> None:
    """With the standard projection a call never writes an offline state (unless the
    person chose unavailable), and never pauses a queue member, switches FreePBX DND
    or changes what routing reads as the person's choice."""
    from astpresence.domain.behaviours import pause_wanted

    config = RuleConfig(missed_calls_away=2)
    in_call = replace(d, states=(*d.states, call), unavailable_since=None)
    during = decide(m, t, in_call, a, now, config)
    ended = decide(m, t, _without_calls(in_call), a, now, config)
    if during.presence.state is S.UNAVAILABLE:
        assert during.rule == "manual-protected" and during.chosen == during.presence
    assert during.chosen == ended.chosen
    assert pause_wanted(during.chosen.state, config) == pause_wanted(ended.chosen.state, config)
    assert (during.chosen.state is S.DND) == (ended.chosen.state is S.DND)
