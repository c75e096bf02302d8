"""Call handling per person and per status: the rules, their checks, and which rule
holds now. Pure values; docs/call-handling.md is the user's guide.

A person's rules are a list tried in order, e.g.::

    {"rules": [{"when": "away", "callers": "external", "action": "forward",
                "to": "+4930123456", "after": 20},
               {"when": "away", "action": "voicemail"}]}

``when`` is a presence state, a named status of the catalogue, or ``any``;
``callers`` is ``any``, ``internal`` or ``external``; ``on`` is what the rule
answers: the call arriving (``call``, the default) or, after ringing, the phone
being ``busy``, not answering (``no_answer``) or not registered
(``unregistered``). The person's own rules come first, then the site's defaults;
for each kind of caller and each ``on`` the first rule that matches holds.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from astpresence.domain.model import STATE_NAMES, InvalidInput, State

#: Rules one person may keep (the site's defaults have the same limit).
MAX_RULES = 32
#: Seconds of ringing a rule may name (``after``, ``timeout``), at most.
MAX_SECONDS = 300
#: A forward's destination: an extension, a user id or a number (a leading +, digits,
#: * and #). Nothing that could end a dial string or an astdb value.
DESTINATION = re.compile(r"\+?[0-9*#]{1,32}|[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
_FIELDS = frozenset({"when", "callers", "on", "action", "to", "after", "both", "timeout",
                     "greeting"})


class Action(enum.StrEnum):
    RING = "ring"
    FORWARD = "forward"
    VOICEMAIL = "voicemail"
    BUSY = "busy"
    UNAVAILABLE = "unavailable"


class Callers(enum.StrEnum):
    ANY = "any"
    INTERNAL = "internal"
    EXTERNAL = "external"


class On(enum.StrEnum):
    """What a rule answers: the call arriving, or how ringing the phone ended."""

    CALL = "call"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    UNREGISTERED = "unregistered"


class Greeting(enum.StrEnum):
    DEFAULT = ""  # busy for a chosen dnd, unavailable otherwise
    BUSY = "busy"
    UNAVAILABLE = "unavailable"


#: The two kinds of caller the dialplan tells apart, in the order they are written.
CALLER_KINDS = (Callers.INTERNAL, Callers.EXTERNAL)


@dataclass(frozen=True)
class CallRule:
    """One rule (module docstring)."""

    when: str
    action: Action
    callers: Callers = Callers.ANY
    on: On = On.CALL
    to: str = ""
    after: int = 0  # forward: seconds the phone rings first (0: at once)
    both: bool = False  # forward: ring the phone and the destination together
    timeout: int = 0  # ring: seconds before "no answer" (0: the dialplan's)
    greeting: Greeting = Greeting.DEFAULT  # voicemail

    def json(self) -> dict[str, Any]:
        """The rule as the API shows it: the fields that differ from their defaults."""
        out: dict[str, Any] = {"when": self.when, "action": self.action.value}
        if self.callers is not Callers.ANY:
            out["callers"] = self.callers.value
        if self.on is not On.CALL:
            out["on"] = self.on.value
        for name in ("to", "after", "both", "timeout"):
            if value := getattr(self, name):
                out[name] = value
        if self.greeting is not Greeting.DEFAULT:
            out["greeting"] = self.greeting.value
        return out


def _enum(kind: type[enum.StrEnum], raw: object, name: str, where: str) -> Any:
    names = ", ".join(m.value for m in kind if m.value)
    if not isinstance(raw, str):
        raise InvalidInput(f"{where}: '{name}' must be one of: {names}")
    try:
        return kind(raw)
    except ValueError:
        raise InvalidInput(f"{where}: '{name}' is {raw[:40]!r}; expected one of: {names}") \
            from None


def _seconds(raw: object, name: str, where: str, least: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not least <= raw <= MAX_SECONDS:
        raise InvalidInput(f"{where}: '{name}' must be a whole number of seconds from "
                           f"{least} to {MAX_SECONDS}")
    return raw


def _when(raw: object, statuses: Iterable[str], where: str) -> str:
    known = ("any", *STATE_NAMES, *statuses)
    if not isinstance(raw, str) or raw not in known:
        shown = raw[:40] if isinstance(raw, str) else raw
        raise InvalidInput(f"{where}: 'when' is {shown!r}; expected any, a presence state "
                           f"({', '.join(STATE_NAMES)}) or a status of the catalogue")
    return raw


def _only_for(rule: Mapping[str, Any], fields: Iterable[str], action: Action,
              allowed: Iterable[Action], where: str) -> None:
    for name in fields:
        if name in rule and action not in allowed:
            raise InvalidInput(f"{where}: '{name}' belongs to "
                               f"{' or '.join(a.value for a in allowed)} rules, "
                               f"not to {action.value}")


def _destination(raw: object, where: str) -> str:
    if not isinstance(raw, str) or not DESTINATION.fullmatch(raw):
        raise InvalidInput(f"{where}: 'to' must be an extension, a user id or a number "
                           "(digits, a leading +, * and #), at most 32 digits")
    return raw


def parse_rule(raw: object, statuses: Iterable[str], where: str) -> CallRule:
    """One rule from the API or the config; InvalidInput naming the field otherwise."""
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where}: a rule is an object with 'when' and 'action'")
    unknown = sorted(str(k)[:40] for k in raw if k not in _FIELDS)
    if unknown:
        raise InvalidInput(f"{where}: unknown field(s) {', '.join(unknown)}")
    action = _enum(Action, raw.get("action"), "action", where)
    on = _enum(On, raw.get("on", "call"), "on", where)
    _only_for(raw, ("to", "after", "both"), action, (Action.FORWARD,), where)
    _only_for(raw, ("timeout",), action, (Action.RING,), where)
    _only_for(raw, ("greeting",), action, (Action.VOICEMAIL,), where)
    if on is not On.CALL and (action is Action.RING or "after" in raw or "both" in raw):
        raise InvalidInput(f"{where}: a rule on '{on.value}' comes after ringing: it cannot "
                           "ring again, nor use 'after' or 'both'")
    both = raw.get("both", False)
    if not isinstance(both, bool):
        raise InvalidInput(f"{where}: 'both' is true or false")
    after = _seconds(raw.get("after", 0), "after", where, 0)
    if both and after:
        raise InvalidInput(f"{where}: 'both' rings the phone and the destination at once; "
                           "it cannot wait 'after' seconds first")
    return CallRule(
        when=_when(raw.get("when"), statuses, where), action=action,
        callers=_enum(Callers, raw.get("callers", "any"), "callers", where), on=on,
        to=_destination(raw.get("to"), where) if action is Action.FORWARD else "",
        after=after, both=both,
        timeout=_seconds(raw["timeout"], "timeout", where, 1) if "timeout" in raw else 0,
        greeting=_enum(Greeting, raw.get("greeting", ""), "greeting", where)
        if "greeting" in raw else Greeting.DEFAULT)


def parse_rules(body: object, statuses: Iterable[str], where: str = "call handling"
                ) -> tuple[CallRule, ...]:
    """``{"rules": [...]}`` -> the rules, in order."""
    return parse_body(body, statuses, where)[0]


def parse_body(body: object, statuses: Iterable[str], where: str = "call handling"
               ) -> tuple[tuple[CallRule, ...], bool | None]:
    """``{"rules": [...], "show_presence": true|false|null}`` -> (the rules, whether
    callers see the person's presence on their display; None: the site's choice)."""
    if not isinstance(body, dict) or "rules" not in body or not set(body) <= {
            "rules", "show_presence"} or not isinstance(body["rules"], list):
        raise InvalidInput(f"{where}: expected an object with 'rules' (a list) and, "
                           "optionally, 'show_presence'")
    show = body.get("show_presence")
    if show is not None and not isinstance(show, bool):
        raise InvalidInput(f"{where}: 'show_presence' is true, false or null (the site's "
                           "setting)")
    return _rule_list(body["rules"], statuses, where), show


def _rule_list(rules: list[Any], statuses: Iterable[str], where: str) -> tuple[CallRule, ...]:
    if len(rules) > MAX_RULES:
        raise InvalidInput(f"{where}: {len(rules)} rules; at most {MAX_RULES}")
    names = tuple(statuses)
    return tuple(parse_rule(r, names, f"{where}, rule {i + 1}") for i, r in enumerate(rules))


# -- the site's policy: where calls may be forwarded -------------------------------


@dataclass(frozen=True)
class ForwardPolicy:
    """Where a forward may go. Checked by the server when rules are saved, and again
    before a rule is written to Asterisk (the policy may have changed since)."""

    #: May a forward go to a user astpresence knows (their extension)?
    users: bool = True
    #: Other destinations allowed, each a pattern the whole destination must match
    #: (e.g. ``^0[1-9][0-9]{6,14}$``). Empty: none, so no external number.
    allow: tuple[re.Pattern[str], ...] = ()

    def allows(self, to: str, is_user: Callable[[str], bool]) -> bool:
        if not DESTINATION.fullmatch(to):
            return False
        if self.users and is_user(to):
            return True
        return any(p.fullmatch(to) for p in self.allow)


def check_policy(rules: Iterable[CallRule], policy: ForwardPolicy,
                 is_user: Callable[[str], bool], where: str = "call handling") -> None:
    """InvalidInput for the first forward the policy does not allow."""
    for i, rule in enumerate(rules):
        if rule.action is Action.FORWARD and not policy.allows(rule.to, is_user):
            raise InvalidInput(f"{where}, rule {i + 1}: forwarding to {rule.to!r} is not "
                               "allowed by this site's policy ([calls] forward_users, "
                               "forward_allow)")


# -- callers told why ----------------------------------------------------------------

#: A name on the caller's display, at most (phones show about that many characters).
MAX_SHOWN = 40


def shown_name(name: str, uid: str) -> str:
    """The callee's name as the kit puts it on the caller's display: letters, digits,
    spaces and . ' - only (it travels in astdb, a dial plan ``Set`` and a SIP display
    name), at most :data:`MAX_SHOWN` characters; the user id when nothing is left."""
    kept = "".join(c if c.isalnum() or c in ".'-" else " " for c in name)
    text = " ".join(kept.split())[:MAX_SHOWN].strip()
    return text or uid


# -- which rules hold now ----------------------------------------------------------


@dataclass(frozen=True)
class Handling:
    """What happens now to a call from one kind of caller: the rule for the call
    arriving (None: the kit's presence routing) and those for how ringing ended."""

    call: CallRule | None = None
    busy: CallRule | None = None
    no_answer: CallRule | None = None
    unregistered: CallRule | None = None

    def __bool__(self) -> bool:
        return any((self.call, self.busy, self.no_answer, self.unregistered))

    def step(self, on: On) -> CallRule | None:
        return {On.CALL: self.call, On.BUSY: self.busy, On.NO_ANSWER: self.no_answer,
                On.UNREGISTERED: self.unregistered}[on]


def _matches(rule: CallRule, state: State, status: str | None, callers: Callers) -> bool:
    if rule.callers is not Callers.ANY and rule.callers is not callers:
        return False
    return rule.when == "any" or rule.when == state.value or (
        status is not None and rule.when == status)


def resolve(rules: Sequence[CallRule], state: State, status: str | None, callers: Callers,
            usable: Callable[[CallRule], bool] = lambda rule: True) -> Handling:
    """The first matching rule per ``on`` for a caller of kind ``callers`` while the
    person's chosen presence is ``state`` (and named status ``status``). Rules that
    are not ``usable`` now (a forward the policy no longer allows) are passed over."""
    found: dict[On, CallRule] = {}
    for rule in rules:
        if rule.on not in found and _matches(rule, state, status, callers) and usable(rule):
            found[rule.on] = rule
    return Handling(found.get(On.CALL), found.get(On.BUSY), found.get(On.NO_ANSWER),
                    found.get(On.UNREGISTERED))


def _step_text(rule: CallRule) -> str:
    if rule.action is Action.FORWARD:
        text = f"forwarded to {rule.to}"
        if rule.both:
            return text + " (ringing both)"
        return text + (f" after {rule.after} s" if rule.after else "")
    return {Action.RING: "ring", Action.VOICEMAIL: "go to voicemail",
            Action.BUSY: "get busy", Action.UNAVAILABLE: "are refused as unavailable"}[
        rule.action]


def describe(handling: Handling) -> str:
    """One line for the contact card: what happens to a call now."""
    call = handling.call
    if call is None:
        head = "calls follow presence"
    elif call.action is Action.FORWARD:
        head = "calls are " + _step_text(call)
    elif call.action is Action.RING:
        head = "calls ring" + (f" for {call.timeout} s" if call.timeout else "")
    else:
        head = "calls " + _step_text(call)
    tails = [f"{label}: {_step_text(rule).replace('get busy', 'busy')}"
             for label, rule in (("if busy", handling.busy), ("no answer", handling.no_answer),
                                 ("not registered", handling.unregistered)) if rule]
    return "; ".join([head, *tails])
