"""Users, BLF mirror devices and FreePBX's DND devices in the hints (pure).
"""

from __future__ import annotations

import logging

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from astpresence.app.settings import Config
from astpresence.domain.model import InvalidInput
from astpresence.domain.freepbx import dnd_user
from astpresence.domain.mirror import mirror_device, mirror_technology
from astpresence.domain.records import UserRecord
from astpresence.asterisk.translate import PRESENCE_PROVIDER, parse_hint, user_from_hint

from astpresence.cli.checks import CHECK_FREEPBX, CHECK_MIRROR, CHECK_USERS, Check, EXAMPLE_HINT

logger = logging.getLogger(__name__)


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
