"""What astpresence ships for Asterisk and systemd: dialplan hints, presets and the
kit, the service unit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import click

from astpresence.asterisk.codec import encode_presence_value
from astpresence.app import kit
from astpresence.app.config import load_config
from astpresence.app.settings import ConfigError
from astpresence.domain.model import Presence

from astpresence.cli.common import _client, fail


# -- dialplan helpers ---------------------------------------------------------


@click.group()
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


@click.group()
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
