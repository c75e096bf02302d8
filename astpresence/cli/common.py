"""What the commands share: the API client, one-line errors, tables, the
options of serve and doctor.
"""

from __future__ import annotations

import http.client
import json
import os
import tomllib
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import click

from astpresence import __version__
from astpresence.app.config import cli_token
from astpresence.app.settings import ConfigError, parse_listen
from astpresence.domain import statuses
from astpresence.domain.logsafe import clip
from astpresence.domain.model import InvalidInput, validate_user_id



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
    """What the person chose and what is going on; what Asterisk holds when it differs
    (a call or an outage overlays it)."""
    voicemail = p.get("voicemail")
    chosen = p.get("chosen") or p
    written = (p["state"], p["subtype"], p["message"])
    shown = "" if written == (chosen["state"], chosen["subtype"], chosen["message"]) else \
        "/".join(x for x in written[:2] if x)
    return [
        p["user"], _shorten(p.get("name") or "", NAME_COLUMNS), chosen["state"],
        p.get("activity") or "", _shorten(chosen["subtype"], SUBTYPE_COLUMNS),
        _shorten(chosen["message"], MESSAGE_COLUMNS), shown, p["source"],
        (p.get("since") or "-")[:19].replace("T", " "),
        "" if voicemail is None else str(voicemail),
        "yes" if p.get("pending") else "",
    ]


#: ``activity``: on-the-phone, ringing, offline, meeting...; ``asterisk``: what the hint
#: holds when a call or an outage overlays the chosen state; ``vm``: new voicemail
#: messages (empty: no mailbox known, or not yours to see).
PRESENCE_HEADERS = ["user", "name", "state", "activity", "subtype", "message", "asterisk",
                    "source", "since", "vm", "pending"]


def _emit(data: Any, as_json: bool, human: str) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False) if as_json else human)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def user_view(command: Callable[..., Any]) -> Callable[..., Any]:
    """The shape of a command that shows something of one USER: the argument, ``--json``
    and the click context, in that order (``def f(ctx, user, as_json)``)."""
    return click.argument("user")(json_option(click.pass_context(command)))


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


def parse_duration(raw: str, what: str = "duration") -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``1d`` -> seconds (domain/statuses.py's grammar)."""
    return statuses.parse_duration(raw, what).total_seconds()


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
