"""Command line: ``astpresence [--api URL] COMMAND``.

Commands only parse arguments and call plain functions. Exit codes: 0 on
success, 1 with a one-line error on stderr, 2 for usage errors (click's).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import sys
from typing import Any

import click

from astpresence import __version__
from astpresence.web.admission import OncePerInterval
from astpresence.app.config import load_config
from astpresence.app.settings import ConfigError
from astpresence.domain.logsafe import OneLineFormatter, clip
from astpresence.app.systemd import JournalFormatter, logs_to_journal
from astpresence.cli.agent import agent
from astpresence.cli.calls import calls
from astpresence.cli.kit import dialplan, service
from astpresence.cli.presence import clear, get, history, list_, set_, statuses, watch
from astpresence.cli.sources import source
from astpresence.sources.registry import SOURCES
from astpresence.cli.common import (
    DEFAULT_API,
    _check_listen,
    _client,
    _emit,
    ami_options,
    fail,
    json_option,
)
from astpresence.cli.tokens import token


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


# -- doctor -------------------------------------------------------------------


@main.command()
@ami_options
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def doctor(config_path: str | None, ami_host: str | None, ami_port: int | None,
           ami_username: str | None, ami_secret: str | None, as_json: bool) -> None:
    """Check AMI access, permissions, modules and hints; exit 0 only if all pass."""
    from astpresence.cli.checks import checks_as_json, format_check
    from astpresence.cli.doctor import run_checks

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


main.add_command(get)
main.add_command(set_)
main.add_command(clear)
main.add_command(list_)
main.add_command(history)
main.add_command(statuses)
main.add_command(watch)
main.add_command(source)
main.add_command(dialplan)
main.add_command(service)
main.add_command(token)
main.add_command(calls)
main.add_command(agent)
# Each source's own commands (sources/plugin.py: its ``cli`` module), by name like an
# entry point.
for _plugin in SOURCES:
    if _plugin.cli:
        for _command in importlib.import_module(_plugin.cli).commands():
            main.add_command(_command)
