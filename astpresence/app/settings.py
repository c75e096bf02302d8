"""The configuration's values: one frozen dataclass per section, and the parsers of
single values (ports, addresses, text, numbers). app/config.py reads them from the
file, the environment and the flags; app/people.py parses the users' tables.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from astpresence.web.auth import Privacy
from astpresence.engine.cards import DEFAULT_MAILBOX, check_mailbox
from astpresence.asterisk.settings import AMIConfig as AMIConfig
from astpresence.domain.model import Secret as Secret
from astpresence.domain.model import InvalidInput, Presence
from astpresence.domain.rules import DEFAULT_RULES, RuleConfig
from astpresence.domain.records import UserRecord
from astpresence.domain.call_settings import CallSettings
from astpresence.domain.statuses import Status
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


#: [ami_reads] batch_ms and answers_ms when several Asterisk servers are followed
#: and the file does not say. Each change is then written to every other server
#: and answered by each: a change costs more CPU the more servers there are, and
#: reading in batches takes much of it off (bench/README.md, scenario 7: about a
#: third with three servers) for a few ms per event, well inside the 20 ms a
#: change may take to reach every server there. With one server, a change reaches
#: its server at once (0: read at once), as the bench's scenario 2 asks.
AUTO_BATCH_MS = 3
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
    #: once in this many milliseconds (asterisk/ami/gate.py); 0 reads at once; None:
    #: :data:`AUTO_BATCH_MS` with several servers, 0 with one.
    ami_read_batch_ms: int | None = None
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
    def read_batch_ms(self) -> int:
        """[ami_reads] batch_ms as it applies (the default depends on the servers)."""
        if self.ami_read_batch_ms is not None:
            return self.ami_read_batch_ms
        return AUTO_BATCH_MS if len(self.asterisk_servers) > 1 else 0

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

