"""Who the users are and what they may see, as the configuration file says: users,
visibility levels and groups, the *37N presets and the status catalogue. The
parsers of app/config.py's people tables (settings.py holds the single values).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from astpresence.app.settings import (
    Config,
    ConfigError,
    _check_keys,
    _mailbox,
    _table,
    _text,
)
from astpresence.domain.model import InvalidInput, Presence, parse_presence, validate_user_id
from astpresence.domain.records import UserRecord
from astpresence.domain.statuses import Status, check_catalogue, parse_status
from astpresence.web.auth import Level, Privacy


def _parse_user(raw: object, where: str) -> UserRecord:
    table = _table(raw, where)
    _check_keys(table, {"id", "name", "devices", "extension", "context", "visibility",
                        "mailbox"}, where)
    if "id" not in table:
        raise ConfigError(f"{where}: missing 'id'")
    try:
        uid = validate_user_id(table["id"])
    except InvalidInput as exc:
        raise ConfigError(f"{where}: {exc}") from None
    devices = table.get("devices", [])
    if not isinstance(devices, list) or not all(
        isinstance(d, str) and d and "&" not in d and "," not in d for d in devices
    ):
        raise ConfigError(f"{where}: 'devices' must be a list of device names like 'PJSIP/2000'")
    return UserRecord(
        id=uid,
        name=_text(table.get("name", ""), f"{where}.name", allow_empty=True),
        extension=_text(table.get("extension", ""), f"{where}.extension", allow_empty=True),
        context=_text(table.get("context", ""), f"{where}.context", allow_empty=True),
        devices=tuple(devices),
        origin="config",
        mailbox=_mailbox(table["mailbox"], f"{where}.mailbox") if "mailbox" in table else "",
    )


def _level(raw: object, what: str) -> Level:
    try:
        return Level(raw)
    except ValueError:
        raise ConfigError(
            f"{what}: expected one of {', '.join(lv.value for lv in Level)}, got {raw!r}"
        ) from None


def raw_users_levels(data: Mapping[str, Any], where: str) -> dict[str, Level]:
    levels: dict[str, Level] = {}
    for i, item in enumerate(data.get("users") or []):
        if isinstance(item, dict) and "visibility" in item and isinstance(item.get("id"), str):
            levels[item["id"]] = _level(item["visibility"], f"{where} users[{i}].visibility")
    return levels


def _parse_privacy(data: Mapping[str, Any], levels: dict[str, Level], where: str) -> Privacy:
    default = Level.TEAM
    if "privacy" in data:
        t = _table(data["privacy"], f"{where} [privacy]")
        _check_keys(t, {"default"}, f"{where} [privacy]")
        if "default" in t:
            default = _level(t["default"], f"{where} privacy.default")
    groups: dict[str, frozenset[str]] = {}
    if "groups" in data:
        for name, members in _table(data["groups"], f"{where} [groups]").items():
            what = f"{where} groups.{name}"
            if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
                raise ConfigError(f"{what}: expected a list of user ids")
            try:
                groups[name] = frozenset(validate_user_id(m) for m in members)
            except InvalidInput as exc:
                raise ConfigError(f"{what}: {exc}") from None
    return Privacy(default, levels, groups)


def _parse_presets(raw: object, where: str) -> dict[int, Presence]:
    """``[[presets]]`` entries: ``digit`` 0-9 (default: position), state, subtype, message."""
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: 'presets' must be an array of tables ([[presets]])")
    out: dict[int, Presence] = {}
    for i, item in enumerate(raw):
        what = f"{where} presets[{i}]"
        table = _table(item, what)
        _check_keys(table, {"digit", "state", "subtype", "message"}, what)
        digit = table.get("digit", i)
        if isinstance(digit, bool) or not isinstance(digit, int) or not 0 <= digit <= 9:
            raise ConfigError(f"{what}: 'digit' must be 0-9 (the N of *37N), got {digit!r}")
        if digit in out:
            raise ConfigError(f"{what}: digit {digit} is used twice")
        if "state" not in table:
            raise ConfigError(f"{what}: missing 'state'")
        try:
            out[digit] = parse_presence(table["state"], table.get("subtype"),
                                        table.get("message"))
        except InvalidInput as exc:
            raise ConfigError(f"{what}: {exc}") from None
    return out


def _statuses(cfg: Config, raw: object, where: str) -> Config:
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: 'statuses' must be an array of tables ([[statuses]])")
    try:
        found = [parse_status(_table(t, f"{where} statuses[{i}]"), f"{where} statuses[{i}]")
                 for i, t in enumerate(raw)]
        return replace(cfg, statuses=check_catalogue(found, f"{where} [[statuses]]"))
    except InvalidInput as exc:
        raise ConfigError(str(exc)) from None


def _one_catalogue(cfg: Config, where: str) -> Config:
    """[[presets]] entries join the catalogue (a status each, "preset-N"), and every
    status with a digit is a *37N preset: one list for the API, the board, the CLI
    and the dialplan kit."""
    statuses = list(cfg.statuses)
    for digit, presence in sorted(cfg.presets.items()):
        owner = next((s for s in statuses if s.digit == digit), None)
        if owner is not None:
            raise ConfigError(f"{where}: digit {digit} is both a [[presets]] entry and "
                              f"status {owner.id!r}; keep one")
        statuses.append(Status(f"preset-{digit}", presence.message or presence.state.value,
                               presence, digit=digit))
    presets = {s.digit: s.presence for s in statuses if s.digit is not None}
    return replace(cfg, statuses=tuple(statuses), presets=presets)
