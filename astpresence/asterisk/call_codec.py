"""Call handling in astdb: what the kit's ``astpresence-dial`` reads at call time.

One key per person and kind of caller, in astpresence's own family::

    astpresence-calls/<user>/internal
    astpresence-calls/<user>/external

and ``astpresence-calls/<user>/show``, the name callers see with the callee's
presence when that is on (letters, digits, spaces and . ' - only).

Its value is a version and four steps, joined by ``|``::

    v1|<on the call>|<if busy>|<if no answer>|<if not registered>

and each step is an action and its arguments, joined by ``,``:

============================================  ========================================
``default``                                   (the call only) the kit's presence routing
``ring,<timeout>``                            (the call only) dial the phone; 0: the
                                              Gosub's own timeout
``forward,<after>,<both>,<to>,<dial string>``  after seconds of ringing (0: at once); both
                                              1: ring phone and destination together
``voicemail,b`` / ``voicemail,u``             the busy / unavailable greeting
``busy``, ``unavailable``                     486 / 480 for the caller
(empty)                                       (after ringing) nothing: DIALED as before
============================================  ========================================

No key: the person has no rule, the kit routes by presence as it always did.
A destination and a dial string never hold ``,`` or ``|`` (domain/calls.py and
domain/call_settings.py check them), and :func:`encode` checks the whole value
once more, so nothing else can reach astdb.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from astpresence.asterisk.ami.client import ActionError, AMIClient
from astpresence.asterisk.ami.frames import Message
from astpresence.domain.call_settings import CallSettings
from astpresence.domain.calls import CALLER_KINDS, Action, CallRule, Greeting, Handling
from astpresence.domain.model import InvalidInput, State

FAMILY = "astpresence-calls"
#: The third key per person: the name shown to callers with the callee's presence
#: (domain/calls.py shown_name; absent: nothing shown).
SHOW = "show"
VERSION = "v1"
_STEP = r"forward,[0-9]{1,3},[01],[^,|]+,[^,|]+|voicemail,[bu]|busy|unavailable"
#: Every value :func:`encode` may produce.
VALUE = re.compile(rf"{VERSION}\|(default|ring,[0-9]{{1,3}}|{_STEP})(\|({_STEP})?){{3}}")
#: A value is at most this long (a DBPut line stays well under AMI's limits).
MAX_VALUE = 900


#: What a ``show`` value may hold (domain/calls.py shown_name makes it so).
SHOWN = re.compile(r"[^\W_][\w .'-]{0,39}")


def shown(name: str) -> str:
    """``name`` if it is a safe ``show`` value, else "" (nothing shown)."""
    return name if SHOWN.fullmatch(name) and "_" not in name else ""


def key(uid: str, callers: str) -> str:
    return f"{uid}/{callers}"


def _step(rule: CallRule, state: State, settings: CallSettings) -> str:
    if rule.action is Action.FORWARD:
        return (f"forward,{rule.after},{int(rule.both)},{rule.to},"
                f"{settings.dial(rule.to)}")
    if rule.action is Action.RING:
        return f"ring,{rule.timeout}"
    if rule.action is Action.VOICEMAIL:
        busy = rule.greeting is Greeting.BUSY or (
            rule.greeting is Greeting.DEFAULT and state is State.DND)
        return "voicemail,b" if busy else "voicemail,u"
    return rule.action.value


def encode(handling: Handling, state: State, settings: CallSettings) -> str:
    """The astdb value of ``handling`` ("" for no key). InvalidInput if it would not
    be a value the kit reads (never written then)."""
    if not handling:
        return ""
    call = handling.call
    parts = [VERSION, "default" if call is None else _step(call, state, settings)]
    parts += ["" if r is None else _step(r, state, settings)
              for r in (handling.busy, handling.no_answer, handling.unregistered)]
    value = "|".join(parts)
    if len(value) > MAX_VALUE or not VALUE.fullmatch(value):
        raise InvalidInput(f"call handling value {value[:80]!r} is not one the kit reads")
    return value


def written(items: list[Message]) -> dict[tuple[str, str], str]:
    """``DBGetTree`` items of :data:`FAMILY` -> {(user, caller kind): value}.

    main/db.c prints the whole key (``/astpresence-calls/2000/internal``); keys
    of any other shape are not ours and are left alone."""
    kinds = {c.value for c in CALLER_KINDS} | {SHOW}
    out: dict[tuple[str, str], str] = {}
    for item in items:
        parts = (item.get("Key") or "").split("/")
        if len(parts) == 4 and not parts[0] and parts[1] == FAMILY and parts[3] in kinds:
            out[(parts[2], parts[3])] = item.get("Val") or ""
    return out


async def read_written(client: AMIClient,
                       log: logging.LoggerAdapter) -> dict[tuple[str, str], Any]:  # type: ignore[type-arg]
    """What astdb holds now, after a login (the tracker starts from it: after a
    reconnect only what differs is written again)."""
    try:
        items = await client.send_list_action("DBGetTree", {"Family": FAMILY})
    except ActionError as exc:
        if "not found" not in str(exc).lower():
            log.warning("call handling in astdb not read (%s): every rule is written "
                        "again", exc)
        items = []
    found = written(items)
    log.info("call handling in astdb: %d key(s)", len(found))
    return found
