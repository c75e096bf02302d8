"""Timed sources: source set/clear/list.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import click

from astpresence.domain.model import InvalidInput, parse_presence

from astpresence.cli.common import (
    _client,
    _emit,
    _table,
    _user,
    fail,
    json_option,
    user_view,
    parse_duration,
    parse_when,
)


# -- timed sources ----------------------------------------------------------

@click.group()
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


@source.command(name="list")
@user_view
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
