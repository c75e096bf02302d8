"""``astpresence agent``: the desktop agent, run in the person's desktop session (a
systemd user unit or an XDG autostart entry, contrib/).

    astpresence --api https://presence.example.com agent --token-file ~/.config/astpresence/token

The token is the person's own (``astpresence token create --role user --user
2000``): from ``--token``/``ASTPRESENCE_TOKEN``, ``--token-file``, or the login
keyring (service ``astpresence``, the API's URL as the name) when the
``keyring`` package is installed. SIGTERM and SIGINT close the session before
the agent ends; so does logind's logout or shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import click

from astpresence.agent.client import DEFAULT_INTERVAL, Agent, Refused
from astpresence.agent.readers import ReaderError, reader_for
from astpresence.cli.common import fail


def _token(given: str | None, path: Path | None, api: str) -> str:
    if given:
        return given
    if path is not None:
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            fail(f"cannot read the token file {path}: {exc.strerror}")
        if not token:
            fail(f"the token file {path} is empty")
        return token
    try:
        import keyring  # type: ignore[import-not-found]  # optional: the desktop's keyring
    except ImportError:
        keyring = None
    if keyring is not None:
        found = keyring.get_password("astpresence", api)
        if found:
            return str(found)
    fail("no token: give --token-file FILE, ASTPRESENCE_TOKEN, or store one in the "
         "keyring (service 'astpresence', name: the API's URL)")


async def _run(api: str, token: str, reader_kind: str, bus: str | None, client: str,
               interval: float) -> None:
    reader = reader_for(reader_kind, bus)
    try:
        await reader.open()
    except ReaderError as exc:
        fail(f"cannot read idle and lock state: {exc}")
    agent = Agent(api, token, reader, client=client, interval=interval)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await agent.run(stop)
    except Refused as exc:
        fail(str(exc))
    finally:
        await reader.close()
    c = agent.counters
    logging.getLogger(__name__).info("agent stopped: %d session(s) opened, %d report(s)",
                                     c.opened, c.reports)


@click.command()
@click.option("--token-file", type=click.Path(path_type=Path, dir_okay=False),
              help="A file holding the person's API token.")
@click.option("--client", default="", help="How the session is named to the person and "
                                           "admins [default: astpresence agent on HOST].")
@click.option("--interval", type=click.FloatRange(5, 300), default=DEFAULT_INTERVAL,
              show_default=True, help="Seconds between reports when nothing changes.")
@click.option("--reader", "reader_kind",
              type=click.Choice(["auto", "logind", "screensaver", "poll"]),
              default="auto", show_default=True,
              help="Where idle and lock state come from: logind, the freedesktop "
                   "screensaver (Linux), poll (the system's idle time: macOS, Windows); "
                   "auto: logind, else the screensaver, on Linux; poll elsewhere.")
@click.option("--bus", metavar="ADDRESS",
              help="The D-Bus address to ask [default: the system bus for logind, "
                   "the session bus for the screensaver].")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning"]),
              default="info", show_default=True, help="How much to log (to stderr).")
@click.pass_context
def agent(ctx: click.Context, token_file: Path | None, client: str, interval: float,
          reader_kind: str, bus: str | None, log_level: str) -> None:
    """Keep a session open for the person at this computer: active, idle, locked."""
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(message)s")
    obj = ctx.find_root().obj
    api = str(obj["api"])
    token = _token(obj["token"], token_file, api)
    asyncio.run(_run(api, token, reader_kind, bus, client, interval))
