"""Configuration: defaults < TOML file < environment < command line.

Parsed once into a frozen :class:`Config`. Every bad value raises
:class:`ConfigError` with a message naming the setting and where it came from.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .auth import Level, Privacy
from .model import InvalidInput, Presence, parse_presence, validate_user_id
from .rules import DEFAULT_RULES, RuleConfig
from .records import UserRecord
from .users import DEFAULT_MAX_USERS


class ConfigError(ValueError):
    """A configuration value is wrong; the message says which and why."""


@dataclass(frozen=True)
class Secret:
    """A string that never shows in logs, reprs or tracebacks."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('********')" if self.value else "Secret('')"

    __str__ = __repr__


@dataclass(frozen=True)
class AMIConfig:
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "astpresence"
    secret: Secret = Secret("")
    ping_interval: float = 10.0
    action_timeout: float = 10.0
    connect_timeout: float = 10.0


@dataclass(frozen=True)
class AriConfig:
    url: str = ""
    username: str = ""
    password: Secret = Secret("")


#: The database of a daemon run as root (a system service).
SYSTEM_DB = "/var/lib/astpresence/astpresence.db"


def default_db_path(env: Mapping[str, str] | None = None) -> str:
    """Where the database is when nothing says otherwise; never the working directory.

    Run as root: :data:`SYSTEM_DB`. Otherwise the user's state directory
    (``$XDG_STATE_HOME/astpresence``, else ``~/.local/state/astpresence``), so a
    token created in one directory is found by a daemon started in another.
    """
    env = os.environ if env is None else env
    if os.geteuid() == 0:
        return SYSTEM_DB
    home = env.get("HOME") or os.path.expanduser("~")
    state = env.get("XDG_STATE_HOME") or os.path.join(home, ".local", "state")
    return os.path.join(os.path.abspath(state), "astpresence", "astpresence.db")


@dataclass(frozen=True)
class Config:
    ami: AMIConfig = AMIConfig()
    #: The SQLite file, absolute once loaded (:func:`load_config`).
    db: str = field(default_factory=default_db_path)
    listen_host: str = "127.0.0.1"
    listen_port: int = 8780
    users: tuple[UserRecord, ...] = ()
    rules: RuleConfig = DEFAULT_RULES
    #: Feature code presets: digit N of *37N -> presence.
    presets: Mapping[int, Presence] = field(default_factory=dict)
    privacy: Privacy = Privacy()
    ari: AriConfig = AriConfig()
    max_websockets: int = 2000
    #: Users found in hints, at most (a flood of made-up presentities stops there).
    max_users: int = DEFAULT_MAX_USERS
    source: str = "defaults"  # where the file came from, for `status`

    @property
    def listen(self) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"


ENV_VARS = {
    "ASTPRESENCE_AMI_HOST": "ami_host",
    "ASTPRESENCE_AMI_PORT": "ami_port",
    "ASTPRESENCE_AMI_USERNAME": "ami_username",
    "ASTPRESENCE_AMI_SECRET": "ami_secret",
    "ASTPRESENCE_DB": "db",
    "ASTPRESENCE_LISTEN": "listen",
}


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
    _check_keys(table, {"id", "name", "devices", "extension", "context", "visibility"}, where)
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


def _from_file(path: Path, cfg: Config) -> Config:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    where = str(path)
    _check_keys(data, {"ami", "store", "api", "users", "rules", "presets", "privacy",
                       "groups", "cli", "ari", "limits"}, where)
    ami = cfg.ami
    if "ami" in data:
        t = _table(data["ami"], f"{where} [ami]")
        _check_keys(
            t,
            {"host", "port", "username", "secret", "ping_interval", "action_timeout",
             "connect_timeout"},
            f"{where} [ami]",
        )
        if "host" in t:
            ami = replace(ami, host=_text(t["host"], f"{where} ami.host"))
        if "port" in t:
            ami = replace(ami, port=parse_port(t["port"], f"{where} ami.port"))
        if "username" in t:
            ami = replace(ami, username=_text(t["username"], f"{where} ami.username"))
        if "secret" in t:
            ami = replace(ami, secret=Secret(_text(t["secret"], f"{where} ami.secret",
                                                   allow_empty=True)))
        if "ping_interval" in t:
            ami = replace(ami, ping_interval=_positive(t["ping_interval"],
                                                       f"{where} ami.ping_interval"))
        if "action_timeout" in t:
            ami = replace(ami, action_timeout=_positive(t["action_timeout"],
                                                        f"{where} ami.action_timeout"))
        if "connect_timeout" in t:
            ami = replace(ami, connect_timeout=_positive(t["connect_timeout"],
                                                         f"{where} ami.connect_timeout"))
    cfg = replace(cfg, ami=ami, source=where)
    if "store" in data:
        t = _table(data["store"], f"{where} [store]")
        _check_keys(t, {"path"}, f"{where} [store]")
        if "path" in t:
            cfg = replace(cfg, db=_text(t["path"], f"{where} store.path"))
    if "api" in data:
        t = _table(data["api"], f"{where} [api]")
        _check_keys(t, {"listen", "max_websockets"}, f"{where} [api]")
        if "listen" in t:
            host, port = parse_listen(t["listen"], f"{where} api.listen")
            cfg = replace(cfg, listen_host=host, listen_port=port)
        if "max_websockets" in t:
            n = t["max_websockets"]
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 100_000:
                raise ConfigError(f"{where} api.max_websockets: expected 1-100000, got {n!r}")
            cfg = replace(cfg, max_websockets=n)
    if "limits" in data:
        t = _table(data["limits"], f"{where} [limits]")
        _check_keys(t, {"max_users"}, f"{where} [limits]")
        if "max_users" in t:
            n = t["max_users"]
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 1_000_000:
                raise ConfigError(f"{where} limits.max_users: expected 1-1000000, got {n!r}")
            cfg = replace(cfg, max_users=n)
    if "cli" in data:
        # Read by the CLI (token); checked here so a typo is caught once.
        cli_token(data, where)
    if "users" in data:
        raw_users = data["users"]
        if not isinstance(raw_users, list):
            raise ConfigError(f"{where}: 'users' must be an array of tables ([[users]])")
        users = tuple(_parse_user(u, f"{where} users[{i}]") for i, u in enumerate(raw_users))
        ids = [u.id for u in users]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ConfigError(f"{where}: user id(s) defined twice: {', '.join(dupes)}")
        cfg = replace(cfg, users=users)
    cfg = replace(cfg, privacy=_parse_privacy(data, raw_users_levels(data, where), where))
    if "presets" in data:
        cfg = replace(cfg, presets=_parse_presets(data["presets"], where))
    if "rules" in data:
        try:
            rules = RuleConfig.from_mapping(_table(data["rules"], f"{where} [rules]"))
        except InvalidInput as exc:
            raise ConfigError(f"{where}: {exc}") from None
        cfg = replace(cfg, rules=rules)
    if "ari" in data:
        t = _table(data["ari"], f"{where} [ari]")
        _check_keys(t, {"url", "username", "password"}, f"{where} [ari]")
        url = _text(t.get("url", ""), f"{where} ari.url")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{where} ari.url: expected http(s)://host:port/ari, got {url!r}")
        cfg = replace(cfg, ari=AriConfig(
            url, _text(t.get("username", ""), f"{where} ari.username"),
            Secret(_text(t.get("password", ""), f"{where} ari.password", allow_empty=True))))
    if cfg.rules.mirror and cfg.rules.mirror_via == "ari" and not cfg.ari.url:
        raise ConfigError(f"{where}: rules.mirror_via = \"ari\" needs an [ari] section "
                          "with url, username and password")
    return cfg


def cli_token(data: Mapping[str, Any], where: str) -> str | None:
    """``[cli] token`` of a parsed config file: a string, or None when absent."""
    if "cli" not in data:
        return None
    table = _table(data["cli"], f"{where} [cli]")
    _check_keys(table, {"token"}, f"{where} [cli]")
    if "token" not in table:
        return None
    return _text(table["token"], f"{where} cli.token")


def _apply(cfg: Config, key: str, raw: str, what: str) -> Config:
    if key == "ami_host":
        return replace(cfg, ami=replace(cfg.ami, host=_text(raw, what)))
    if key == "ami_port":
        return replace(cfg, ami=replace(cfg.ami, port=parse_port(raw, what)))
    if key == "ami_username":
        return replace(cfg, ami=replace(cfg.ami, username=_text(raw, what)))
    if key == "ami_secret":
        return replace(cfg, ami=replace(cfg.ami, secret=Secret(_text(raw, what, allow_empty=True))))
    if key == "db":
        return replace(cfg, db=_text(raw, what))
    if key == "listen":
        host, port = parse_listen(raw, what)
        return replace(cfg, listen_host=host, listen_port=port)
    raise AssertionError(key)


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, str | int | None] | None = None,
) -> Config:
    """Build the configuration from its layers.

    ``overrides`` are command-line values keyed like ``ENV_VARS``' values
    (``ami_host``, ``ami_port``...); ``None`` means "not given".
    """
    env = os.environ if env is None else env
    cfg = Config(db=default_db_path(env))
    if path is not None:
        cfg = _from_file(Path(path), cfg)
    for var, key in ENV_VARS.items():
        if var in env:
            cfg = _apply(cfg, key, env[var], f"environment variable {var}")
    for key, value in (overrides or {}).items():
        if value is not None:
            cfg = _apply(cfg, key, str(value), f"--{key.replace('_', '-')}")
    # Absolute, so every message names the file really used.
    return replace(cfg, db=os.path.abspath(os.path.expanduser(cfg.db)))
