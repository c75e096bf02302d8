"""The ``calendar`` commands (CLI layer): list, show and refresh the feeds."""

from __future__ import annotations

import sys
from typing import Any

import click

from astpresence.cli.common import (
    MESSAGE_COLUMNS,
    _client,
    _emit,
    _shorten,
    _table,
    _user,
    json_option,
    user_view,
)
from astpresence.sources.calendars.fetch import FETCH_TIMEOUT


def commands() -> list[click.Command]:
    return [calendar]


@click.group()
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
@user_view
def calendar_show(ctx: click.Context, user: str, as_json: bool) -> None:
    """USER's feeds, the entries of the next days and the presence each causes."""
    data = _client(ctx).request("GET", f"/v1/calendars/{_user(user)}")
    _emit(data, as_json, _calendar_human(data))


@calendar.command(name="refresh")
@user_view
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
