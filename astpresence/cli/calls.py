"""``astpresence calls show|set|clear USER``: a person's call handling.

A rule on the command line is a few words, e.g.::

    astpresence calls set 2000 "away external forward +4930123456 after 20" "away voicemail"

``WHEN [internal|external] [on busy|no_answer|unregistered] ACTION [to X] [after N]
[both] [timeout N] [greeting busy|unavailable]``, or the API's JSON with ``--json-rules``.
The server checks every rule (and the site's forwarding policy) again.
"""

from __future__ import annotations

import json
from typing import Any

import click

from astpresence.cli.common import _client, _emit, _table, _user, fail, json_option

_ACTIONS = ("ring", "forward", "voicemail", "busy", "unavailable")
_VALUED = {"to": str, "after": int, "timeout": int, "greeting": str, "on": str}


def parse_words(text: str) -> dict[str, Any]:
    """One rule from its words (module docstring); click.UsageError when it does not read."""
    words = text.split()
    if len(words) < 2:
        raise click.UsageError(f"rule {text!r}: give at least WHEN and ACTION, "
                               "e.g. \"away voicemail\"")
    rule: dict[str, Any] = {"when": words.pop(0)}
    while words:
        word = words.pop(0)
        if word in ("internal", "external", "any") and "callers" not in rule:
            rule["callers"] = word
        elif word in _ACTIONS and "action" not in rule:
            rule["action"] = word
        elif word == "both":
            rule["both"] = True
        elif word in _VALUED and words:
            raw = words.pop(0)
            try:
                rule[word] = _VALUED[word](raw)
            except ValueError:
                raise click.UsageError(f"rule {text!r}: {word} needs a number, got {raw!r}") \
                    from None
        else:
            raise click.UsageError(f"rule {text!r}: did not understand {word!r}")
    if "action" not in rule:
        raise click.UsageError(f"rule {text!r}: no action ({', '.join(_ACTIONS)})")
    return rule


def _rule_text(rule: dict[str, Any]) -> str:
    words = [rule["when"]]
    if rule.get("callers"):
        words.append(rule["callers"])
    if rule.get("on"):
        words += ["on", rule["on"]]
    words.append(rule["action"])
    for key in ("to", "after", "timeout", "greeting"):
        if key in rule:
            words += [key, str(rule[key])]
    if rule.get("both"):
        words.append("both")
    return " ".join(words)


def _human(answer: dict[str, Any]) -> str:
    if not answer.get("enabled"):
        return f"{answer['user']}: call handling is off on this site (no [calls] section)"
    rows = [[str(i + 1), "own", _rule_text(r)] for i, r in enumerate(answer["rules"])]
    rows += [["", "site", _rule_text(r)] for r in answer["defaults"]]
    lines = [_table(rows, ["#", "from", "rule"]) if rows else f"{answer['user']}: no rules"]
    now = answer["now"]
    lines += [f"now, {kind} callers: {now[kind]['summary']}" for kind in ("internal",
                                                                          "external")]
    shown = answer.get("shown_to_callers")
    lines.append(f"callers see: {shown} (and the presence)" if shown
                 else "callers are not told the presence")
    return "\n".join(lines)


@click.group()
def calls() -> None:
    """A person's call handling: what happens to their calls in each presence."""


@calls.command()
@click.argument("user")
@json_option
@click.pass_context
def show(ctx: click.Context, user: str, as_json: bool) -> None:
    """USER's rules, the site's defaults, and what happens to a call now."""
    answer = _client(ctx).request("GET", f"/v1/users/{_user(user)}/call-handling")
    _emit(answer, as_json, _human(answer))


@calls.command(name="set")
@click.argument("user")
@click.argument("rules", nargs=-1)
@click.option("--json-rules", "json_rules", metavar="JSON",
              help="The rules as the API takes them: '[{\"when\": \"away\", ...}]'.")
@click.option("--show-presence", type=click.Choice(["on", "off", "site"]), default="site",
              show_default=True,
              help="Callers see USER's presence on their display: on, off, or as the "
                   "site's [calls] show_presence says.")
@json_option
@click.pass_context
def set_(ctx: click.Context, user: str, rules: tuple[str, ...], json_rules: str | None,
         show_presence: str, as_json: bool) -> None:
    """Replace USER's rules with RULES, tried in order (see 'calls --help')."""
    if json_rules is not None and rules:
        raise click.UsageError("give RULES or --json-rules, not both")
    if json_rules is not None:
        try:
            parsed = json.loads(json_rules)
        except ValueError as exc:
            fail(f"--json-rules is not JSON: {exc}")
    else:
        if not rules:
            raise click.UsageError("give at least one rule (or 'calls clear USER')")
        parsed = [parse_words(r) for r in rules]
    show = {"on": True, "off": False, "site": None}[show_presence]
    answer = _client(ctx).request("PUT", f"/v1/users/{_user(user)}/call-handling",
                                  {"rules": parsed, "show_presence": show})
    _emit(answer, as_json, _human(answer))


@calls.command()
@click.argument("user")
@json_option
@click.pass_context
def clear(ctx: click.Context, user: str, as_json: bool) -> None:
    """Remove USER's own rules (the site's defaults, and USER's --show-presence, stay)."""
    client, path = _client(ctx), f"/v1/users/{_user(user)}/call-handling"
    kept = client.request("GET", path).get("show_presence")
    answer = client.request("PUT", path, {"rules": [], "show_presence": kept})
    _emit(answer, as_json, _human(answer))
