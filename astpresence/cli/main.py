"""Command line: ``astpresence [--api URL] COMMAND``.

Commands only parse arguments and call plain functions. Exit codes: 0 on
success, 1 with a one-line error on stderr, 2 for usage errors (click's).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import sys
import tomllib
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Mapping, NoReturn

import click

from astpresence import __version__
from astpresence.web.auth import new_token, parse_role
from astpresence.asterisk.codec import encode_presence_value
from astpresence.web.admission import OncePerInterval
from astpresence.app import kit
from astpresence.sources.calendars.fetch import FETCH_TIMEOUT
from astpresence.app.config import Config, ConfigError, cli_token, load_config, parse_listen
from astpresence.domain.logsafe import OneLineFormatter, clip
from astpresence.app.systemd import JournalFormatter, logs_to_journal
from astpresence.web.openapi import HISTORY_MAX
from astpresence.domain.model import (
    InvalidInput,
    Presence,
    parse_presence,
    parse_state,
    validate_user_id,
)
from astpresence.store.base import Store, StoreError
from astpresence.app.store_choice import open_store, store_name

DEFAULT_API = "http://127.0.0.1:8780"
USER_AGENT = f"astpresence-cli/{__version__}"
TIMEOUT = 10.0


class ApiClient:
    """A tiny synchronous client for the local API (stdlib only)."""

    def __init__(self, base: str, token: str | None = None) -> None:
        parsed = urllib.parse.urlsplit(base)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise click.UsageError(f"--api must be an http(s) URL, got {base!r}")
        self.base = base.rstrip("/")
        self.token = token

    def request(self, method: str, path: str, body: dict[str, Any] | None = None, *,
                timeout: float = TIMEOUT) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"User-Agent": USER_AGENT, "Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                data = json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            message = _error_message(exc)
            if message is None:
                self._not_astpresence(f"HTTP {exc.code} {exc.reason}")
            if exc.code == 401:
                message = (f"{message}; give a token with --token or ASTPRESENCE_TOKEN "
                           "(create one with 'astpresence token create --role admin' on the "
                           "daemon's machine; its log names the database)")
            fail(str(message))
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            fail(
                f"cannot reach the astpresence daemon at {self.base} ({reason}); "
                "is it running? (astpresence serve)"
            )
        except (http.client.HTTPException, OSError) as exc:
            # e.g. the AMI port: its banner is not an HTTP status line.
            self._not_astpresence(f"{type(exc).__name__}: {exc}")
        except ValueError:
            self._not_astpresence("the answer is not JSON")
        if not isinstance(data, (dict, list)):
            self._not_astpresence("the answer is not a JSON object")
        return data

    def _not_astpresence(self, why: str) -> NoReturn:
        fail(f"{self.base} did not answer like an astpresence daemon ({clip(why, 80)}); "
             f"check --api (default {DEFAULT_API})")


def _error_message(exc: urllib.error.HTTPError) -> str | None:
    """The ``error`` of an astpresence JSON error body; None if it is not one."""
    try:
        body = json.loads(exc.read(64 * 1024))
    except (ValueError, OSError):
        return None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return None


def fail(message: str) -> NoReturn:
    raise click.ClickException(message)


def _user(uid: str) -> str:
    try:
        return urllib.parse.quote(validate_user_id(uid), safe="")
    except InvalidInput as exc:
        fail(str(exc))


def _width(text: str) -> int:
    """Columns a terminal gives ``text``: wide (CJK, emoji) 2, combining marks 0."""
    return sum(0 if unicodedata.combining(ch) else
               2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _shorten(text: str, columns: int) -> str:
    """``text`` cut to ``columns`` with an ellipsis (the full text is in --json)."""
    if _width(text) <= columns:
        return text
    out, used = [], 1
    for ch in text:
        used += _width(ch)
        if used > columns:
            break
        out.append(ch)
    return "".join(out) + "…"


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(_width(str(c)) for c in col) for col in zip(headers, *rows)]

    def line(cells: list[str]) -> str:
        return "  ".join(c + " " * (w - _width(c)) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line([h.upper() for h in headers]),
                      *(line([str(c) for c in row]) for row in rows)])


#: Columns of a subtype and a message in a table; --json has them whole.
SUBTYPE_COLUMNS, MESSAGE_COLUMNS, NAME_COLUMNS = 16, 40, 24


def _presence_row(p: dict[str, Any]) -> list[str]:
    voicemail = p.get("voicemail")
    return [
        p["user"], _shorten(p.get("name") or "", NAME_COLUMNS), p["state"],
        _shorten(p["subtype"], SUBTYPE_COLUMNS),
        _shorten(p["message"], MESSAGE_COLUMNS), p["source"],
        (p.get("since") or "-")[:19].replace("T", " "),
        "" if voicemail is None else str(voicemail),
        "yes" if p.get("pending") else "",
    ]


#: ``vm``: new voicemail messages (empty: no mailbox known, or not yours to see).
PRESENCE_HEADERS = ["user", "name", "state", "subtype", "message", "source", "since", "vm",
                    "pending"]


def _emit(data: Any, as_json: bool, human: str) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False) if as_json else human)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


class _Cli(click.Group):
    """The last net: no traceback reaches a user, whatever a server answered."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            api = (ctx.obj or {}).get("api", DEFAULT_API)
            raise click.ClickException(
                f"unexpected answer from {api} ({type(exc).__name__}: {clip(str(exc), 80)}); "
                "is --api the address of an astpresence daemon?") from None
        except Exception as exc:
            raise click.ClickException(
                f"internal error: {type(exc).__name__}: {clip(str(exc), 200)}") from None


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--api",
    envvar="ASTPRESENCE_API",
    default=DEFAULT_API,
    show_default=True,
    help="URL of the astpresence daemon's API (env ASTPRESENCE_API).",
)
@click.option(
    "--token",
    envvar="ASTPRESENCE_TOKEN",
    help="API token (env ASTPRESENCE_TOKEN; else [cli] token in ASTPRESENCE_CONFIG's file).",
)
@click.version_option(__version__, prog_name="astpresence")
@click.pass_context
def main(ctx: click.Context, api: str, token: str | None) -> None:
    """astpresence: presence server for Asterisk."""
    ctx.obj = {"api": api, "token": token}


def _cli_token_from_config() -> str | None:
    path = os.environ.get("ASTPRESENCE_CONFIG")
    if not path:
        return None
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        return cli_token(data, path)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        fail(f"cannot read ASTPRESENCE_CONFIG file {path}: {exc}")
    except ConfigError as exc:
        fail(str(exc))


def _client(ctx: click.Context) -> ApiClient:
    obj = ctx.find_root().obj
    return ApiClient(str(obj["api"]), obj["token"] or _cli_token_from_config())


def _stacked(*options: Callable[[Any], Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """One decorator applying several click options, in the order given."""

    def apply(fn: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


#: --config and the AMI connection flags, shared by serve and doctor.
ami_options = _stacked(
    click.option("--config", "config_path", type=click.Path(dir_okay=False),
                 envvar="ASTPRESENCE_CONFIG", help="TOML config file (env ASTPRESENCE_CONFIG)."),
    click.option("--ami-host", help="Asterisk AMI host. [default: 127.0.0.1]"),
    click.option("--ami-port", type=click.IntRange(1, 65535),
                 help="Asterisk AMI port. [default: 5038]"),
    click.option("--ami-username", help="AMI user from manager.conf. [default: astpresence]"),
    click.option("--ami-secret",
                 help="AMI secret (prefer ASTPRESENCE_AMI_SECRET: flags show in ps)."),
)


def _check_listen(value: str | None) -> str | None:
    if value is not None:
        try:
            parse_listen(value, "--listen")
        except ConfigError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


@main.command()
@ami_options
@click.option("--db", help="SQLite database path. [default: "
              "~/.local/state/astpresence/astpresence.db; as root "
              "/var/lib/astpresence/astpresence.db]")
@click.option("--listen", callback=lambda ctx, param, value: _check_listen(value),
              help="HTTP API address HOST:PORT. [default: 127.0.0.1:8780]")
@click.option("--log-level", default="info", show_default=True, envvar="ASTPRESENCE_LOG_LEVEL",
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              help="Logging level (env ASTPRESENCE_LOG_LEVEL).")
def serve(config_path: str | None, ami_host: str | None, ami_port: int | None,
          ami_username: str | None, ami_secret: str | None, db: str | None,
          listen: str | None, log_level: str) -> None:
    """Run the daemon (config: defaults < TOML < environment < flags)."""
    from astpresence.app.daemon import serve as run_daemon

    try:
        config = load_config(
            config_path,
            overrides={"ami_host": ami_host, "ami_port": ami_port, "ami_username": ami_username,
                       "ami_secret": ami_secret, "db": db, "listen": listen},
        )
    except ConfigError as exc:
        fail(str(exc))
    handler = logging.StreamHandler(sys.stderr)
    # under systemd, journald adds the time and takes the priority from "<N>"
    handler.setFormatter(JournalFormatter() if logs_to_journal() else
                         OneLineFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=log_level.upper(), handlers=[handler])
    # asyncio logs every failed accept() (EMFILE under a flood) with a traceback
    logging.getLogger("asyncio").addFilter(OncePerInterval("socket.accept() out of"))
    code = run_daemon(config)
    if code:
        sys.exit(code)


@main.command()
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show the AMI link, sync state and counts."""
    st = _client(ctx).request("GET", "/v1/status")
    ami = st["ami"]
    servers = st.get("asterisk") or [ami]
    if len(servers) == 1:
        links = [f"AMI link:        {_link_summary(ami)}"]
    else:
        links = [f"AMI link {n.get('name', '?')}:".ljust(17) + _link_summary(n)
                 for n in servers]
    human = "\n".join(
        [
            *links,
            f"synced:          {'yes' if st['synced'] else 'no'}",
            f"last sync:       {st['last_sync'] or 'never'}",
            f"users:           {st['users']}",
            f"pending writes:  {st['pending_writes']}",
            f"failing writes:  {_failing_summary(st)}",
            f"contact cards:   {ami.get('cards') or 'not read yet'}",
            f"HA:              {_ha_summary(st.get('ha'))}",
            f"reconnects:      {sum(n.get('reconnects', 0) for n in servers)}",
            f"version:         {st['version']}",
        ]
    )
    _emit(st, as_json, human)


def _link_summary(ami: dict[str, Any]) -> str:
    if ami["state"] == "follower":
        return (f"none here: this node follows the leader, whose link to {ami['host']}:"
                f"{ami['port']} is {ami.get('leader_link') or 'not known yet'}")
    link = f"{ami['state']} ({ami['username']}@{ami['host']}:{ami['port']})"
    if ami.get("last_error"):
        link += f"; last error: {ami['last_error']}"
    if ami.get("retry_in_seconds") is not None:
        link += f"; retrying in {ami['retry_in_seconds']} s"
    return link


def _ha_summary(ha: dict[str, Any] | None) -> str:
    if not ha:
        return "off (one daemon)"
    leader = ha.get("leader") or {}
    nodes = ", ".join(f"{n.get('node')} ({n.get('role')})" for n in ha.get("group") or [])
    role = ha["role"]
    if role == "follower":
        role += " in step" if ha.get("following") else " (not yet in step: answering 503)"
    return (f"{role} ({ha['node']}); leader {leader.get('node') or 'none'}"
            f"{' at ' + leader['api'] if leader.get('api') else ''}; group: {nodes or '-'}")


def _failing_summary(st: dict[str, Any]) -> str:
    counts = st.get("write_failures") or {}
    if not any(counts.values()):
        return "none"
    parts = [f"{n} {kind.replace('_', ' ')}" for kind, n in counts.items() if n]
    first = (st.get("failing_writes") or [{}])[0]
    detail = f" (e.g. {first['key']}: {first['error']})" if first.get("key") else ""
    return ", ".join(parts) + "; retried with backoff" + detail


@main.command()
@click.argument("user")
@json_option
@click.pass_context
def get(ctx: click.Context, user: str, as_json: bool) -> None:
    """Show one user's presence."""
    p = _client(ctx).request("GET", f"/v1/presence/{_user(user)}")
    _emit(p, as_json, _table([_presence_row(p)], PRESENCE_HEADERS))


@main.command(name="set")
@click.argument("user")
@click.argument("state")
@click.option("--subtype", default="", help="Short machine-ish tag, e.g. 'meeting' (<= 255 bytes).")
@click.option("--message", default="", help="Free text shown to others (<= 255 bytes).")
@json_option
@click.pass_context
def set_(ctx: click.Context, user: str, state: str, subtype: str, message: str,
         as_json: bool) -> None:
    """Set USER's presence to STATE (not_set, unavailable, available, away, xa, chat, dnd)."""
    try:
        presence = parse_presence(state, subtype, message)
    except InvalidInput as exc:
        fail(str(exc))
    p = _client(ctx).request("PUT", f"/v1/presence/{_user(user)}", presence.as_dict())
    note = " (Asterisk unreachable: will be written when the link is back)" if p["pending"] else ""
    _emit(p, as_json, f"{p['user']}: {p['state']}{note}")


@main.command()
@click.argument("user")
@json_option
@click.pass_context
def clear(ctx: click.Context, user: str, as_json: bool) -> None:
    """Clear USER's manual presence."""
    p = _client(ctx).request("DELETE", f"/v1/presence/{_user(user)}")
    _emit(p, as_json, f"{p['user']}: {p['state']}")


@main.command(name="list")
@click.option("--state", help="Only users in this state.")
@json_option
@click.pass_context
def list_(ctx: click.Context, state: str | None, as_json: bool) -> None:
    """List every user's presence."""
    path = "/v1/presence"
    if state is not None:
        try:
            path += "?state=" + parse_state(state).value
        except InvalidInput as exc:
            fail(str(exc))
    data = _client(ctx).request("GET", path)
    rows = [_presence_row(p) for p in data["presence"]]
    _emit(data["presence"], as_json,
          _table(rows, PRESENCE_HEADERS) if rows else "no users")


@main.command()
@click.argument("user")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, HISTORY_MAX),
              help="How many entries, newest first.")
@json_option
@click.pass_context
def history(ctx: click.Context, user: str, limit: int, as_json: bool) -> None:
    """Show USER's presence history, newest first."""
    data = _client(ctx).request("GET", f"/v1/presence/{_user(user)}/history?limit={limit}")
    rows = [
        [h["at"][:19].replace("T", " "), (h["old"] or {}).get("state", "-"), h["new"]["state"],
         h["new"]["subtype"], h["new"]["message"], h["source"], h["actor"]]
        for h in data["history"]
    ]
    _emit(data["history"], as_json,
          _table(rows, ["at", "from", "to", "subtype", "message", "source", "actor"])
          if rows else "no history")


@main.command()
@json_option
@click.pass_context
def watch(ctx: click.Context, as_json: bool) -> None:
    """Print one line per presence change until Ctrl-C."""
    client = _client(ctx)
    if not client.token:
        fail("no token: give --token or set ASTPRESENCE_TOKEN "
             "(create one with 'astpresence token create')")
    try:
        asyncio.run(_watch(client.base, client.token, as_json))
    except KeyboardInterrupt:
        pass


async def _watch(base: str, token: str, as_json: bool) -> None:
    """Print events; reconnect (with backoff) only once a first connection worked."""
    import aiohttp

    url = base.replace("http", "ws", 1) + "/v1/events"
    stream = _EventPrinter(base, as_json)
    delay = 1.0
    async with aiohttp.ClientSession(headers={"User-Agent": USER_AGENT}) as session:
        while True:
            try:
                async with session.ws_connect(url, heartbeat=30.0) as ws:
                    await ws.send_json(stream.hello(token))
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        if stream.show(json.loads(msg.data)):
                            delay = 1.0
                if stream.connected:
                    click.echo("connection to the daemon closed; reconnecting", err=True)
            except (aiohttp.ClientError, OSError) as exc:
                if not stream.connected:
                    fail(f"cannot reach the astpresence daemon at {base} ({exc}); "
                         "is it running? (astpresence serve)")
                click.echo(f"cannot reach {base}: {exc}; retrying in {delay:.0f} s", err=True)
            except ValueError:
                fail(f"{base} did not answer like an astpresence daemon (an event that is "
                     "not JSON); check --api")
            if not stream.connected:
                fail(f"{base} closed the event stream before saying hello; "
                     "is --api the address of an astpresence daemon?")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


class _EventPrinter:
    """What ``watch`` prints for each message of the event stream, and where to resume."""

    def __init__(self, base: str, as_json: bool) -> None:
        self.base = base
        self.as_json = as_json
        self.connected = False  # a hello was received once
        self.last_seq: int | None = None

    def hello(self, token: str) -> dict[str, Any]:
        hello: dict[str, Any] = {"token": token, "subscribe": ["*"]}
        if self.last_seq is not None:
            hello["resume"] = self.last_seq
        return hello

    def show(self, event: dict[str, Any]) -> bool:
        """Print one message; True for the hello of a (re)connection."""
        kind = event.get("type")
        if kind == "error":
            fail(f"the daemon refused the event stream: {event['error']}")
        if kind == "hello":
            self.connected = True
            click.echo(f"watching {self.base} (Ctrl-C to stop)", err=True)
            self.last_seq = event["seq"] if self.last_seq is None else self.last_seq
            link = event.get("link") or {}
            if link.get("state") == "down":
                self.show(link)
            return True
        if kind in ("link", "shutdown"):
            self._service(event)
            return False
        self.last_seq = event["seq"]
        if kind == "snapshot":
            click.echo("missed too many changes while disconnected; "
                       "run 'astpresence list' for the current state", err=True)
        elif self.as_json:
            click.echo(json.dumps(event, ensure_ascii=False))
        else:
            p = event["presence"]
            extra = " ".join(x for x in (p["subtype"], p["message"]) if x)
            click.echo(f"{(p.get('since') or '')[:19].replace('T', ' ')}  {p['user']:<10} "
                       f"{p['state']:<12} {extra}".rstrip())
        return False

    def _service(self, event: dict[str, Any]) -> None:
        """The Asterisk link or the daemon itself: presence may be stale from now on."""
        if self.as_json:
            click.echo(json.dumps(event, ensure_ascii=False))
        elif event["type"] == "shutdown":
            click.echo("-- the daemon is shutting down; presence shown may be out of date")
        elif event["state"] == "synced":
            click.echo(f"-- Asterisk link {event['asterisk']} synced: presence is live again")
        else:
            since = (event.get("since") or "")[:19].replace("T", " ")
            click.echo(f"-- Asterisk link {event.get('asterisk') or ''} down"
                       f"{' since ' + since if since else ''} ({event.get('reason')}): "
                       "presence may be out of date")


# -- timed sources ----------------------------------------------------------

_DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(raw: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``1d`` -> seconds."""
    text = raw.strip().lower()
    unit = 1
    if text and text[-1] in _DURATION:
        unit, text = _DURATION[text[-1]], text[:-1]
    try:
        value = float(text) * unit
    except ValueError:
        raise InvalidInput(f"invalid duration {raw!r}: use e.g. 90s, 15m, 2h or 1d") from None
    if value <= 0:
        raise InvalidInput(f"duration {raw!r} must be positive")
    return value


def parse_when(raw: str, now: datetime | None = None) -> datetime:
    """``15:00`` (next occurrence, local time), ``2026-11-21 15:00`` or ISO 8601."""
    now = now or datetime.now().astimezone()
    text = raw.strip()
    try:
        clock = datetime.strptime(text, "%H:%M").time()
    except ValueError:
        pass
    else:
        when = now.replace(hour=clock.hour, minute=clock.minute, second=0, microsecond=0)
        return when if when > now else when + timedelta(days=1)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"invalid time {raw!r}: use HH:MM, 'YYYY-MM-DD HH:MM' or ISO 8601"
        ) from None
    return when if when.tzinfo else when.astimezone()  # naive = local time


@main.group()
def source() -> None:
    """Timed presence sources (calendar, ...) of a user."""


@source.command(name="set")
@click.argument("user")
@click.argument("name")
@click.argument("state")
@click.option("--subtype", default="", help="Subtype text (<= 255 bytes).")
@click.option("--message", default="", help="Message text (<= 255 bytes).")
@click.option("--from", "start", help="Start: HH:MM, 'YYYY-MM-DD HH:MM' or ISO 8601. [default: now]")
@click.option("--until", "end", help="End: HH:MM (next occurrence), date-time or ISO 8601.")
@click.option("--ttl", help="Instead of --until: how long, e.g. 90s, 15m, 2h, 1d.")
@json_option
@click.pass_context
def source_set(ctx: click.Context, user: str, name: str, state: str, subtype: str, message: str,
               start: str | None, end: str | None, ttl: str | None, as_json: bool) -> None:
    """Set source NAME of USER to STATE, optionally for a time window."""
    try:
        presence = parse_presence(state, subtype, message)
        body: dict[str, Any] = presence.as_dict()
        if start:
            body["start"] = parse_when(start).isoformat()
        if end and ttl:
            raise InvalidInput("give either --until or --ttl, not both")
        if end:
            body["end"] = parse_when(end).isoformat()
        if ttl:
            body["ttl"] = parse_duration(ttl)
    except InvalidInput as exc:
        fail(str(exc))
    data = _client(ctx).request(
        "PUT", f"/v1/presence/{_user(user)}/sources/{urllib.parse.quote(name, safe='')}", body)
    eff = data["effective"]
    _emit(data, as_json, f"{user}: source {name} set; effective presence {eff['state']} "
          f"({eff['rule']})")


@source.command(name="clear")
@click.argument("user")
@click.argument("name")
@click.pass_context
def source_clear(ctx: click.Context, user: str, name: str) -> None:
    """Remove source NAME of USER."""
    data = _client(ctx).request(
        "DELETE", f"/v1/presence/{_user(user)}/sources/{urllib.parse.quote(name, safe='')}")
    eff = data["effective"]
    click.echo(f"{user}: source {name} removed; effective presence {eff['state']} "
               f"({eff['rule']})")


@main.group()
def calendar() -> None:
    """Calendar feeds ([[calendars]] in the config) and what they cause."""


def _when_short(text: str | None) -> str:
    return (text or "-")[:16].replace("T", " ")


def _feed_row(f: dict[str, Any]) -> list[str]:
    state = f["state"] + (f" ({f['failures']} failures)" if f["failures"] else "")
    return [f["user"], f["kind"], state, _when_short(f["last_fetch"]),
            _when_short(f["last_success"]), str(f["events"]),
            _shorten(f["error"], MESSAGE_COLUMNS)]


FEED_HEADERS = ["user", "kind", "state", "last fetch", "last success", "events", "error"]


@calendar.command(name="list")
@json_option
@click.pass_context
def calendar_list(ctx: click.Context, as_json: bool) -> None:
    """Every feed: last fetch, state (stale: failing, last good events kept), next entry."""
    data = _client(ctx).request("GET", "/v1/calendars")
    feeds = data["calendars"]
    rows = [_feed_row(f) for f in feeds]
    _emit(data, as_json, _table(rows, FEED_HEADERS) if rows else "no calendar feeds configured")


def _calendar_human(data: dict[str, Any]) -> str:
    feeds = _table([_feed_row(f) for f in data["feeds"]], FEED_HEADERS)
    rows = [[_when_short(e["start"]), _when_short(e["end"]), e["kind"],
             e["presence"]["state"], e["presence"]["subtype"],
             _shorten(e["presence"]["message"], MESSAGE_COLUMNS)] for e in data["entries"]]
    entries = (_table(rows, ["from", "until", "kind", "state", "subtype", "message"])
               if rows else "no entries in the window")
    return f"{feeds}\n\n{entries}"


@calendar.command(name="show")
@click.argument("user")
@json_option
@click.pass_context
def calendar_show(ctx: click.Context, user: str, as_json: bool) -> None:
    """USER's feeds, the entries of the next days and the presence each causes."""
    data = _client(ctx).request("GET", f"/v1/calendars/{_user(user)}")
    _emit(data, as_json, _calendar_human(data))


@calendar.command(name="refresh")
@click.argument("user")
@json_option
@click.pass_context
def calendar_refresh(ctx: click.Context, user: str, as_json: bool) -> None:
    """Fetch USER's feeds now (waits for them), then show as 'calendar show'."""
    uid = _user(user)
    # The daemon gives each feed up to FETCH_TIMEOUT (fetch and parse): wait that long.
    wait = FETCH_TIMEOUT + 15
    if sys.stderr.isatty():
        click.echo(f"fetching the calendar feeds of {uid} (up to {FETCH_TIMEOUT:.0f} s)...",
                   err=True)
    data = _client(ctx).request("POST", f"/v1/calendars/{uid}/refresh", timeout=wait)
    _emit(data, as_json, _calendar_human(data))


@source.command(name="list")
@click.argument("user")
@json_option
@click.pass_context
def source_list(ctx: click.Context, user: str, as_json: bool) -> None:
    """Show every contribution to USER's presence and the result."""
    data = _client(ctx).request("GET", f"/v1/presence/{_user(user)}/sources")
    rows = [[s["source"], s["state"], s["subtype"], s["message"], s["actor"],
             (s["start"] or "")[:16].replace("T", " "), (s["end"] or "")[:16].replace("T", " ")]
            for s in data["sources"]]
    dev = data["devices"]
    eff = data["effective"]
    human = "\n".join([
        _table(rows, ["source", "state", "subtype", "message", "actor", "start", "end"])
        if rows else "no sources",
        f"devices: {', '.join(dev['states']) or 'none known'} (aggregate {dev['aggregate']})",
        f"effective: {eff['state']} {eff['subtype']} {eff['message']}".rstrip()
        + f"  [{eff['source']}, rule {eff['rule']}]",
    ])
    _emit(data, as_json, human)


# -- dialplan helpers ---------------------------------------------------------


@main.group()
def dialplan() -> None:
    """Print dialplan snippets for the users astpresence knows."""


@dialplan.command()
@click.pass_context
def hints(ctx: click.Context) -> None:
    """Hint lines with each user's BLF mirror device (Custom:<prefix><user>)."""
    client = _client(ctx)
    users = client.request("GET", "/v1/users")["users"]
    mirror = bool(client.request("GET", "/v1/status")["features"]["mirror"])
    click.echo(format_hints(users, mirror=mirror))


@dialplan.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              envvar="ASTPRESENCE_CONFIG", help="TOML config file with [[presets]].")
def presets(config_path: str | None) -> None:
    """[globals] lines for the *37N preset codes, from [[presets]] in the config."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        fail(str(exc))
    if not config.presets:
        fail("no [[presets]] in the config; add e.g. [[presets]] digit = 1, state = \"away\", "
             "subtype = \"lunch\", message = \"Back at 2pm\"")
    click.echo(format_presets(config.presets))


@dialplan.command(name="kit")
@click.option("--manager", is_flag=True,
              help="Print the AMI account snippet (manager_astpresence.conf) instead.")
@click.option("--write", "write_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write both files into this directory instead of printing them "
                   "(e.g. /etc/asterisk/astpresence).")
@click.option("--force", is_flag=True,
              help="With --write: replace files that differ from the kit, keeping a "
                   "backup of each.")
def dialplan_kit(manager: bool, write_dir: Path | None, force: bool) -> None:
    """Print the dialplan kit (extensions_astpresence.conf) shipped with this version."""
    if write_dir is None:
        click.echo(kit.text(kit.KIT_FILES[1] if manager else kit.KIT_FILES[0]), nl=False)
        return
    try:
        written = kit.write_kit(write_dir, force=force)
    except (kit.KitConflict, OSError) as exc:
        fail(str(exc))
    for item in written:
        click.echo(f"{item.path}: {item.action}")
    click.echo("next: set the secret in manager_astpresence.conf, #include both files (their "
               "headers say where), then 'dialplan reload' and 'manager reload'", err=True)


@main.group()
def service() -> None:
    """Run astpresence as a system service (systemd)."""


@service.command(name="unit")
@click.option("--exec", "executable", type=click.Path(dir_okay=False),
              help="The astpresence command the unit starts. [default: this installation's]")
def service_unit(executable: str | None) -> None:
    """Print the systemd unit (save it as /etc/systemd/system/astpresence.service)."""
    command = executable or kit.installed_executable()
    if command and command.startswith(("/home/", "/root/")):
        click.echo(f"warning: {command} is in a home directory, which the unit hides from "
                   "the service (ProtectHome=yes); install under /opt (README, \"Install as "
                   "a service\") or pass --exec", err=True)
    click.echo(kit.unit(command), nl=False)


def format_presets(presets: Mapping[int, Presence]) -> str:
    lines = ["; astpresence presets: put these lines in [globals] (extensions.conf)"]
    for digit in sorted(presets):
        p = presets[digit]
        summary = " ".join(x for x in (p.state.value, p.subtype, p.message) if x)
        lines.append(f"; *37{digit}: {summary}")
        lines.append(f"ASTPRESENCE_PRESET_{digit}={encode_presence_value(p)}")
    return "\n".join(lines)


def format_hints(users: list[dict[str, Any]], *, mirror: bool = True) -> str:
    """Hint lines; with ``mirror`` each ends its devices with the user's mirror device."""
    lines: list[str] = []
    by_context: dict[str, list[dict[str, Any]]] = {}
    for user in users:
        by_context.setdefault(user["context"] or "", []).append(user)
    for context in sorted(by_context):
        lines.append(f"; context [{context}]" if context else "; users without a known context")
        for user in by_context[context]:
            if not user["extension"]:
                lines.append(f"; {user['id']}: no extension known; set 'extension' in [[users]]")
                continue
            devices = [d for d in user["devices"] if d != user["mirror_device"]]
            if mirror:
                devices.append(user["mirror_device"])
            lines.append(
                f"exten => {user['extension']},hint,{'&'.join(devices)},"
                f"CustomPresence:{user['id']}"
            )
    return "\n".join(lines) if lines else "; no users known"


# -- doctor -------------------------------------------------------------------


@main.command()
@ami_options
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def doctor(config_path: str | None, ami_host: str | None, ami_port: int | None,
           ami_username: str | None, ami_secret: str | None, as_json: bool) -> None:
    """Check AMI access, permissions, modules and hints; exit 0 only if all pass."""
    from astpresence.cli.doctor import checks_as_json, format_check, run_checks

    try:
        config = load_config(
            config_path,
            overrides={"ami_host": ami_host, "ami_port": ami_port, "ami_username": ami_username,
                       "ami_secret": ami_secret},
        )
    except ConfigError as exc:
        fail(str(exc))
    checks = asyncio.run(run_checks(config))
    if as_json:
        click.echo(json.dumps(checks_as_json(checks), indent=2, ensure_ascii=False))
    else:
        for check in checks:
            click.echo(format_check(check))
    if not all(check.ok for check in checks):
        sys.exit(1)


# -- tokens (work on the database directly: the first admin token needs no token) --


def _store_for(config_path: str | None, db: str | None) -> tuple[Store, Config]:
    """The daemon's database, which must exist (never a new, empty SQLite file)."""
    try:
        config = load_config(config_path, overrides={"db": db})
    except ConfigError as exc:
        fail(str(exc))
    return open_store(config, create=False), config


async def _with_store(store: Store, fn: Callable[[Store], Awaitable[Any]]) -> Any:
    try:
        await store.open()
    except StoreError as exc:
        fail(str(exc))
    try:
        return await fn(store)
    except StoreError as exc:
        fail(str(exc))
    finally:
        await store.close()


#: Where the token commands find the daemon's database.
_db_opts = _stacked(
    click.option("--config", "config_path", type=click.Path(dir_okay=False),
                 envvar="ASTPRESENCE_CONFIG", help="TOML config (for [store] path)."),
    click.option("--db", help="SQLite database of the daemon (env ASTPRESENCE_DB). "
                              "[default: as the daemon: ~/.local/state/astpresence/"
                              "astpresence.db, /var/lib/astpresence/astpresence.db as root]"),
)


@main.group()
def token() -> None:
    """API tokens: create (shown once), list, revoke. Works on the database directly."""


@token.command(name="create")
@click.option("--role", default="user", show_default=True,
              type=click.Choice(["user", "operator", "admin"]),
              help="user: own presence; operator: anyone's; admin: also tokens and config.")
@click.option("--user", "uid", help="The user the token acts for (required for role user).")
@click.option("--label", default="", help="A note to recognise the token by.")
@_db_opts
@json_option
def token_create(role: str, uid: str | None, label: str, config_path: str | None,
                 db: str | None, as_json: bool) -> None:
    """Create a token and print it (it is stored hashed and cannot be shown again)."""
    try:
        secret, record = new_token(parse_role(role), uid, label, datetime.now(UTC))
    except InvalidInput as exc:
        fail(str(exc))

    store, config = _store_for(config_path, db)

    async def add(store: Store) -> bool:
        await store.add_token(record)
        known = {u.id for u in config.users} | {u.id for u in await store.load_users()}
        return uid is None or uid in known

    if not asyncio.run(_with_store(store, add)):
        click.echo(f"warning: no user {uid!r} is known yet (not in [[users]], not in any hint "
                   "the daemon has seen); the token works once one names it", err=True)
    if as_json:
        click.echo(json.dumps({"id": record.id, "token": secret, "role": record.role,
                               "user": record.user, "database": store_name(config)}))
    else:
        click.echo(secret)
        click.echo(f"token {record.id} ({record.role}{', user ' + uid if uid else ''}) "
                   f"created in {store_name(config)}; it is shown only this once", err=True)


@token.command(name="list")
@_db_opts
@json_option
def token_list(config_path: str | None, db: str | None, as_json: bool) -> None:
    """List tokens (never their secrets)."""
    tokens = asyncio.run(_with_store(_store_for(config_path, db)[0],
                                     lambda store: store.list_tokens()))
    data = [{"id": t.id, "role": t.role, "user": t.user, "label": t.label,
             "created_at": t.created_at.isoformat(),
             "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None} for t in tokens]
    rows = [[d["id"], d["role"], d["user"] or "", d["label"], d["created_at"][:19],
             "revoked" if d["revoked_at"] else "active"] for d in data]
    _emit(data, as_json, _table(rows, ["id", "role", "user", "label", "created", "status"])
          if rows else "no tokens")


@token.command(name="revoke")
@click.argument("token_id")
@_db_opts
def token_revoke(token_id: str, config_path: str | None, db: str | None) -> None:
    """Revoke token TOKEN_ID; the daemon refuses it from the next request on."""

    async def revoke(store: Store) -> bool:
        return await store.revoke_token(token_id, datetime.now(UTC))

    if not asyncio.run(_with_store(_store_for(config_path, db)[0], revoke)):
        fail(f"no active token {token_id!r}")
    click.echo(f"token {token_id} revoked")
