"""Configuration: defaults < TOML file < environment < command line.

Parsed once into a frozen :class:`Config`. Every bad value raises
:class:`ConfigError` with a message naming the setting and where it came from.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from astpresence.sources.plugin import SourcePlugin
from astpresence.sources.registry import SOURCES
from astpresence.asterisk.settings import AMIConfig
from astpresence.domain.call_settings import parse_call_settings
from astpresence.domain.model import InvalidInput, Secret
from astpresence.domain.rules import RuleConfig


from astpresence.app.people import (
    _one_catalogue,
    _parse_presets,
    _parse_privacy,
    _parse_user,
    _statuses,
    raw_users_levels,
)
from astpresence.app.settings import (
    _bool,
    _bounded_int,
    _db_url,
    _switch,
    _url,
    Config,
    ConfigError,
    _check_keys,
    _dnd_device,
    _mailbox_pattern,
    _positive,
    _table,
    _text,
    default_db_path,
    parse_listen,
    parse_port,
)


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


#: [ami_reads] batch_ms and answers_ms at most: an event may wait this long, on top of
#: its handling.
MAX_READ_BATCH_MS = 50

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
    "limits": (None, {"max_users": _to("max_users", _bounded_int(1, 1_000_000))}),
    "ami_reads": (None, {"batch_ms": _to("ami_read_batch_ms", _bounded_int(0, MAX_READ_BATCH_MS)),
                        "answers_ms": _to("ami_answers_ms", _bounded_int(0, MAX_READ_BATCH_MS))}),
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


def _source(plugin: SourcePlugin) -> Callable[[Config, object, str], Config]:
    """A source's own key (sources/plugin.py): its parser makes its settings."""
    def parse(cfg: Config, raw: object, where: str) -> Config:
        try:
            settings = plugin.parse(raw, where)
        except InvalidInput as exc:
            raise ConfigError(str(exc)) from None
        return replace(cfg, sources={**cfg.sources, plugin.name: settings})
    return parse


#: The sources' keys in [limits]: key -> its plug-in.
_SOURCE_LIMITS = {key: plugin for plugin in SOURCES for key in plugin.limits}


def _limits(cfg: Config, raw: object, where: str) -> Config:
    """[limits]: the core's keys, and those the sources add."""
    table = _table(raw, f"{where} [limits]")
    _check_keys(table, set(SECTIONS["limits"][1]) | set(_SOURCE_LIMITS), f"{where} [limits]")
    for key, value in table.items():
        what = f"{where} limits.{key}"
        plugin = _SOURCE_LIMITS.get(key)
        if plugin is None:
            cfg = _set(cfg, "limits", key, value, what)
            continue
        try:
            settings = plugin.limits[key](cfg.sources.get(plugin.name, plugin.default),
                                          value, what)
        except InvalidInput as exc:
            raise ConfigError(str(exc)) from None
        cfg = replace(cfg, sources={**cfg.sources, plugin.name: settings})
    return cfg


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
    # A source's own key first: [limits] may refine its settings.
    **{plugin.name: _source(plugin) for plugin in SOURCES},
    **{section: _flat(section) for section in SECTIONS}, "limits": _limits,
    "asterisk": _asterisk_nodes, "users": _users, "rules": _rules,
    "presets": _presets, "statuses": _statuses, "cli": _cli,
    "privacy": _later, "groups": _later, "calls": _later,
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
    cfg = _one_catalogue(cfg, where)
    if "calls" in data:  # after the catalogue: a rule may name a status
        try:
            cfg = replace(cfg, calls=parse_call_settings(
                data["calls"], [s.id for s in cfg.statuses], f"{where} [calls]"))
        except InvalidInput as exc:
            raise ConfigError(str(exc)) from None
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
