"""Configuration: defaults < TOML file < environment < command line.

Parsed once into a frozen :class:`Config`. Every bad value raises
:class:`ConfigError` with a message naming the setting and where it came from.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import tomllib
from datetime import timedelta
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from astpresence.web.auth import Level, Privacy
from astpresence.sources.calendars.fetch import safe_url
from astpresence.sources.calendars.settings import FeedConfig, parse_feed
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
    ha: HaConfig = HaConfig()
    calendars: tuple[FeedConfig, ...] = ()
    #: Users found in hints, at most (a flood of made-up presentities stops there).
    max_users: int = DEFAULT_MAX_USERS
    #: History kept: rows younger than this many days, and each user's newest rows.
    history_keep_days: int = 365
    history_keep_rows: int = 10_000
    #: One calendar feed's parse may take this long before its worker is killed.
    calendar_parse_seconds: int = 30
    source: str = "defaults"  # where the file came from, for `status`

    @property
    def asterisk_servers(self) -> tuple[AMIConfig, ...]:
        """Every Asterisk server to follow: the ``[[asterisk]]`` entries, else ``[ami]``."""
        return self.nodes or (self.ami,)

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


# -- the tables: one grammar for the file, the environment and the flags -----------

#: A key's parser: (raw value, "where" for messages) -> the fields it sets.
FieldParser = Callable[[object, str], dict[str, Any]]


def _to(attr: str, parse: Callable[[object, str], Any]) -> FieldParser:
    return lambda raw, what: {attr: parse(raw, what)}


def _secret(raw: object, what: str) -> Secret:
    return Secret(_text(raw, what, allow_empty=True))


def _listen(raw: object, what: str) -> dict[str, Any]:
    host, port = parse_listen(raw, what)
    return {"listen_host": host, "listen_port": port}


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


#: Flat sections: TOML key -> parser, and which part of :class:`Config` they fill
#: (``None``: Config itself).
SECTIONS: dict[str, tuple[str | None, dict[str, FieldParser]]] = {
    "ami": ("ami", {
        "host": _to("host", _text), "port": _to("port", parse_port),
        "username": _to("username", _text), "secret": _to("secret", _secret),
        "ping_interval": _to("ping_interval", _positive),
        "action_timeout": _to("action_timeout", _positive),
        "connect_timeout": _to("connect_timeout", _positive),
    }),
    "store": (None, {"path": _to("db", _text), "url": _to("db_url", _db_url)}),
    "api": (None, {"listen": _listen,
                   "max_websockets": _to("max_websockets", _bounded_int(1, 100_000)),
                   "writes_per_second": _to("writes_per_second", _positive),
                   "max_connections": _to("max_connections", _bounded_int(16, 1_000_000)),
                   "max_connections_per_address": _to("max_connections_per_address",
                                                      _bounded_int(1, 1_000_000)),
                   "idle_timeout": _to("idle_timeout", _positive),
                   "write_burst": _to("write_burst", _bounded_int(1, 100_000))}),
    "limits": (None, {"max_users": _to("max_users", _bounded_int(1, 1_000_000)),
                      "calendar_parse_seconds": _to("calendar_parse_seconds",
                                                    _bounded_int(1, 600))}),
    "ari": ("ari", {"url": _to("url", _url), "username": _to("username", _text),
                    "password": _to("password", _secret)}),
    "freepbx": ("freepbx", {"dnd_device": _to("dnd_device", _dnd_device),
                            "dnd_sync": _to("dnd_sync", _bool)}),
    "history": (None, {"keep_days": _to("history_keep_days", _bounded_int(1, 36_500)),
                       "keep_rows": _to("history_keep_rows", _bounded_int(10, 10_000_000))}),
    "ha": ("ha", {"enabled": _to("enabled", _switch), "node": _to("node", _text)}),
    "cards": ("cards", {"names": _to("names", _bool),
                        "mailbox": _to("mailbox", _mailbox_pattern)}),
}

#: Environment variables and command-line flags: the same keys as the file.
ENV_VARS = {
    "ASTPRESENCE_AMI_HOST": ("ami", "host"),
    "ASTPRESENCE_AMI_PORT": ("ami", "port"),
    "ASTPRESENCE_AMI_USERNAME": ("ami", "username"),
    "ASTPRESENCE_AMI_SECRET": ("ami", "secret"),
    "ASTPRESENCE_DB": ("store", "path"),
    "ASTPRESENCE_DB_URL": ("store", "url"),
    "ASTPRESENCE_HA": ("ha", "enabled"),
    "ASTPRESENCE_HA_NODE": ("ha", "node"),
    "ASTPRESENCE_LISTEN": ("api", "listen"),
}
FLAGS = {"ami_host": ("ami", "host"), "ami_port": ("ami", "port"),
         "ami_username": ("ami", "username"), "ami_secret": ("ami", "secret"),
         "db": ("store", "path"), "listen": ("api", "listen")}


def _set(cfg: Config, section: str, key: str, raw: object, what: str) -> Config:
    """Apply one value of a flat section, wherever it came from."""
    part, fields = SECTIONS[section]
    values = fields[key](raw, what)
    if part is None:
        return replace(cfg, **values)
    return replace(cfg, **{part: replace(getattr(cfg, part), **values)})


def _flat(section: str) -> Callable[[Config, object, str], Config]:
    def parse(cfg: Config, raw: object, where: str) -> Config:
        table = _table(raw, f"{where} [{section}]")
        _check_keys(table, set(SECTIONS[section][1]), f"{where} [{section}]")
        for key, value in table.items():
            cfg = _set(cfg, section, key, value, f"{where} {section}.{key}")
        return cfg
    return parse


#: An Asterisk server's name: it appears in logs, metrics labels and the store.
NODE_NAME_MAX = 32


def _node_name(raw: object, what: str) -> str:
    text = _text(raw, what)
    if len(text) > NODE_NAME_MAX or not all(c.isascii() and (c.isalnum() or c in "-_")
                                             for c in text):
        raise ConfigError(f"{what}: expected up to {NODE_NAME_MAX} letters, digits, '-' or "
                          f"'_', got {text!r}")
    return text


def _asterisk_nodes(cfg: Config, raw: object, where: str) -> Config:
    """``[[asterisk]]``: several Asterisk servers, each with the keys of ``[ami]`` and a name."""
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: 'asterisk' must be a non-empty array of tables "
                          "([[asterisk]] with name, host, port, username, secret)")
    _, fields = SECTIONS["ami"]
    nodes: list[AMIConfig] = []
    for i, item in enumerate(raw):
        what = f"{where} asterisk[{i}]"
        table = _table(item, what)
        _check_keys(table, {"name", *fields}, what)
        for key in ("name", "host"):
            if key not in table:
                raise ConfigError(f"{what}: missing '{key}'")
        node = AMIConfig(name=_node_name(table["name"], f"{what}.name"))
        for key, value in table.items():
            if key != "name":
                node = replace(node, **fields[key](value, f"{what}.{key}"))
        for other in nodes:
            if other.name == node.name:
                raise ConfigError(f"{what}: the name {node.name!r} is used twice")
            if (other.host, other.port) == (node.host, node.port):
                raise ConfigError(f"{what}: {node.host}:{node.port} is also {other.name!r}")
        nodes.append(node)
    return replace(cfg, nodes=tuple(nodes))


def node_secret_var(name: str) -> str:
    """The environment variable holding the AMI secret of ``[[asterisk]]`` ``name``."""
    return "ASTPRESENCE_AMI_SECRET_" + name.upper().replace("-", "_")


def _calendars(cfg: Config, raw: object, where: str) -> Config:
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: 'calendars' must be an array of tables ([[calendars]])")
    feeds = []
    for i, table in enumerate(raw):
        what = f"{where} calendars[{i}]"
        try:
            feeds.append(parse_feed(_table(table, what), what))
        except InvalidInput as exc:
            raise ConfigError(str(exc)) from None
    return replace(cfg, calendars=tuple(feeds))


def _users(cfg: Config, raw: object, where: str) -> Config:
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: 'users' must be an array of tables ([[users]])")
    users = tuple(_parse_user(u, f"{where} users[{i}]") for i, u in enumerate(raw))
    ids = [u.id for u in users]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"{where}: user id(s) defined twice: {', '.join(dupes)}")
    return replace(cfg, users=users)


def _rules(cfg: Config, raw: object, where: str) -> Config:
    try:
        return replace(cfg, rules=RuleConfig.from_mapping(_table(raw, f"{where} [rules]")))
    except InvalidInput as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _presets(cfg: Config, raw: object, where: str) -> Config:
    return replace(cfg, presets=_parse_presets(raw, where))


def _cli(cfg: Config, raw: object, where: str) -> Config:
    cli_token({"cli": raw}, where)  # read by the CLI; checked here so a typo is caught once
    return cfg


def _later(cfg: Config, raw: object, where: str) -> Config:
    return cfg  # [privacy] and [groups] need the users' levels: parsed after the others


#: Every top-level key of the file and its parser, in the order applied.
FILE_KEYS: dict[str, Callable[[Config, object, str], Config]] = {
    **{section: _flat(section) for section in SECTIONS},
    "asterisk": _asterisk_nodes, "users": _users, "calendars": _calendars, "rules": _rules,
    "presets": _presets, "cli": _cli,
    "privacy": _later, "groups": _later,
}


def _whoami() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a dynamic user without a passwd entry
        return f"uid {os.geteuid()}"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except PermissionError:
        raise ConfigError(
            f"cannot read config file {path}: permission denied for user {_whoami()}; make "
            "it readable (chmod 0644: a service runs as its own user) and keep secrets in "
            "the environment file instead") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _from_file(path: Path, cfg: Config) -> Config:
    data = _read_toml(path)
    where = str(path)
    _check_keys(data, set(FILE_KEYS), where)
    if "ami" in data and "asterisk" in data:
        raise ConfigError(f"{where}: [ami] and [[asterisk]] both set; use [ami] for one "
                          "Asterisk server or [[asterisk]] entries for several")
    cfg = replace(cfg, source=where)
    for key, parse in FILE_KEYS.items():
        if key in data:
            cfg = parse(cfg, data[key], where)
    cfg = replace(cfg, privacy=_parse_privacy(data, raw_users_levels(data, where), where))
    if "ari" in data and not cfg.ari.url:
        raise ConfigError(f"{where} ari.url: expected http(s)://host:port/ari, got ''")
    _check_ari_mirror(cfg, where)
    return cfg


def _check_ari_mirror(cfg: Config, where: str) -> None:
    if not (cfg.rules.mirror and cfg.rules.mirror_via == "ari"):
        return
    if len(cfg.nodes) > 1:
        raise ConfigError(f"{where}: rules.mirror_via = \"ari\" talks to one Asterisk server; "
                          "with several [[asterisk]] entries use mirror_via = \"ami\"")
    if not cfg.ari.url:
        raise ConfigError(f"{where}: rules.mirror_via = \"ari\" needs an [ari] section "
                          "with url, username and password")


def config_json(cfg: Config) -> dict[str, Any]:
    """The effective configuration as JSON (``/v1/config``), generated from :class:`Config`.

    Every setting appears, so nothing can be forgotten here; a :class:`Secret`
    shows only whether it is set.
    """
    out = _jsonable(cfg)
    assert isinstance(out, dict)
    return out


#: Values shown other than as themselves in /v1/config, by type.
_SHOWN: tuple[tuple[type, Callable[[Any], Any]], ...] = (
    # A feed's URL often holds its secret (a "secret address"): host only.
    (FeedConfig, lambda v: _fields(replace(v, url=safe_url(v.url) if v.url else ""))),
    (Secret, lambda v: {"set": bool(v.value)}),
    (enum.Enum, lambda v: v.value),
    (timedelta, lambda v: v.total_seconds()),
    (Presence, lambda v: v.as_dict()),
)


def _fields(value: Any) -> dict[str, Any]:
    return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}


def _jsonable(value: Any) -> Any:
    for kind, show in _SHOWN:
        if isinstance(value, kind):
            return show(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _fields(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(_jsonable(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def cli_token(data: Mapping[str, Any], where: str) -> str | None:
    """``[cli] token`` of a parsed config file: a string, or None when absent."""
    if "cli" not in data:
        return None
    table = _table(data["cli"], f"{where} [cli]")
    _check_keys(table, {"token"}, f"{where} [cli]")
    if "token" not in table:
        return None
    return _text(table["token"], f"{where} cli.token")


def _single_ami_only(cfg: Config, section: str, what: str) -> None:
    if section == "ami" and cfg.nodes:
        raise ConfigError(f"{what} sets the single [ami] server, but the config file has "
                          "[[asterisk]] entries; set their values there (secrets: "
                          f"{node_secret_var('<name>')})")


#: The config read when none is named and it exists (the service's place).
SYSTEM_CONFIG = "/etc/astpresence/astpresence.toml"


def default_config_path(env: Mapping[str, str]) -> str | None:
    """``$CONFIGURATION_DIRECTORY/astpresence.toml`` (systemd's ConfigurationDirectory=)
    or :data:`SYSTEM_CONFIG`, when it exists; else None (defaults and environment)."""
    where = env.get("CONFIGURATION_DIRECTORY", "").split(":")[0]
    path = os.path.join(where, "astpresence.toml") if where else SYSTEM_CONFIG
    return path if os.path.isfile(path) else None


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, str | int | None] | None = None,
) -> Config:
    """Build the configuration from its layers.

    With no ``path``, :func:`default_config_path` is read when it exists.
    ``overrides`` are command-line values keyed like ``ENV_VARS``' values
    (:data:`FLAGS`: ``ami_host``, ``ami_port``...); ``None`` means "not given".
    """
    env = os.environ if env is None else env
    cfg = Config(db=default_db_path(env))
    if path is None:
        path = default_config_path(env)
    if path is not None:
        cfg = _from_file(Path(path), cfg)
    for var, (section, key) in ENV_VARS.items():
        if var in env:
            cfg = _set(cfg, section, key, env[var], f"environment variable {var}")
            _single_ami_only(cfg, section, f"environment variable {var}")
    for flag, value in (overrides or {}).items():
        if value is not None:
            section, key = FLAGS[flag]
            cfg = _set(cfg, section, key, str(value), f"--{flag.replace('_', '-')}")
            _single_ami_only(cfg, section, f"--{flag.replace('_', '-')}")
    nodes = []
    for node in cfg.nodes:
        var = node_secret_var(node.name)
        if var in env:
            node = replace(node, secret=_secret(env[var], f"environment variable {var}"))
        nodes.append(node)
    cfg = replace(cfg, nodes=tuple(nodes))
    # Absolute, so every message names the file really used.
    return replace(cfg, db=os.path.abspath(os.path.expanduser(cfg.db)))
