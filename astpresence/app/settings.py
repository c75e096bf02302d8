"""The configuration's values: one frozen dataclass per section, and the parsers of
single values (ports, addresses, users, presence levels, presets). app/config.py reads
them from the file, the environment and the flags.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from astpresence.web.auth import Level, Privacy
from astpresence.engine.cards import DEFAULT_MAILBOX, check_mailbox
from astpresence.asterisk.settings import AMIConfig as AMIConfig
from astpresence.domain.model import Secret as Secret
from astpresence.domain.model import (
    InvalidInput,
    Presence,
    parse_presence,
    validate_user_id,
)
from astpresence.domain.rules import DEFAULT_RULES, RuleConfig
from astpresence.domain.records import UserRecord
from astpresence.domain.call_settings import CallSettings
from astpresence.domain.statuses import Status, check_catalogue, parse_status
from astpresence.engine.users import DEFAULT_MAX_USERS


class ConfigError(ValueError):
    """A configuration value is wrong; the message says which and why."""


@dataclass(frozen=True)
class AriConfig:
    url: str = ""
    username: str = ""
    password: Secret = Secret("")


#: The database of a daemon run as root (a system service).
SYSTEM_DB = "/var/lib/astpresence/astpresence.db"


def default_db_path(env: Mapping[str, str] | None = None) -> str:
    """Where the database is when nothing says otherwise; never the working directory.

    As a systemd service: ``$STATE_DIRECTORY/astpresence.db``. Run as root:
    :data:`SYSTEM_DB`. Otherwise the user's state directory
    (``$XDG_STATE_HOME/astpresence``, else ``~/.local/state/astpresence``), so a
    token created in one directory is found by a daemon started in another.
    """
    env = os.environ if env is None else env
    if env.get("STATE_DIRECTORY"):  # systemd's StateDirectory= (the unit in kit/)
        return os.path.join(env["STATE_DIRECTORY"].split(":")[0], "astpresence.db")
    if os.geteuid() == 0:
        return SYSTEM_DB
    home = env.get("HOME") or os.path.expanduser("~")
    state = env.get("XDG_STATE_HOME") or os.path.join(home, ".local", "state")
    return os.path.join(os.path.abspath(state), "astpresence", "astpresence.db")


#: [ami_reads] answers_ms when several Asterisk servers are followed and the file
#: does not say: each change is then written to every other server and answered
#: by each, and reading those answers in batches took a sixth of the CPU per change
#: off (bench/README.md, scenario 7). With one server an event that came with the
#: answers would wait too, for little gain: 0 there.
AUTO_ANSWERS_MS = 4

#: FreePBX's DND device per user (docs/asterisk.md, "FreePBX conventions").
FREEPBX_DND_DEVICE = "Custom:DND{user}"


@dataclass(frozen=True)
class FreepbxConfig:
    #: Pattern of the DND device, ``{user}`` standing for the user id; "" = off.
    dnd_device: str = FREEPBX_DND_DEVICE
    #: dnd set through astpresence also switches FreePBX's DND (astdb and device).
    dnd_sync: bool = False


def _dnd_device(raw: object, what: str) -> str:
    text = _text(raw, what, allow_empty=True)
    if text and (text.count("{user}") != 1 or any(c in text for c in "&,() ")):
        raise ConfigError(f"{what}: expected a device name with {{user}} once, like "
                          f"{FREEPBX_DND_DEVICE!r}, or \"\" to switch it off; got {text!r}")
    return text


@dataclass(frozen=True)
class HaConfig:
    #: An HA group of daemons on one PostgreSQL database (ha.py, relay.py).
    enabled: bool = False
    #: This node's name in the group; "" = host name and API port.
    node: str = ""


@dataclass(frozen=True)
class CardsConfig:
    #: Read display names from Asterisk (AMPUSER cidname, endpoint caller ID).
    names: bool = True
    #: Each user's voicemail box, ``{extension}`` standing for the extension; "" = none.
    mailbox: str = DEFAULT_MAILBOX


def _mailbox(raw: object, what: str) -> str:
    try:
        return check_mailbox(raw, what)
    except InvalidInput as exc:
        raise ConfigError(str(exc)) from None


def _mailbox_pattern(raw: object, what: str) -> str:
    text = _text(raw, what, allow_empty=True)
    try:
        if text and text.count("{extension}") == 1:
            check_mailbox(text.replace("{extension}", "2000"))
            return text
    except InvalidInput:
        pass
    if not text:
        return text
    raise ConfigError(f"{what}: expected a mailbox with {{extension}} once, like "
                      f"{DEFAULT_MAILBOX!r}, or \"\" for no voicemail counts; got {text!r}")


@dataclass(frozen=True)
class Config:
    #: The single Asterisk server (``[ami]``); unused when :attr:`nodes` is set.
    ami: AMIConfig = AMIConfig()
    #: Several Asterisk servers (``[[asterisk]]`` entries), in the file's order.
    nodes: tuple[AMIConfig, ...] = ()
    #: The SQLite file, absolute once loaded (:func:`load_config`).
    db: str = field(default_factory=default_db_path)
    #: PostgreSQL instead of SQLite when set (``[store] url``); may hold a password.
    db_url: Secret = Secret("")
    listen_host: str = "127.0.0.1"
    listen_port: int = 8780
    users: tuple[UserRecord, ...] = ()
    rules: RuleConfig = DEFAULT_RULES
    #: Feature code presets: digit N of *37N -> presence.
    presets: Mapping[int, Presence] = field(default_factory=dict)
    #: The named statuses ([[statuses]], and each [[presets]] entry as one).
    statuses: tuple[Status, ...] = ()
    privacy: Privacy = Privacy()
    ari: AriConfig = AriConfig()
    max_websockets: int = 2000
    #: HTTP connections at once, in all and from one address (admission.py).
    max_connections: int = 4096
    max_connections_per_address: int = 512
    #: Seconds an idle HTTP connection, or a new one without a whole request, is kept.
    idle_timeout: float = 10.0
    #: Changes one API token may make: per second on average, and at once.
    writes_per_second: float = 20.0
    write_burst: int = 40
    freepbx: FreepbxConfig = FreepbxConfig()
    cards: CardsConfig = CardsConfig()
    #: Call handling per person and status ([calls]; off without the section).
    calls: CallSettings = CallSettings()
    ha: HaConfig = HaConfig()
    #: Users found in hints, at most (a flood of made-up presentities stops there).
    max_users: int = DEFAULT_MAX_USERS
    #: History kept: rows younger than this many days, and each user's newest rows.
    history_keep_days: int = 365
    history_keep_rows: int = 10_000
    #: [ami_reads] batch_ms: while events keep coming, every AMI link is read at most
    #: once in this many milliseconds (asterisk/ami/gate.py); 0 reads at once.
    ami_read_batch_ms: int = 0
    #: [ami_reads] answers_ms: after a write whose answers nobody awaits soon, that
    #: link is read at most once in this many milliseconds (asterisk/ami/client.py);
    #: None: :data:`AUTO_ANSWERS_MS` with several servers, 0 (at once) with one.
    ami_answers_ms: int | None = None
    #: Each source plug-in's settings by name (sources/registry.py); a source not
    #: named here has its plug-in's defaults.
    sources: Mapping[str, Any] = field(default_factory=dict)
    source: str = "defaults"  # where the file came from, for `status`

    @property
    def asterisk_servers(self) -> tuple[AMIConfig, ...]:
        """Every Asterisk server to follow: the ``[[asterisk]]`` entries, else ``[ami]``."""
        return self.nodes or (self.ami,)

    @property
    def answers_ms(self) -> int:
        """[ami_reads] answers_ms as it applies (the default depends on the servers)."""
        if self.ami_answers_ms is not None:
            return self.ami_answers_ms
        return AUTO_ANSWERS_MS if len(self.asterisk_servers) > 1 else 0

    @property
    def listen(self) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"




def parse_port(raw: object, what: str) -> int:
    if isinstance(raw, bool):
        raise ConfigError(f"{what}: expected a port number 1-65535, got {raw!r}")
    try:
        port = int(str(raw))
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: expected a port number 1-65535, got {raw!r}") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"{what}: port {port} is outside 1-65535")
    return port


def parse_listen(raw: object, what: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``."""
    if not isinstance(raw, str) or ":" not in raw:
        raise ConfigError(f"{what}: expected HOST:PORT, got {raw!r}")
    if raw.startswith("["):
        host, sep, port = raw[1:].partition("]:")
        if not sep:
            raise ConfigError(f"{what}: expected [IPV6]:PORT, got {raw!r}")
    else:
        host, _, port = raw.rpartition(":")
    if not host:
        raise ConfigError(f"{what}: missing host in {raw!r}")
    return host, parse_port(port, what)


def _text(raw: object, what: str, *, allow_empty: bool = False) -> str:
    if not isinstance(raw, str) or (not allow_empty and not raw):
        raise ConfigError(f"{what}: expected a non-empty string, got {raw!r}")
    if any(c in raw for c in "\r\n\0"):
        raise ConfigError(f"{what}: must not contain CR, LF or NUL")
    return raw


def _positive(raw: object, what: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or raw <= 0:
        raise ConfigError(f"{what}: expected a positive number of seconds, got {raw!r}")
    return float(raw)


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(allowed))}"
        )


def _table(raw: object, where: str) -> Mapping[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table")
    return raw


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


def _bounded_int(low: int, high: int) -> Callable[[object, str], int]:
    def parse(raw: object, what: str) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
            raise ConfigError(f"{what}: expected {low}-{high}, got {raw!r}")
        return raw
    return parse


def _switch(raw: object, what: str) -> bool:
    """true/false in the file; also 1/0, yes/no, true/false from the environment."""
    if isinstance(raw, str):
        words = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
        if raw.strip().lower() in words:
            return words[raw.strip().lower()]
    return _bool(raw, what)


def _db_url(raw: object, what: str) -> Secret:
    text = _text(raw, what, allow_empty=True)
    if text and not text.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"{what}: expected postgresql://user@host[:port]/database "
                          "(or \"\" for SQLite)")
    return Secret(text)


def _bool(raw: object, what: str) -> bool:
    if not isinstance(raw, bool):
        raise ConfigError(f"{what}: expected true or false, got {raw!r}")
    return raw


def _url(raw: object, what: str) -> str:
    url = _text(raw, what)
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{what}: expected http(s)://host:port/ari, got {url!r}")
    return url


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
