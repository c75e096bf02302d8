"""The ``teams`` commands (CLI layer): the link to Graph and who is mapped."""

from __future__ import annotations

from typing import Any

import click

from astpresence.cli.common import _client, _emit, _shorten, _table, json_option


def commands() -> list[click.Command]:
    return [teams]


@click.group()
def teams() -> None:
    """Microsoft Teams presence ([teams] in the config): the mapping and the link."""


@teams.command(name="map")
@json_option
@click.pass_context
def teams_map(ctx: click.Context, as_json: bool) -> None:
    """Every mapped person: the UPN or id in the config, the object id it resolved to
    (or why not), and what Teams shows now."""
    data = _client(ctx).request("GET", "/v1/teams")
    rows = [[r["user"], r["teams"], r["object_id"] or "-",
             f"{r['availability']}/{r['activity']}" if r["availability"] else "-",
             _shorten(r["error"], 40)] for r in data["map"]]
    text = (_table(rows, ["user", "teams", "object id", "in Teams", "error"]) if rows
            else "nobody is mapped ([teams.users] is empty, or Teams is off)")
    _emit(data, as_json, text)


def _status_lines(s: dict[str, Any]) -> str:
    if not s.get("enabled"):
        return "Teams is off (no [teams] section)"
    lines = [
        f"sync:           {s['sync']} ({'running' if s['running'] else 'not running here'})",
        f"token:          {s['token']}",
        f"people:         {s['users_resolved']} of {s['users_mapped']} resolved",
        "notifications:  " + (f"{s['subscriptions']} of {s['subscriptions_needed']} "
                               f"subscriptions alive, last {s['last_notification'] or 'never'}"
                               if s["notification_url"] else "off (polling)"),
        f"polling:        {'yes' if s['polling'] else 'no'}",
        f"requests:       {s['requests_last_minute']} in the last minute, "
        f"{s['throttled']} throttled, {s['failures']} failed",
        f"to Teams:       {s['calls_shown']} calls shown, {s['preferred_set']} preferred set, "
        f"{s['waiting']} waiting",
    ]
    if s["missing_permissions"]:
        lines.append("MISSING:        application permission(s) "
                     + ", ".join(s["missing_permissions"]) + " (grant admin consent)")
    if s["last_error"]:
        lines.append(f"last error:     {s['last_error']}")
    return "\n".join(lines)


@teams.command(name="status")
@json_option
@click.pass_context
def teams_status(ctx: click.Context, as_json: bool) -> None:
    """The link to Microsoft Graph: token, subscriptions, polling, requests, failures."""
    data = _client(ctx).request("GET", "/v1/teams")
    _emit(data, as_json, _status_lines(data["status"]))
