"""The dialplan kit: its structure, and its feature codes and dial routine run the way
Asterisk would (tests/support/dialplan.py reads and runs it)."""

from __future__ import annotations

import base64

import re

import pytest

from astpresence.asterisk.codec import decode_presence_value, encode_presence_value
from astpresence.domain.model import Presence, State
from tests.support.dialplan import (
    Channel,
    DIAL_SUB,
    Dialplan,
    DialplanSim,
    FEATURES,
    RunResult,
    SET_SUB,
    evaluate_expression,
    kit_categories,
    kit_code_lines,
    kit_dialplan,
    load_dialplan,
    parse_config,
    pattern_matches,
    split_args,
)

DEFAULT_CODES = {
    "ASTPRESENCE_CODE_DND_TOGGLE": ("*30", "toggle"),
    "ASTPRESENCE_CODE_AVAILABLE": ("*31", "available"),
    "ASTPRESENCE_CODE_AWAY": ("*32", "away"),
    "ASTPRESENCE_CODE_DND": ("*33", "dnd"),
    "ASTPRESENCE_CODE_XA": ("*34", "xa"),
    "ASTPRESENCE_CODE_CHAT": ("*35", "chat"),
    "ASTPRESENCE_CODE_CLEAR": ("*36", "not_set"),
}


@pytest.fixture(scope="module")
def dialplan() -> Dialplan:
    return kit_dialplan()


# =========================================================================
# Structure of the kit
# =========================================================================


def test_kit_defines_the_documented_contexts(dialplan: Dialplan) -> None:
    assert {FEATURES, SET_SUB, DIAL_SUB} <= set(dialplan.contexts)
    assert set(dialplan.contexts[SET_SUB]) == {"s"}
    assert set(dialplan.contexts[DIAL_SUB]) == {"s"}


@pytest.mark.parametrize(("variable", "code", "action"),
                         [(k, c, a) for k, (c, a) in DEFAULT_CODES.items()])
def test_default_feature_code(dialplan: Dialplan, variable: str, code: str, action: str) -> None:
    assert dialplan.globals[variable] == code
    steps = dialplan.contexts[FEATURES][code]
    assert steps[1][1:] == ("Gosub", f"{SET_SUB},s,1({action})")
    assert steps[max(steps)][1] == "Hangup"


def test_preset_codes(dialplan: Dialplan) -> None:
    assert dialplan.globals["ASTPRESENCE_CODE_PRESET"] == "*37"
    steps = dialplan.contexts[FEATURES]["_*37X"]
    assert steps[1][1:] == ("Gosub", f"{SET_SUB},s,1(preset,${{EXTEN:-1}})")
    assert steps[max(steps)][1] == "Hangup"
    for digit in "0123456789":
        assert pattern_matches("_*37X", f"*37{digit}")
    assert not pattern_matches("_*37X", "*37")
    assert not pattern_matches("_*37X", "*3712")


def test_feature_context_has_only_the_codes_and_each_ends_in_hangup(dialplan: Dialplan) -> None:
    extens = dialplan.contexts[FEATURES]
    assert set(extens) == {c for c, _ in DEFAULT_CODES.values()} | {"_*37X"}
    for name, steps in extens.items():
        assert sorted(steps) == list(range(1, len(steps) + 1)), name
        assert steps[max(steps)][1] == "Hangup", name
        assert all(app != "Hangup" for _l, app, _d in list(steps.values())[:-1]), name


@pytest.mark.parametrize("where", ["before", "after"])
def test_codes_are_overridable_from_the_admins_globals(where: str) -> None:
    overrides = "ASTPRESENCE_CODE_DND=*78\nASTPRESENCE_CODE_PRESET=*8\n"
    dp = kit_dialplan(**{f"admin_{where}": overrides})
    extens = dp.contexts[FEATURES]
    assert "*78" in extens and "*33" not in extens
    assert extens["*78"][1][1:] == ("Gosub", f"{SET_SUB},s,1(dnd)")
    assert "_*8X" in extens and "_*37X" not in extens
    # the codes not overridden keep their defaults
    assert {"*30", "*31", "*32", "*34", "*35", "*36"} <= set(extens)


def test_each_code_default_fills_only_an_empty_value() -> None:
    """The kit's [globals] lines must not clobber a value set earlier."""
    pattern = re.compile(
        r"(ASTPRESENCE_CODE_[A-Z_]+)=\$\{IF\(\$\{EXISTS\(\$\{\1\}\)\}\?\$\{\1\}:([0-9*#]+)\)\}"
    )
    lines = [e for c in kit_categories() if c.name == "globals" for e in c.entries]
    assert lines, "the kit defines its defaults in [globals]"
    for e in lines:
        assert pattern.fullmatch(f"{e.key}={e.value}"), f"line {e.lineno}: {e.key}={e.value}"


def test_kit_globals_section_comes_first() -> None:
    """The kit can be #included anywhere: it opens its own section."""
    cats = kit_categories()
    assert cats[0].name == "globals"
    assert [c.name for c in cats].count("globals") == 1


def test_every_presence_write_uses_option_e() -> None:
    writes = []
    for n, line in kit_code_lines():
        for m in re.finditer(r"Set\(PRESENCE_STATE\((CustomPresence:[^)]*)\)=(.*)\)\s*$", line):
            writes.append((n, m.group(1), m.group(2)))
    assert len(writes) >= 2, "the kit writes presence for fixed states and for presets"
    for n, target, value in writes:
        fields = split_args(value)
        assert len(fields) in (1, 4), f"line {n}: {value}"
        if len(fields) == 4:
            assert fields[3] == "e", f"line {n}: a subtype/message write without option e"
        assert target == "CustomPresence:${user}", f"line {n}: writes {target}"
    # nothing else writes presence (e.g. through another function or app)
    text = "\n".join(line for _n, line in kit_code_lines())
    assert text.count("PRESENCE_STATE(CustomPresence:${user})=") == len(writes)


def test_user_comes_from_endpoint_or_override_never_caller_id(dialplan: Dialplan) -> None:
    # The one caller ID read: astpresence-dial's internal/external guess, which
    # picks between two rules of the callee and changes nobody's presence.
    guess = "same => n(have_digits),Set(LOCAL(number)=${CALLERID(num)})"
    # ... and one write: the callee's presence told to the caller's phone.
    told = "same => n,ExecIf($[\"${why}\" != \"\"]?Set(CONNECTEDLINE(name)=${shown} (${why})))"
    for n, line in kit_code_lines():
        if line in (guess, told):
            continue
        assert not re.search(r"CALLERID|CONNECTEDLINE|CALLERIDNUM|CDR\(src", line, re.IGNORECASE), (
            f"line {n} reads caller identity: {line}"
        )
    uses = [d for _l, _a, d in dialplan.contexts[DIAL_SUB]["s"].values() if "${number}" in d]
    assert uses and all(d.startswith(("$[\"${number}\" = \"\"]?rule",
                                      "$[${LEN(${number})} > ${digits}]?rule")) for d in uses)
    user_sets = [
        data.partition("=")[2]
        for _l, app, data in dialplan.contexts[SET_SUB]["s"].values()
        if app == "Set" and data.startswith("LOCAL(user)=")
    ]
    assert sorted(user_sets) == ["${ASTPRESENCE_USER}", "${CHANNEL(endpoint)}"]


def _control_flow(steps: dict[int, tuple[str | None, str, str]]) -> dict[int, set[int]]:
    labels = {lab: p for p, (lab, _a, _d) in steps.items() if lab}
    graph: dict[int, set[int]] = {}
    for prio, (_lab, app, data) in steps.items():
        succ: set[int] = set()
        if app in ("Return", "Hangup"):
            pass
        elif app == "Goto":
            assert data in labels, f"Goto({data}): no such label"
            succ.add(labels[data])
        else:
            if app == "GotoIf":
                _cond, _, targets = data.rpartition("?")
                iftrue, _, iffalse = targets.partition(":")
                for t in (iftrue, iffalse):
                    if t:
                        assert t in labels, f"GotoIf target {t}: no such label"
                        succ.add(labels[t])
                if iftrue and iffalse:
                    graph[prio] = succ
                    continue
            succ.add(prio + 1)
        graph[prio] = succ
    return graph


@pytest.mark.parametrize("context", [SET_SUB, DIAL_SUB])
def test_subroutine_returns_on_every_path(dialplan: Dialplan, context: str) -> None:
    steps = dialplan.contexts[context]["s"]
    graph = _control_flow(steps)
    reachable = set()
    todo = [1]
    while todo:
        p = todo.pop()
        if p in reachable:
            continue
        reachable.add(p)
        for q in graph[p]:
            assert q in steps, f"{context}: priority {p} falls off the end"
            todo.append(q)
    assert reachable == set(steps), f"{context}: dead priorities {sorted(set(steps) - reachable)}"
    ends = {p for p in reachable if not graph[p]}
    assert ends and all(steps[p][1] == "Return" for p in ends)
    assert all(app != "Hangup" for _l, app, _d in steps.values()), "a subroutine must not hang up"


def test_dial_routine_branches_on_dnd_away_and_xa(dialplan: Dialplan) -> None:
    datas = [d for _l, app, d in dialplan.contexts[DIAL_SUB]["s"].values() if app == "GotoIf"]
    conditions = " ".join(datas)
    for state in ("dnd", "away", "xa"):
        assert f'"${{state}}" = "{state}"' in conditions
    assert '"${subtype}" != "on-the-phone"' in conditions  # a call in progress is dialled
    assert any(
        "PRESENCE_STATE(CustomPresence:${user},value)" in d
        for _l, _a, d in dialplan.contexts[DIAL_SUB]["s"].values()
    )


# =========================================================================
# Running the feature codes
# =========================================================================


def run_code(code: str, *, chan: Channel | None = None, presence: dict[str, str] | None = None,
             globals_: dict[str, str] | None = None, refuse_writes: bool = False,
             dp: Dialplan | None = None) -> tuple[DialplanSim, RunResult]:
    dp = dp or kit_dialplan(extra=f"[phones]\ninclude => {FEATURES}\n")
    ast = DialplanSim(dp, presence=presence, refuse_writes=refuse_writes)
    ast.globals.update(globals_ or {})
    result = ast.run(chan or Channel(), "phones", code)
    return ast, result


def stored(ast: DialplanSim, user: str) -> Presence | None:
    raw = ast.astdb.get(user)
    return decode_presence_value(raw) if raw else None


@pytest.mark.parametrize(("code", "state"), [
    ("*31", "available"), ("*32", "away"), ("*33", "dnd"), ("*34", "xa"),
    ("*35", "chat"), ("*36", "not_set"),
])
def test_code_sets_the_callers_presence(code: str, state: str) -> None:
    ast, res = run_code(code, presence={"2000": "xa,,,e"})
    assert ast.writes == [("2000", f"{state},,,e")]
    assert stored(ast, "2000") == Presence(State(state))
    assert res.ended == "hangup" and not res.frames
    assert res.chan.vars["ASTPRESENCE_FEATURE_RESULT"] == "OK"
    assert res.app_calls("Answer") and res.app_calls("Playtones") == ["!880/250"]


def test_code_writes_the_endpoint_even_when_caller_id_is_spoofed() -> None:
    chan = Channel(endpoint="2000", callerid="2001")
    ast, _res = run_code("*33", chan=chan)
    assert [u for u, _v in ast.writes] == ["2000"]


def test_astpresence_user_overrides_the_endpoint() -> None:
    chan = Channel(endpoint="2000", vars={"ASTPRESENCE_USER": "alice"})
    ast, _res = run_code("*32", chan=chan)
    assert ast.writes == [("alice", "away,,,e")]


def test_local_channel_with_astpresence_user_works() -> None:
    chan = Channel(name="Local/*33@astpresence-features-0001;2", endpoint=None,
                   vars={"ASTPRESENCE_USER": "2000"})
    ast, res = run_code("*33", chan=chan)
    assert ast.writes == [("2000", "dnd,,,e")]
    assert res.chan.vars["ASTPRESENCE_FEATURE_RESULT"] == "OK"


def test_no_user_means_error_tone_and_nothing_written() -> None:
    chan = Channel(name="Local/*33@astpresence-features-0001;2", endpoint=None, callerid="2000")
    ast, res = run_code("*33", chan=chan)
    assert ast.writes == []
    assert res.ended == "hangup"
    assert res.chan.vars["ASTPRESENCE_FEATURE_RESULT"] == "NOUSER"
    assert res.app_calls("Playtones") == ["!440/200,!0/100,!330/200,!0/100,!220/500"]


def test_a_global_astpresence_user_is_refused() -> None:
    ast, res = run_code("*33", globals_={"ASTPRESENCE_USER": "2001"})
    assert ast.writes == []
    assert res.chan.vars["ASTPRESENCE_FEATURE_RESULT"] == "MISCONFIGURED"


@pytest.mark.parametrize("user", ["20)00", "a,b", "x=y", "two words", "a(b", "a@b"])
def test_unsafe_user_ids_are_refused(user: str) -> None:
    ast, res = run_code("*33", chan=Channel(endpoint=None, vars={"ASTPRESENCE_USER": user}))
    assert ast.writes == []
    assert res.chan.vars["ASTPRESENCE_FEATURE_RESULT"] == "INVALIDUSER"


@pytest.mark.parametrize(("before", "after", "tone"), [
    (None, "dnd", "!880/250"),
    ("available,,,e", "dnd", "!880/250"),
    ("away,YQ==,Yg==,e", "dnd", "!880/250"),
    ("dnd,,,e", "available", "!880/120,!0/80,!880/120"),
    ("dnd,bWVldGluZw==,,e", "available", "!880/120,!0/80,!880/120"),
])
def test_toggle(before: str | None, after: str, tone: str) -> None:
    ast, res = run_code("*30", presence={"2000": before} if before else None)
    assert ast.writes == [("2000", f"{after},,,e")]
    assert res.app_calls("Playtones") == [tone]


@pytest.mark.parametrize("presence", [
    Presence(State.AWAY, "lunch", "Back at 2, promise"),
    Presence(State.DND, "", "Réunion « budget »"),
    Presence(State.XA, "été", ""),
    Presence(State.AVAILABLE),
])
def test_preset_written_as_generated_by_the_codec(presence: Presence) -> None:
    value = encode_presence_value(presence)
    ast, res = run_code("*374", globals_={"ASTPRESENCE_PRESET_4": value})
    assert ast.writes == [("2000", value)]
    assert stored(ast, "2000") == presence
    assert res.chan.vars["ASTPRESENCE_FEATURE_RESULT"] == "OK"


@pytest.mark.parametrize("value", [
    "",  # unset
    "away,bHVuY2g=,,",  # no option e
    "away,lunch,Back at 2,e",  # not base64
    "away,bHVuY2g,,e",  # base64 without its padding
    "away,bHVuY2g=,,e,x",  # extra field
    "busy,,,e",  # not a state
    "away",  # state only: would be written without e
])
def test_bad_presets_are_refused(value: str) -> None:
    ast, res = run_code("*371", globals_={"ASTPRESENCE_PRESET_1": value})
    assert ast.writes == []
    assert res.chan.vars["ASTPRESENCE_FEATURE_RESULT"] == "INVALIDPRESET"
    assert res.ended == "hangup"


def test_preset_digit_selects_the_preset() -> None:
    ast, _res = run_code("*379", globals_={
        "ASTPRESENCE_PRESET_1": "away,,,e", "ASTPRESENCE_PRESET_9": "chat,,,e",
    })
    assert ast.writes == [("2000", "chat,,,e")]


def test_refused_write_plays_error_tone() -> None:
    ast, res = run_code("*33", refuse_writes=True)
    assert ast.writes == [("2000", "dnd,,,e")]
    assert res.chan.vars["ASTPRESENCE_FEATURE_RESULT"] == "FAILED"
    assert res.app_calls("Playtones") == ["!440/200,!0/100,!330/200,!0/100,!220/500"]


def test_overridden_code_runs_the_same_action() -> None:
    dp = kit_dialplan(admin_after="ASTPRESENCE_CODE_DND_TOGGLE=*78",
                      extra=f"[phones]\ninclude => {FEATURES}\n")
    ast, _res = run_code("*78", dp=dp)
    assert ast.writes == [("2000", "dnd,,,e")]


# =========================================================================
# Running astpresence-dial
# =========================================================================

CALLER = """
[calls]
exten => 2000,1,Gosub(astpresence-dial,s,1(2000,PJSIP/2000,30))
 same => n,Set(AFTER_RETURN=${ASTPRESENCE_DIAL_RESULT})
 same => n,Hangup()
exten => bad,1,Gosub(astpresence-dial,s,1(20)00,PJSIP/2000,30))
 same => n,Hangup()
exten => nodial,1,Gosub(astpresence-dial,s,1(2000))
 same => n,Hangup()
"""


def run_dial(state: str | None, *, mailboxes: set[str] | None = None,
             globals_: dict[str, str] | None = None, exten: str = "2000") -> RunResult:
    value = None
    if state:
        name, _, subtype = state.partition("/")
        value = f"{name},{base64.b64encode(subtype.encode()).decode()},,e"
    ast = DialplanSim(kit_dialplan(extra=CALLER),
                       presence={"2000": value} if value else None,
                       mailboxes=mailboxes)
    ast.globals.update(globals_ or {})
    return ast.run(Channel(name="PJSIP/2001-00000002", endpoint="2001"), "calls", exten)


@pytest.mark.parametrize(("state", "away_action", "boxes", "result", "app", "data"), [
    ("dnd", None, {"2000@default"}, "VOICEMAIL", "VoiceMail", "2000@default,b"),
    ("dnd", None, set(), "BUSY", "Playtones", "busy"),
    ("dnd/focus", None, {"2000@default"}, "VOICEMAIL", "VoiceMail", "2000@default,b"),
    ("dnd/on-the-phone", None, {"2000@default"}, "DIALED", "Dial", "PJSIP/2000,30,"),
    ("away", None, {"2000@default"}, "VOICEMAIL", "VoiceMail", "2000@default,u"),
    ("xa", None, {"2000@default"}, "VOICEMAIL", "VoiceMail", "2000@default,u"),
    ("away", None, set(), "UNAVAILABLE", None, None),
    ("away", "unavailable", {"2000@default"}, "UNAVAILABLE", None, None),
    ("away", "busy", {"2000@default"}, "BUSY", "Playtones", "busy"),
    ("away", "voicemail", {"2000@default"}, "VOICEMAIL", "VoiceMail", "2000@default,u"),
    ("xa", "voicemail", {"2000@default"}, "VOICEMAIL", "VoiceMail", "2000@default,u"),
    ("xa", "voicemail", set(), "UNAVAILABLE", None, None),
    ("available", "voicemail", {"2000@default"}, "DIALED", "Dial", "PJSIP/2000,30,"),
    ("chat", None, set(), "DIALED", "Dial", "PJSIP/2000,30,"),
    ("unavailable", None, set(), "DIALED", "Dial", "PJSIP/2000,30,"),
    ("not_set", None, set(), "DIALED", "Dial", "PJSIP/2000,30,"),
    (None, None, set(), "DIALED", "Dial", "PJSIP/2000,30,"),
])
def test_dial_routine(state: str | None, away_action: str | None, boxes: set[str],
                      result: str, app: str | None, data: str | None) -> None:
    globals_ = {"ASTPRESENCE_AWAY_ACTION": away_action} if away_action else {}
    res = run_dial(state, mailboxes=boxes, globals_=globals_)
    assert res.ended == "hangup" and not res.frames, "the routine returned to the caller"
    assert res.chan.vars["ASTPRESENCE_DIAL_RESULT"] == result
    assert res.chan.vars["AFTER_RETURN"] == result
    assert res.chan.vars["GOSUB_RETVAL"] == result
    if app is not None:
        assert data in res.app_calls(app)
    else:  # absent: nothing played, nothing dialled; the caller ends with cause 20
        assert not (res.app_calls("Playtones") or res.app_calls("VoiceMail"))
    if result != "DIALED":
        assert res.app_calls("Dial") == []
    if result == "BUSY":
        assert res.app_calls("Wait")[-1] == "5" and res.app_calls("Progress")


def test_dial_routine_voicemail_context_and_busy_seconds() -> None:
    res = run_dial("dnd", mailboxes={"2000@staff"},
                   globals_={"ASTPRESENCE_VM_CONTEXT": "staff"})
    assert res.app_calls("VoiceMail") == ["2000@staff,b"]
    busy = {"ASTPRESENCE_AWAY_ACTION": "busy"}
    res = run_dial("away", globals_={**busy, "ASTPRESENCE_BUSY_SECONDS": "12"})
    assert res.app_calls("Wait")[-1] == "12"
    res = run_dial("away", globals_={**busy, "ASTPRESENCE_BUSY_SECONDS": "1;Hangup"})
    assert res.app_calls("Wait")[-1] == "5"


@pytest.mark.parametrize("exten", ["bad", "nodial"])
def test_dial_routine_refuses_bad_arguments(exten: str) -> None:
    res = run_dial("dnd", mailboxes={"2000@default"}, exten=exten)
    assert res.chan.vars["ASTPRESENCE_DIAL_RESULT"] == "INVALIDARGS"
    assert res.app_calls("Dial") == [] and res.app_calls("VoiceMail") == []
    assert res.ended == "hangup" and not res.frames


# =========================================================================
# The parser and interpreter themselves
# =========================================================================


@pytest.mark.parametrize(("expr", "result"), [
    ('"dnd" = "dnd"', "1"), ('"away" = "dnd"', "0"), ('"" != ""', "0"),
    ('"xa" = "away" | "xa" = "xa"', "1"), ("1 & 0", "0"), ("12 > 3", "1"),
])
def test_expression_evaluator(expr: str, result: str) -> None:
    assert evaluate_expression(expr) == result


def test_substitution_nesting_and_functions() -> None:
    ast = DialplanSim(Dialplan({"A": "x", "B_x": "nested", "P": "s,YQ==,,e"}, {}, {}, {}))
    chan = Channel()
    assert ast.substitute("${B_${A}}", chan, []) == "nested"
    assert ast.substitute("${IF(${EXISTS(${A})}?${A}:*30)}", chan, []) == "x"
    assert ast.substitute("${IF(${EXISTS(${NOPE})}?${NOPE}:*30)}", chan, []) == "*30"
    assert ast.substitute('${REGEX("^[-A-Za-z0-9_.+]+$" ${A})}', chan, []) == "1"
    assert ast.substitute("${CUT(P,\\,,2)}", chan, []) == "YQ=="
    assert ast.substitute("${CUT(P,\\,,4-)}", chan, []) == "e"
    assert ast.substitute("${EXTEN:-1}", chan, [], exten="*374") == "4"
    assert split_args("a,b(c,d),\"e,f\",g\\,h") == ["a", "b(c,d)", "e,f", "g,h"]


def test_parser_handles_comments_and_same_lines() -> None:
    cats = parse_config("[c]\nexten => 1,1,NoOp(a\\;b) ; comment\n same => n(l),Hangup()\n")
    dp = load_dialplan(cats)
    assert dp.contexts["c"]["1"] == {1: (None, "NoOp", "a;b"), 2: ("l", "Hangup", "")}

