"""``astpresence doctor``: is Asterisk set up for what the configuration asks?

Logs in with the configured AMI credentials and runs one check per concern:
AMI reachable, login accepted, AMI permissions, modules loaded, users found
from hints, BLF mirror devices in hints. :func:`run_checks` returns plain
:class:`Check` values and prints nothing; the CLI formats them.

Every probe is free of side effects: nothing is written to Asterisk, no
member is paused, no variable is set. Asterisk facts relied on
(asterisk/asterisk, main/manager.c unless said otherwise):

- ``process_message()`` runs an action when ``(writeperm & authority) != 0``
  or the action's authority is 0; otherwise it answers ``Response: Error`` /
  ``Message: Permission denied`` *before* the action's handler runs. So an
  action sent without its required headers tells whether the user may run it
  without doing anything: the handler answers its "missing parameter" error.
- Authorities (the ``ast_manager_register_xml*`` calls): ``Setvar`` call;
  ``Getvar``, ``ExtensionState``, ``PresenceState`` call|reporting;
  ``ExtensionStateList`` call|reporting (main/extension_state.c);
  ``PresenceStateList`` call|reporting (res/res_manager_presencestate.c);
  ``DeviceStateList`` call|reporting (res/res_manager_devicestate.c);
  ``QueueStatus`` 0 and ``QueuePause`` agent (apps/app_queue.c);
  ``ModuleCheck`` system; ``Command`` command; ``Ping`` 0.
- Read classes decide which events a session gets: ``set_eventmask()`` sets
  ``send_events = readperm & mask`` and an event goes out only when
  ``(send_events & category) == category``. No action reports a session's
  read classes, so they are known only from ``manager show user <name>``
  (CLI command, prints ``read perm:`` / ``write perm:`` and never the secret,
  ``handle_showmanager()``) or from events actually received: the
  ``Privilege`` header of an event names its classes (``authority_to_str()``).
- ``action_login()`` writes ``Event: FullyBooted`` right after
  ``Authentication accepted`` when the session's events include ``system``
  (and Asterisk is fully booted); astpresence logs in with ``Events: on``,
  so that event is the evidence for ``read=system``.
- ``manager_modulecheck()`` answers ``Module not loaded`` or ``Response:
  Success``; ``ast_module_check()`` matches the name with or without ``.so``
  (main/loader.c ``resource_name_match()``).
- ``action_extensionstatelist()`` (main/extension_state.c) answers
  ``No dialplan hints are available`` when there are none.
"""

from __future__ import annotations

import asyncio
import json
import os
import logging
from datetime import UTC, datetime

import aiohttp
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from astpresence.asterisk.ami.client import (
    ActionError,
    ActionTimeout,
    AMIClient,
    AMIConnectionError,
    AuthenticationError,
)
from astpresence.asterisk.ami.frames import Message
from astpresence.asterisk.ari import basic_auth
from astpresence.app.config import Config, node_secret_var
from astpresence.asterisk.settings import AMIConfig
from astpresence.domain.model import DEFAULT_NODE, InvalidInput
from astpresence.domain.freepbx import dnd_user
from astpresence.domain.logsafe import clip
from astpresence.domain.mirror import mirror_device, mirror_technology
from astpresence.domain.records import UserRecord
from astpresence.asterisk.translate import PRESENCE_PROVIDER, parse_hint, user_from_hint

logger = logging.getLogger(__name__)

__all__ = [
    "CHECK_LOGIN",
    "CHECK_MIRROR",
    "CHECK_MODULES",
    "CHECK_PERMISSIONS",
    "CHECK_REACHABLE",
    "CHECK_USERS",
    "CHECK_NAMES",
    "CORE_MODULES",
    "EXAMPLE_HINT",
    "NEEDS_LOGIN",
    "PJSIP_PRESENCE_MODULES",
    "Check",
    "HintEntry",
    "PermissionFinding",
    "checks_as_json",
    "format_check",
    "hint_users",
    "judge_permissions",
    "mirror_check",
    "parse_manager_show_user",
    "privilege_classes",
    "required_permissions",
    "run_checks",
    "users_check",
]

CHECK_REACHABLE = "ami reachable"
CHECK_LOGIN = "login"
CHECK_PERMISSIONS = "permissions"
CHECK_MODULES = "modules"
CHECK_USERS = "users from hints"
CHECK_MIRROR = "mirror in hints"
CHECK_FREEPBX = "freepbx"
CHECK_ARI = "ari"
CHECK_STORE = "store"
#: Every check, in the order they are reported.
CHECK_NAMES = (CHECK_REACHABLE, CHECK_LOGIN, CHECK_PERMISSIONS, CHECK_MODULES, CHECK_USERS,
               CHECK_MIRROR, CHECK_FREEPBX, CHECK_ARI, CHECK_STORE)

NEEDS_LOGIN = "skipped: needs a working login"

#: Modules astpresence cannot work without: the PRESENCE_STATE and
#: DEVICE_STATE functions it writes, and the two modules that turn presence
#: and device state changes into AMI events and list actions.
CORE_MODULES = (
    "res_manager_presencestate",
    "res_manager_devicestate",
    "func_presencestate",
    "func_devstate",
)
#: Checked only when res_pjsip is loaded: SUBSCRIBE to a hint
#: (res_pjsip_exten_state), PIDF bodies, and the ``digium_presence`` element,
#: the only way presence itself reaches a phone (docs/asterisk.md,
#: "Hints and what phones see").
PJSIP_PRESENCE_MODULES = (
    "res_pjsip_exten_state",
    "res_pjsip_pidf_body_generator",
    "res_pjsip_pidf_digium_body_supplement",
)
#: Modules the dialplan kit (astpresence/app/kit/extensions_astpresence.conf) calls. A
#: missing one fails only at call time (docs/asterisk.md, "Dialplan modules").
KIT_MODULES = (
    "func_cut",          # CUT: the digit of *37N
    "app_playtones",     # Playtones / StopPlaytones: the confirmation tones
    "func_strings",      # REGEX, TOLOWER
    "func_logic",        # IF, EXISTS
    "func_channel",      # CHANNEL(endpoint): who pressed the code
    "func_global",       # GLOBAL(ASTPRESENCE_USER)
    "app_stack",         # GoSub/Return of astpresence-set and astpresence-dial
    "app_voicemail",     # VoiceMail, VM_INFO in astpresence-dial
)
#: A global the kit defines in [globals]: non-empty when the kit is loaded.
KIT_MARKER = "ASTPRESENCE_CODE_DND_TOGGLE"
PJSIP_MODULE = "res_pjsip"
QUEUE_MODULE = "app_queue"

EXAMPLE_HINT = "exten => 2000,hint,PJSIP/2000,CustomPresence:2000"

PERMISSION_DENIED = "Permission denied"
UNKNOWN_COMMAND = "Invalid/unknown command"
NO_HINTS = "No dialplan hints are available"
#: Throw-away names for read-only function probes; nothing is ever written.
PROBE_PRESENTITY = "CustomPresence:astpresence-doctor"
PROBE_DEVICE = "Custom:astpresence-doctor"

#: Shown after "fix:" for checks that could not run.
_FIX_LOGIN_FIRST = "fix the failed check above first"


@dataclass(frozen=True)
class Check:
    """The outcome of one check; ``fix`` says what to do when ``ok`` is false."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    @property
    def status(self) -> Literal["ok", "fail", "skip"]:
        """``skip``: the check did not run (not needed, or an earlier check failed)."""
        if self.detail.startswith("skipped"):
            return "skip"
        return "ok" if self.ok else "fail"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "status": self.status,
                "detail": self.detail, "fix": self.fix}


_MARK = {"ok": "[ OK ]", "fail": "[FAIL]", "skip": "[SKIP]"}


def format_check(check: Check) -> str:
    """``[ OK ] name: detail``, ``[SKIP] name: skipped: ...`` or ``[FAIL] ... — fix: ...``."""
    line = f"{_MARK[check.status]} {check.name}: {check.detail}"
    return f"{line} — fix: {check.fix}" if check.fix and check.status == "fail" else line


def checks_as_json(checks: Sequence[Check]) -> dict[str, Any]:
    return {"ok": all(c.ok for c in checks), "checks": [c.as_dict() for c in checks]}


# --- permissions: pure helpers ------------------------------------------------


def required_permissions(config: Config) -> tuple[frozenset[str], frozenset[str]]:
    """(read classes, write classes) the daemon needs with this configuration.

    read: ``call`` for PresenceStateChange, PresenceStatus, ExtensionStatus
    and DeviceStateChange (all EVENT_FLAG_CALL: main/presencestate.c,
    main/manager.c ``manager_state_cb()``, main/devicestate.c); ``system`` and
    ``reporting`` as the product asks; ``agent`` for QueueMemberPause and
    friends (EVENT_FLAG_AGENT, apps/app_queue.c) when queue pause is on.
    write: ``call`` for Setvar (and it covers the call|reporting list
    actions); ``agent`` for QueuePause when queue pause is on; ``system`` for
    DBPut/DBDel (main/db.c) when FreePBX DND is kept in step (``dnd_sync``).
    """
    read = {"system", "call", "reporting"}
    write = {"call"}
    if config.rules.queue_pause:
        read.add("agent")
        write.add("agent")
    if config.freepbx.dnd_sync:
        write.add("system")
    return frozenset(read), frozenset(write)


def privilege_classes(privilege: str | None) -> frozenset[str]:
    """Classes in an event's ``Privilege`` header, without the ``all`` suffix."""
    if not privilege:
        return frozenset()
    return frozenset(p.strip().lower() for p in privilege.split(",") if p.strip()) - {"all"}


def _perm_list(text: str) -> frozenset[str]:
    classes = frozenset(p.strip().lower() for p in text.split(",") if p.strip())
    return classes - {"<none>"}


def parse_manager_show_user(lines: Iterable[str]) -> tuple[frozenset[str], frozenset[str]] | None:
    """(read, write) classes from ``manager show user <name>`` output, or None.

    The lines are ``         read perm: system,call`` and ``        write perm:
    call`` (manager.c ``handle_showmanager()``); ``<none>`` means empty.
    """
    read: frozenset[str] | None = None
    write: frozenset[str] | None = None
    for line in lines:
        key, sep, value = line.strip().partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key == "read perm":
            read = _perm_list(value)
        elif key == "write perm":
            write = _perm_list(value)
    if read is None or write is None:
        return None
    return read, write


#: Class order of manager.c ``perms[]``, used to print class lists.
_CLASS_ORDER = ("system", "call", "log", "verbose", "command", "agent", "user", "config",
                "dtmf", "reporting", "cdr", "dialplan", "originate", "agi", "cc", "aoc",
                "test", "security", "message")


def _ordered(classes: Iterable[str]) -> list[str]:
    def key(cls: str) -> tuple[int, str]:
        return (_CLASS_ORDER.index(cls), cls) if cls in _CLASS_ORDER else (len(_CLASS_ORDER), cls)

    return sorted(classes, key=key)


def _has(classes: frozenset[str], wanted: str) -> bool:
    return wanted in classes or "all" in classes


Verdict = Literal["yes", "no", "unknown"]


@dataclass(frozen=True)
class PermissionFinding:
    """One needed class, e.g. ``read=call``, what is known and from where."""

    kind: Literal["read", "write"]
    cls: str
    verdict: Verdict
    evidence: str

    @property
    def label(self) -> str:
        return f"{self.kind}={self.cls}"


def judge_permissions(
    need_read: Iterable[str],
    need_write: Iterable[str],
    *,
    probed_write: Mapping[str, tuple[bool, str]],
    shown: tuple[frozenset[str], frozenset[str]] | None,
    seen_read: frozenset[str],
    fully_booted: bool,
) -> list[PermissionFinding]:
    """What is known about each needed class.

    ``probed_write``: class -> (allowed, which probe), from actions answered
    without ``Permission denied`` (the live session's rights: preferred).
    ``shown``: (read, write) from ``manager show user`` when the user may run
    ``Command``. ``seen_read``: classes of the events received. A class no
    evidence speaks for stays ``unknown``; only ``read=system`` is judged
    missing without ``shown``, because FullyBooted always follows a login
    whose events include system.
    """
    findings: list[PermissionFinding] = []
    for cls in _ordered(need_write):
        if cls in probed_write:
            allowed, probe = probed_write[cls]
            verdict: Verdict = "yes" if allowed else "no"
            evidence = f"{probe} {'allowed' if allowed else 'answered Permission denied'}"
        elif shown is not None:
            verdict = "yes" if _has(shown[1], cls) else "no"
            evidence = "manager show user"
        else:
            verdict, evidence = "unknown", "no probe answered"
        findings.append(PermissionFinding("write", cls, verdict, evidence))
    for cls in _ordered(need_read):
        if shown is not None:
            verdict = "yes" if _has(shown[0], cls) else "no"
            evidence = "manager show user"
        elif cls == "system" and fully_booted:
            verdict, evidence = "yes", "FullyBooted after login"
        elif cls in seen_read:
            verdict, evidence = "yes", f"a {cls} event arrived"
        elif cls == "system":
            verdict, evidence = "no", "no FullyBooted after login"
        else:
            verdict, evidence = "unknown", f"no {cls} event arrived"
        findings.append(PermissionFinding("read", cls, verdict, evidence))
    return findings


def _describe(items: Iterable[PermissionFinding]) -> str:
    return ", ".join(f"{f.label} ({f.evidence})" for f in items)


def _permissions_detail(findings: Sequence[PermissionFinding]) -> str:
    def having(verdict: str, kind: str | None = None) -> list[PermissionFinding]:
        return [f for f in findings if f.verdict == verdict and kind in (None, f.kind)]

    parts = [f"{word} {_describe(items)}" for word, items in (
        ("missing", having("no")), ("confirmed", having("yes")),
        ("unverified", having("unknown", "write"))) if items]
    unknown_read = having("unknown", "read")
    if unknown_read:
        parts.append(
            f"unverified {', '.join(f.label for f in unknown_read)} (no such event arrived; "
            "doctor reads them from 'manager show user' if the user has write=command)")
    return "; ".join(parts) or "nothing needed"


def _permissions_check(findings: Sequence[PermissionFinding], username: str,
                       need_read: frozenset[str], need_write: frozenset[str]) -> Check:
    detail = _permissions_detail(findings)
    missing = [f for f in findings if f.verdict == "no"]
    if not missing:
        return Check(CHECK_PERMISSIONS, True, detail)
    wants = [f"add {','.join(classes)} to {kind}="
             for kind in ("read", "write")
             if (classes := _ordered(f.cls for f in missing if f.kind == kind))]
    fix = (
        f"in manager.conf [{username}] {' and '.join(wants)} (astpresence needs "
        f"read = {','.join(_ordered(need_read))} and write = {','.join(_ordered(need_write))}), "
        "then run 'manager reload' in the Asterisk CLI"
    )
    return Check(CHECK_PERMISSIONS, False, detail, fix)


# --- users and mirror: pure helpers ------------------------------------------


@dataclass(frozen=True)
class HintEntry:
    exten: str
    context: str
    hint: str

    @property
    def devices(self) -> tuple[str, ...]:
        return parse_hint(self.hint)[0]


def hint_users(hints: Iterable[HintEntry]) -> dict[str, list[HintEntry]]:
    """User id -> the hints naming ``CustomPresence:<id>``."""
    found: dict[str, list[HintEntry]] = {}
    for h in hints:
        user = user_from_hint(h.exten, h.context, h.hint)
        if user is not None:
            found.setdefault(user.id, []).append(h)
    return found


def _names(ids: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def _sort_ids(ids: Iterable[str]) -> list[str]:
    return sorted(ids, key=lambda u: (0, int(u), u) if u.isdigit() else (1, 0, u))


def users_check(hints: Sequence[HintEntry], config_users: Sequence[UserRecord]) -> Check:
    """Users found from hints; failing only when there are none at all."""
    found = hint_users(hints)
    ids = _sort_ids(found)
    invalid = sum(
        1 for h in hints
        if PRESENCE_PROVIDER in (parse_hint(h.hint)[1] or "")
        and user_from_hint(h.exten, h.context, h.hint) is None
    )
    note = f"; {invalid} hint(s) with an unusable user id ignored" if invalid else ""
    if ids:
        detail = f"{len(ids)} user(s) in {len(hints)} hint(s): {_names(ids)}{note}"
        if config_users:
            detail += f"; {len(config_users)} more from [[users]] in the config"
        return Check(CHECK_USERS, True, detail)
    if config_users:
        return Check(
            CHECK_USERS, True,
            f"no hint names {PRESENCE_PROVIDER} ({len(hints)} hint(s) listed){note}; "
            f"{len(config_users)} user(s) from [[users]] in the config",
        )
    return Check(
        CHECK_USERS, False,
        f"no hint names {PRESENCE_PROVIDER} ({len(hints)} hint(s) listed) and the config "
        f"has no [[users]]{note}",
        f"give each user a hint with a presence provider in extensions.conf, e.g. "
        f"'{EXAMPLE_HINT}', then 'dialplan reload'; or list users in [[users]]",
    )


def _mirror_candidates(config: Config, hints: Sequence[HintEntry]) -> dict[str, list[HintEntry]]:
    """Each user and the hints that are theirs (by presentity, or config extension)."""
    by_place = {(h.exten, h.context): h for h in hints}
    candidates: dict[str, list[HintEntry]] = {uid: list(hs)
                                              for uid, hs in hint_users(hints).items()}
    for user in config.users:
        extra = by_place.get((user.extension, user.context)) if user.extension else None
        entry = candidates.setdefault(user.id, [])
        if extra is not None and extra not in entry:
            entry.append(extra)
    return candidates


def _hint_with(h: HintEntry, device: str) -> str:
    devices, provider = parse_hint(h.hint)
    line = f"exten => {h.exten},hint,{'&'.join((*devices, device))}"
    return line + (f",{provider}" if provider else "")


def mirror_check(config: Config, hints: Sequence[HintEntry]) -> Check:
    """When the BLF mirror is on, each user's hint must hold ``Custom:<prefix><user>``."""
    rules = config.rules
    if not rules.mirror:
        return Check(CHECK_MIRROR, True, "mirror is off (rules.mirror = false): nothing to check")
    candidates = _mirror_candidates(config, hints)
    if not candidates:
        return Check(CHECK_MIRROR, True, "mirror is on, but there are no users to check")
    missing: list[str] = []
    no_hint: list[str] = []
    examples: list[str] = []
    for uid in _sort_ids(candidates):
        try:
            device = mirror_device(uid, rules)
        except InvalidInput:
            continue
        hs = candidates[uid]
        if not hs:
            no_hint.append(uid)
        elif not any(device in h.devices for h in hs):
            missing.append(uid)
            examples.append(_hint_with(hs[0], device))
    name = f"{mirror_technology(rules)}:{rules.mirror_prefix}<user>"
    if not missing and not no_hint:
        return Check(CHECK_MIRROR, True,
                     f"every user's hint has its {name} device ({len(candidates)} user(s))")
    parts = [f"hint without {name} for {_names(missing)}" if missing else "",
             f"no hint at all for {_names(no_hint)}" if no_hint else ""]
    fix = (f"add {name} to each user's hint devices (joined with &), then 'dialplan reload'; "
           "'astpresence dialplan hints' prints every line")
    if examples:
        fix += f", e.g. '{examples[0]}'"
    return Check(CHECK_MIRROR, False, "; ".join(p for p in parts if p), fix)


@dataclass(frozen=True)
class AmpuserProbe:
    """FreePBX's astdb family AMPUSER, asked for a few hint extensions' ``cidname``."""

    asked: int = 0
    names: tuple[tuple[str, str], ...] = ()  # (extension, cidname) found
    error: str = ""  # an answer other than "not found" (e.g. Permission denied)


def freepbx_check(config: Config, hints: Sequence[HintEntry],
                  ampuser: AmpuserProbe = AmpuserProbe()) -> Check:
    """Is this a FreePBX system (AMPUSER in astdb, DND devices in hints), and what will
    astpresence do with it?"""
    pattern = config.freepbx.dnd_device
    if ampuser.error:
        return Check(CHECK_FREEPBX, False, f"astdb could not be read: {ampuser.error}",
                     "reading FreePBX's AMPUSER names and devices (DBGet, DBGetTree) needs "
                     "write=system or write=reporting in manager.conf; without it names come "
                     "from caller IDs only and per-device DND is not switched")
    astdb = ""
    if ampuser.names:
        ext, name = ampuser.names[0]
        astdb = (f"FreePBX astdb: AMPUSER names for {len(ampuser.names)} of {ampuser.asked} "
                 f"extension(s) asked (e.g. {ext}: \"{name}\"), used as display names; ")
    if not pattern:
        return Check(CHECK_FREEPBX, True, astdb + "FreePBX DND devices are not recognised "
                                          "([freepbx] dnd_device = \"\")")
    users = _sort_ids({uid for h in hints for d in h.devices
                       if (uid := dnd_user(pattern, d)) is not None})
    if not users:
        return Check(CHECK_FREEPBX, True,
                     astdb + "no FreePBX DND devices in the hints: nothing to do")
    mode = ("dnd set through astpresence also switches FreePBX DND (dnd_sync = true)"
            if config.freepbx.dnd_sync else
            "dnd set through astpresence leaves FreePBX DND alone (dnd_sync = false)")
    return Check(CHECK_FREEPBX, True,
                 f"{astdb}FreePBX dialplan: DND devices ({pattern}) in the hints of "
                 f"{_names(users)}; *78/*79 are read as the person's dnd; {mode}")


# --- talking to Asterisk --------------------------------------------------------


@dataclass(frozen=True)
class _Reply:
    ok: bool
    message: str = ""  # the Message header of an error answer
    frame: Message | None = None

    @property
    def denied(self) -> bool:
        return not self.ok and self.message == PERMISSION_DENIED

    @property
    def unknown_action(self) -> bool:
        return not self.ok and self.message.startswith(UNKNOWN_COMMAND)

    @property
    def answered(self) -> bool:
        """Asterisk ran the action's handler (it answered, and not with a refusal)."""
        return self.frame is not None and not self.denied and not self.unknown_action


async def _ask(client: AMIClient, action: str, headers: Mapping[str, str] | None = None) -> _Reply:
    """One action; an AMI error answer becomes a :class:`_Reply`.

    A lost link or a timeout is not caught: Asterisk runs one session's
    actions one after the other, so once one goes unanswered every later
    probe would wait its full timeout too.
    """
    try:
        return _Reply(True, "", await client.send_action(action, headers or {}))
    except ActionError as exc:
        return _Reply(False, exc.response.get("Message") or "", exc.response)


async def _ask_list(client: AMIClient, action: str) -> tuple[_Reply, list[Message]]:
    try:
        return _Reply(True), await client.send_list_action(action)
    except ActionError as exc:
        return _Reply(False, exc.response.get("Message") or "", exc.response), []


@dataclass
class _Events:
    """Classes of the events received during the run: evidence for read=."""

    classes: set[str] = field(default_factory=set)
    fully_booted: bool = False

    def __call__(self, event: Message) -> None:
        self.classes |= privilege_classes(event.get("Privilege"))
        if event.event == "FullyBooted":
            self.fully_booted = True


@dataclass
class _Probes:
    """What the run learned; turned into checks at the end."""

    write: dict[str, tuple[bool, str]] = field(default_factory=dict)
    shown: tuple[frozenset[str], frozenset[str]] | None = None
    queue_pause: _Reply | None = None
    modules: Check | None = None
    hints: list[HintEntry] | None = None
    hints_reply: _Reply | None = None  # the failed ExtensionStateList, if it failed
    ampuser: AmpuserProbe = AmpuserProbe()


async def _probe_write(client: AMIClient, config: Config, probes: _Probes) -> None:
    # Setvar without Variable: the permission check comes first (write=call),
    # then action_setvar() answers "No variable specified" and returns.
    reply = await _ask(client, "Setvar")
    if reply.denied or reply.answered:
        probes.write["call"] = (not reply.denied, "Setvar without a variable")
    if config.rules.queue_pause:
        # QueuePause without Interface/Paused: manager_pause_queue_member()
        # answers "Need 'Interface' and 'Paused' parameters." and pauses nothing.
        reply = probes.queue_pause = await _ask(client, "QueuePause")
        if reply.denied or reply.answered:
            probes.write["agent"] = (not reply.denied, "QueuePause without an interface")
    username = client.username
    if username and not any(c.isspace() for c in username):
        # Read-only CLI command; its output shows the secret as "<Set>" and
        # is never printed here, only the two perm lines are read.
        reply = await _ask(client, "Command", {"Command": f"manager show user {username}"})
        if reply.ok and reply.frame is not None:
            probes.shown = parse_manager_show_user(reply.frame.get_all("Output"))


async def _module_loaded(client: AMIClient, module: str) -> _Reply:
    return await _ask(client, "ModuleCheck", {"Module": module})


async def _check_modules(client: AMIClient, config: Config, probes: _Probes) -> Check:
    required = list(CORE_MODULES)
    if config.rules.queue_pause:
        required.append(QUEUE_MODULE)
    first = await _module_loaded(client, required[0])
    if first.denied:
        return await _check_modules_without_modulecheck(client, required, probes)
    notes = []
    if (await _module_loaded(client, PJSIP_MODULE)).ok:
        required += PJSIP_PRESENCE_MODULES
        notes.append(f"PJSIP loaded, checked {', '.join(PJSIP_PRESENCE_MODULES)}")
    else:
        notes.append("PJSIP not loaded, its presence modules not needed")
    if await _kit_loaded(client):
        required += KIT_MODULES
        notes.append("dialplan kit loaded, checked the modules it calls")
    else:
        notes.append("dialplan kit not loaded")
    replies = {required[0]: first}
    for module in required[1:]:
        replies[module] = await _module_loaded(client, module)
    missing = [m for m, r in replies.items() if not r.ok and r.message == "Module not loaded"]
    unclear = [f"{m} ({r.message or 'no message'})" for m, r in replies.items()
               if not r.ok and m not in missing]
    loaded = [m for m, r in replies.items() if r.ok]
    return _modules_result(loaded, missing, unclear, "; ".join(notes))


async def _kit_loaded(client: AMIClient) -> bool:
    """Getvar without a channel reads a global: the kit's [globals] define this one."""
    reply = await _ask(client, "Getvar", {"Variable": KIT_MARKER})
    return bool(reply.ok and reply.frame is not None and reply.frame.get("Value"))


def _verdict(loaded: bool, missing: bool) -> str | None:
    return "loaded" if loaded else "missing" if missing else None


#: Dialplan functions read with Getvar to tell whether their module is loaded.
PROBE_FUNCTIONS = {
    "func_presencestate": f"PRESENCE_STATE({PROBE_PRESENTITY},value)",
    "func_devstate": f"DEVICE_STATE({PROBE_DEVICE})",
}


def _function_verdict(reply: _Reply) -> str | None:
    # A loaded module reads "not_set" / "UNKNOWN" for an unused name; an
    # unregistered function reads as an empty value.
    if not reply.ok or reply.frame is None:
        return None
    return _verdict(bool(reply.frame.get("Value")), not reply.frame.get("Value"))


async def _check_modules_without_modulecheck(
    client: AMIClient, required: list[str], probes: _Probes
) -> Check:
    # ModuleCheck needs write=system, which astpresence itself never uses.
    # Judge by what each module registers instead: an action is found by
    # action_find() only while its module is loaded, and a dialplan function
    # that is not registered reads as an empty Value in Getvar.
    replies: dict[str, _Reply] = {}
    verdicts: dict[str, str | None] = {}  # "loaded", "missing" or None: unclear
    for module, action in (("res_manager_presencestate", "PresenceStateList"),
                           ("res_manager_devicestate", "DeviceStateList")):
        replies[module], _ = await _ask_list(client, action)
        verdicts[module] = _verdict(replies[module].ok or replies[module].answered,
                                    replies[module].unknown_action)
    for module, variable in PROBE_FUNCTIONS.items():
        replies[module] = await _ask(client, "Getvar", {"Variable": variable})
        verdicts[module] = _function_verdict(replies[module])
    queue = probes.queue_pause
    if QUEUE_MODULE in required and queue is not None:
        # The QueuePause probe: app_queue registers QueuePause, so
        # "Invalid/unknown command" means app_queue is not loaded.
        replies[QUEUE_MODULE] = queue
        verdicts[QUEUE_MODULE] = _verdict(queue.answered or queue.denied, queue.unknown_action)
    loaded = [m for m, v in verdicts.items() if v == "loaded"]
    missing = [m for m, v in verdicts.items() if v == "missing"]
    unclear = [f"{m} ({replies[m].message or 'no message'})"
               for m, v in verdicts.items() if v is None]
    note = ("ModuleCheck needs write=system (Permission denied): judged by the modules' "
            "AMI actions and dialplan functions; PJSIP presence modules not checked")
    if await _kit_loaded(client):
        note += ("; dialplan kit loaded but the modules it calls cannot be checked without "
                 "write=system: check them with 'module show like' ("
                 + ", ".join(KIT_MODULES) + ")")
    return _modules_result(loaded, missing, unclear, note)


def _modules_result(loaded: list[str], missing: list[str], unclear: list[str],
                    note: str) -> Check:
    if not missing and not unclear:
        return Check(CHECK_MODULES, True, f"loaded: {', '.join(loaded)}; {note}")
    parts = []
    if missing:
        parts.append(f"not loaded: {', '.join(missing)}")
    if unclear:
        parts.append(f"could not check: {', '.join(unclear)}")
    fix_parts = []
    if missing:
        loads = "; ".join(f"module load {m}.so" for m in missing)
        fix_parts.append(
            f"in the Asterisk CLI run '{loads}' and make sure modules.conf does not "
            f"noload {'them' if len(missing) > 1 else 'it'}"
        )
    if unclear:
        fix_parts.append("grant write=system to this AMI user so ModuleCheck can answer")
    return Check(CHECK_MODULES, False, f"{'; '.join(parts)}; {note}", "; ".join(fix_parts))


async def _list_hints(client: AMIClient, probes: _Probes) -> None:
    reply, items = await _ask_list(client, "ExtensionStateList")
    if reply.ok:
        probes.hints = [
            HintEntry(ev.get("Exten") or "", ev.get("Context") or "", ev.get("Hint") or "")
            for ev in items if ev.get("Hint")
        ]
    elif reply.message == NO_HINTS:
        probes.hints = []
    else:
        probes.hints_reply = reply


#: Hint extensions whose AMPUSER entry doctor asks for, at most.
AMPUSER_PROBES = 5


async def _probe_ampuser(client: AMIClient, probes: _Probes) -> None:
    """``DBGet AMPUSER <ext>/cidname`` for a few plain hint extensions (main/db.c)."""
    extens = sorted({h.exten for h in probes.hints or () if h.exten.isdigit()},
                    key=lambda e: (len(e), e))[:AMPUSER_PROBES]
    names, error = [], ""
    for exten in extens:
        try:
            items = await client.send_list_action("DBGet", {"Family": "AMPUSER",
                                                            "Key": f"{exten}/cidname"})
        except ActionError as exc:
            message = exc.response.get("Message") or ""
            if "not found" not in message.lower():
                error = message or "no message"
                break
            continue
        value = next((i.get("Val") or "" for i in items if i.event == "DBGetResponse"), "")
        names.append((exten, clip(value, 60)))
    probes.ampuser = AmpuserProbe(len(extens), tuple(names), error)


def _secret_var(ami: AMIConfig) -> str:
    return "ASTPRESENCE_AMI_SECRET" if ami.name == DEFAULT_NODE else node_secret_var(ami.name)


def _skipped(names: Iterable[str], detail: str = NEEDS_LOGIN) -> list[Check]:
    return [Check(name, False, detail, _FIX_LOGIN_FIRST) for name in names]


def _unreachable_fix(ami: AMIConfig) -> str:
    return (
        f"check {_setting(ami, 'host')}/{_setting(ami, 'port')} (now {ami.host}:{ami.port}), "
        "that Asterisk is "
        "running with manager.conf [general] enabled = yes and that port/bindaddr there "
        "match, and that no firewall is in the way"
    )


async def run_checks(config: Config) -> list[Check]:
    """Log in with ``config.ami`` and run every check; never raises for AMI trouble.

    Returns one :class:`Check` per name in :data:`CHECK_NAMES`, in that
    order. When the connection or the login fails, the checks that need a
    session are reported failed with ``skipped: needs a working login``.
    With several Asterisk servers (``[[asterisk]]``) the AMI checks run for
    each, side by side, named ``<server>: <check>``.
    """
    servers = config.asterisk_servers
    if len(servers) == 1:
        ami = await _ami_checks(config, servers[0])
    else:
        each = await asyncio.gather(*(_ami_checks(config, s) for s in servers))
        ami = [replace(c, name=f"{s.name}: {c.name}") for s, checks in zip(servers, each)
               for c in checks]
    return [*ami, await ari_check(config), await store_check(config)]


def _setting(ami: AMIConfig, key: str) -> str:
    """How the config names one of this server's settings, for a fix."""
    return f"ami.{key}" if ami.name == DEFAULT_NODE else f"{key} of [[asterisk]] {ami.name!r}"


async def store_check(config: Config) -> Check:
    """Where the state lives; on PostgreSQL: reachable, schema, and the HA group."""
    if not config.db_url.value:
        where = config.db if os.path.exists(config.db) else \
            f"{config.db} (made at the daemon's first start)"
        note = "; [ha] needs [store] url (PostgreSQL)" if config.ha.enabled else ""
        return Check(CHECK_STORE, not config.ha.enabled, f"SQLite {where}{note}",
                     "set [store] url = \"postgresql://...\" or switch [ha] off"
                     if config.ha.enabled else "")
    import asyncpg

    from astpresence.cluster.ha import GONE_AFTER
    from astpresence.store.postgres import safe_dsn

    url = safe_dsn(config.db_url.value)
    try:
        conn = await asyncpg.connect(config.db_url.value, timeout=5)
    except (OSError, asyncpg.PostgresError, ValueError, TimeoutError) as exc:
        return Check(CHECK_STORE, False, f"PostgreSQL at {url} unreachable: {exc}",
                     "check [store] url (host, port, database, user), that PostgreSQL "
                     "listens there and that pg_hba.conf lets this host in")
    try:
        try:
            version = await conn.fetchval("SELECT version FROM astpresence_schema")
        except asyncpg.UndefinedTableError:
            version = None
        nodes = []
        if config.ha.enabled and version is not None:
            now = datetime.now(UTC)
            for row in await conn.fetch("SELECT value FROM meta WHERE key LIKE 'ha_node:%'"):
                try:
                    info = json.loads(row[0])
                    age = (now - datetime.fromisoformat(info["seen"])).total_seconds()
                except (ValueError, KeyError, TypeError):
                    continue
                if age <= GONE_AFTER:
                    nodes.append(f"{clip(str(info.get('node')), 60)} ({info.get('role')}, "
                                 f"seen {age:.0f} s ago)")
    finally:
        await conn.close()
    schema = f"schema version {version}" if version is not None else \
        "empty (the daemon creates the tables at its first start)"
    detail = f"PostgreSQL at {url}: {schema}"
    if config.ha.enabled:
        detail += "; HA group: " + (", ".join(sorted(nodes)) or "no daemon running")
    return Check(CHECK_STORE, True, detail)


async def ari_check(config: Config) -> Check:
    """With ``mirror_via = "ari"``: does ARI answer, with these credentials?

    On Asterisk 22 ``res_ari`` needs ``res_websocket_client`` and
    ``res_ari_model``; without them every ARI URL is a 404 (docs/asterisk.md,
    "ARI"), so a 404 here names those modules.
    """
    if not (config.rules.mirror and config.rules.mirror_via == "ari"):
        return Check(CHECK_ARI, True, "skipped: not used (the mirror goes through AMI)")
    ari = config.ari
    url = ari.url.rstrip("/") + "/asterisk/info"
    headers = {"Authorization": basic_auth(ari.username, ari.password.value)}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            async with http.get(url, headers=headers) as resp:
                status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return Check(CHECK_ARI, False, f"{ari.url} unreachable: {exc or type(exc).__name__}",
                     "check ari.url, and that http.conf enables the HTTP server "
                     "(enabled = yes, bindaddr, bindport)")
    if status == 200:
        return Check(CHECK_ARI, True, f"{ari.url} answered as {ari.username}")
    if status == 401:
        return Check(CHECK_ARI, False, f"ARI refused user {ari.username!r} (401)",
                     "make ari.username/ari.password match a user in ari.conf")
    if status == 404:
        return Check(CHECK_ARI, False, f"{url} answered 404: ARI is not loaded",
                     "load res_websocket_client.so and res_ari_model.so before res_ari.so "
                     "(Asterisk 22 needs them), and check that ari.conf has enabled = yes")
    return Check(CHECK_ARI, False, f"{url} answered {status}",
                 "check the Asterisk log for ARI errors")


async def _ami_checks(config: Config, ami: AMIConfig) -> list[Check]:
    where = f"{ami.host}:{ami.port}"
    events = _Events()
    client = AMIClient(
        ami.host, ami.port, ami.username, ami.secret.value, on_event=events,
        ping_interval=ami.ping_interval, action_timeout=ami.action_timeout,
        connect_timeout=ami.connect_timeout,
    )
    after_login = CHECK_NAMES[2:-2]  # ARI and the store are checked apart
    try:
        await client.connect()
    except AuthenticationError:
        await client.close()
        return [
            Check(CHECK_REACHABLE, True, f"{where} answered: {client.banner}"),
            Check(
                CHECK_LOGIN, False,
                f"Asterisk refused the login of user {ami.username!r}",
                f"make {_setting(ami, 'username')}/{_setting(ami, 'secret')} (or "
                f"{_secret_var(ami)}) match the "
                f"[{ami.username}] section of manager.conf and check its permit=/deny=; "
                "if astpresence is already running, manager.conf needs "
                "allowmultiplelogin = yes; then 'manager reload'",
            ),
            *_skipped(after_login),
        ]
    except AMIConnectionError as exc:
        await client.close()
        if client.banner is None:
            return [
                Check(CHECK_REACHABLE, False, str(exc), _unreachable_fix(ami)),
                Check(CHECK_LOGIN, False, "skipped: needs a reachable AMI", _FIX_LOGIN_FIRST),
                *_skipped(after_login),
            ]
        return [
            Check(CHECK_REACHABLE, True, f"{where} answered: {client.banner}"),
            Check(CHECK_LOGIN, False, str(exc),
                  "Asterisk accepted the connection but did not answer the login: check "
                  "that it is not overloaded or hung (ami.connect_timeout is "
                  f"{ami.connect_timeout:g} s)"),
            *_skipped(after_login),
        ]
    checks = [
        Check(CHECK_REACHABLE, True, f"{where} answered: {client.banner}"),
        Check(CHECK_LOGIN, True, f"logged in as {ami.username}"),
    ]
    probes = _Probes()
    try:
        await _probe_write(client, config, probes)
        probes.modules = await _check_modules(client, config, probes)
        await _list_hints(client, probes)
        await _probe_ampuser(client, probes)
        # A barrier: every event written before this answer has been handed
        # to the handler (the client dispatches in wire order).
        await _ask(client, "Ping")
        await asyncio.sleep(0)
    except (AMIConnectionError, ActionTimeout) as exc:
        why = "the AMI link was lost" if isinstance(exc, AMIConnectionError) else (
            "Asterisk stopped answering")
        return [*checks, *[
            Check(name, False, f"skipped: {why} ({exc})",
                  "run doctor again; if it keeps happening, look at the Asterisk log "
                  "(logger.conf) for manager errors or a deadlock")
            for name in after_login
        ]]
    finally:
        await client.close()
    need_read, need_write = required_permissions(config)
    findings = judge_permissions(
        need_read, need_write, probed_write=probes.write, shown=probes.shown,
        seen_read=frozenset(events.classes), fully_booted=events.fully_booted,
    )
    checks.append(_permissions_check(findings, ami.username, need_read, need_write))
    assert probes.modules is not None
    checks.append(probes.modules)
    if probes.hints is None:
        reply = probes.hints_reply
        assert reply is not None
        fix = ("ExtensionStateList needs write=call or write=reporting (see permissions)"
               if reply.denied else "check the Asterisk log for why ExtensionStateList failed")
        checks.append(Check(CHECK_USERS, False,
                            f"ExtensionStateList failed: {reply.message or 'no message'}", fix))
        checks.append(Check(CHECK_MIRROR, False, "skipped: hints could not be listed",
                            _FIX_LOGIN_FIRST))
        checks.append(Check(CHECK_FREEPBX, False, "skipped: hints could not be listed",
                            _FIX_LOGIN_FIRST))
    else:
        checks.append(users_check(probes.hints, config.users))
        checks.append(mirror_check(config, probes.hints))
        checks.append(freepbx_check(config, probes.hints, probes.ampuser))
    logger.debug("doctor: %d checks, failed: %s", len(checks),
                 ", ".join(c.name for c in checks if not c.ok) or "none")
    return checks
