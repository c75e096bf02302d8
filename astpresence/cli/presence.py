"""Presence commands: get, set, clear, list, history, watch.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from astpresence.web.openapi import HISTORY_MAX
from astpresence.domain.model import InvalidInput, parse_presence, parse_state

from astpresence.cli.common import (
    _shorten,
    parse_duration,
    parse_when,
    PRESENCE_HEADERS,
    USER_AGENT,
    _client,
    _emit,
    _presence_row,
    _table,
    _user,
    fail,
    json_option,
    user_view,
)


@click.command()
@user_view
def get(ctx: click.Context, user: str, as_json: bool) -> None:
    """Show one user's presence."""
    p = _client(ctx).request("GET", f"/v1/presence/{_user(user)}")
    _emit(p, as_json, _table([_presence_row(p)], PRESENCE_HEADERS))


@click.command(name="set")
@click.argument("user")
@click.argument("state", required=False)
@click.option("--subtype", help="Short machine-ish tag, e.g. 'meeting' (<= 255 bytes).")
@click.option("--message", help="Free text shown to others (<= 255 bytes).")
@click.option("--status", "status", help="A named status ('astpresence statuses'): its state, "
                                           "words and duration; STATE and the options above "
                                           "override them.")
@click.option("--for", "for_", help="It lapses after this long: 90s, 15m, 2h, 1d. [default: "
                                     "the status's, else [rules] expire_after, else never]")
@click.option("--until", help="It lapses then: HH:MM (next), 'YYYY-MM-DD HH:MM' or ISO 8601.")
@click.option("--message-for", help="The message alone lapses after this (the state stays).")
@json_option
@click.pass_context
def set_(ctx: click.Context, user: str, state: str | None, subtype: str | None,
         message: str | None, status: str | None, for_: str | None, until: str | None,
         message_for: str | None, as_json: bool) -> None:
    """Set USER's presence to STATE (not_set, unavailable, available, away, xa, chat, dnd),
    or to a named --status."""
    try:
        body = _choice(state, subtype, message, status, for_, until, message_for)
    except InvalidInput as exc:
        fail(str(exc))
    p = _client(ctx).request("PUT", f"/v1/presence/{_user(user)}", body)
    note = " (Asterisk unreachable: will be written when the link is back)" if p["pending"] else ""
    chosen = (p.get("chosen") or p)["state"]
    extra = f" ({p['activity']}: Asterisk shows {p['state']})" if p.get("activity") else ""
    _emit(p, as_json, f"{p['user']}: {chosen}{extra}{note}")


def _choice(state: str | None, subtype: str | None, message: str | None, status: str | None,
            for_: str | None, until: str | None, message_for: str | None) -> dict[str, Any]:
    """The body of a chosen presence, checked here first (the server checks again)."""
    if state is None and status is None:
        raise click.UsageError("give a STATE or --status NAME")
    if for_ is not None and until is not None:
        raise click.UsageError("give either --for or --until, not both")
    body = _words(state, subtype, message)
    if status is not None:
        body["status"] = status
    if for_ is not None:
        body["expires"] = parse_duration(for_, "--for")
    if until is not None:
        body["expires"] = parse_when(until).isoformat()
    if message_for is not None:
        body["message_expires"] = parse_duration(message_for, "--message-for")
    return body


def _words(state: str | None, subtype: str | None, message: str | None) -> dict[str, Any]:
    """The parts given (a status fills in the others), checked like any presence."""
    checked = parse_presence(state or "available", subtype, message).as_dict()
    given = {"state": state, "subtype": subtype, "message": message}
    return {key: checked[key] for key, value in given.items() if value is not None}


@click.command()
@json_option
@click.pass_context
def statuses(ctx: click.Context, as_json: bool) -> None:
    """The named statuses ([[statuses]] in the config) for 'set --status'."""
    data = _client(ctx).request("GET", "/v1/statuses")
    rows = [[s["id"], s["label"], s["state"], _shorten(s["message"], 40),
             "" if s["duration"] is None else _duration_text(s["duration"]),
             "" if s["digit"] is None else f"*37{s['digit']}"] for s in data["statuses"]]
    _emit(data, as_json, _table(rows, ["id", "label", "state", "message", "for", "code"])
          if rows else "no named statuses configured ([[statuses]])")


def _duration_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@click.command()
@user_view
def clear(ctx: click.Context, user: str, as_json: bool) -> None:
    """Clear USER's manual presence."""
    p = _client(ctx).request("DELETE", f"/v1/presence/{_user(user)}")
    _emit(p, as_json, f"{p['user']}: {p['state']}")


@click.command(name="list")
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


@click.command()
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


@click.command()
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
