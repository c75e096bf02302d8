"""AMI permissions: what the configuration needs and what a user has (pure).
"""

from __future__ import annotations

import logging

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from astpresence.app.settings import Config

from astpresence.cli.checks import CHECK_PERMISSIONS, Check

logger = logging.getLogger(__name__)


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
