"""What astpresence ships for the machine it runs on: the dialplan kit, the manager
snippet and the systemd unit, as package data, so an installed package (a wheel,
pipx) has them without the repository.

``astpresence dialplan kit`` and ``astpresence service unit`` print them;
:func:`write_kit` puts the kit into a directory without ever overwriting a file
someone changed, unless told to (then it keeps a backup).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

#: The kit's files, in the order they are written.
KIT_FILES = ("extensions_astpresence.conf", "manager_astpresence.conf")
UNIT_FILE = "astpresence.service"
#: The executable the shipped unit names (a virtual environment under /opt).
UNIT_EXEC = "/opt/astpresence/bin/astpresence"


def text(name: str) -> str:
    """One of the shipped files (KIT_FILES or UNIT_FILE)."""
    return (resources.files(__package__) / name).read_text(encoding="utf-8")


def unit(executable: str | None = None) -> str:
    """The systemd unit, naming ``executable`` (this installation's ``astpresence``)
    instead of the default under /opt when given."""
    body = text(UNIT_FILE)
    return body.replace(UNIT_EXEC, executable) if executable else body


def installed_executable() -> str | None:
    """The ``astpresence`` command of this installation, if it can be found: the
    script that runs now, else the one on PATH."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "astpresence" and os.path.isfile(argv0):
        return os.path.abspath(argv0)
    found = shutil.which("astpresence")
    return os.path.abspath(found) if found else None


@dataclass(frozen=True)
class Written:
    path: Path
    action: str  # "written", "unchanged", "replaced (backup: ...)"


class KitConflict(Exception):
    """Files in the target directory differ from the kit; nothing was written."""


def write_kit(directory: Path, *, force: bool = False,
              now: datetime | None = None) -> list[Written]:
    """Write the kit's files into ``directory``.

    A file that exists with other content (someone edited it, e.g. the secret in
    the manager snippet) is left alone and :class:`KitConflict` is raised before
    anything is written, unless ``force``: then it is first copied to
    ``<name>.<timestamp>.bak``.
    """
    if not directory.is_dir():
        raise KitConflict(f"{directory} is not a directory")
    wanted = {name: text(name) for name in KIT_FILES}
    changed = [name for name in KIT_FILES
               if (directory / name).exists()
               and (directory / name).read_text(encoding="utf-8", errors="replace")
               != wanted[name]]
    if changed and not force:
        raise KitConflict(
            f"{directory}: {', '.join(changed)} changed there (not the kit as shipped); "
            "nothing written. --force replaces them, keeping a backup of each")
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    out: list[Written] = []
    for name in KIT_FILES:
        path = directory / name
        if name in changed:
            backup = path.with_name(f"{name}.{stamp}.bak")
            shutil.copy2(path, backup)
            action = f"replaced (backup: {backup.name})"
        elif path.exists():
            out.append(Written(path, "unchanged"))
            continue
        else:
            action = "written"
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(wanted[name], encoding="utf-8")
        os.replace(tmp, path)
        out.append(Written(path, action))
    return out
