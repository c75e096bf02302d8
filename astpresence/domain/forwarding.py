"""Call forwarding that FreePBX applies itself, as a contact card shows it.

FreePBX keeps it in astdb (docs/asterisk.md, "FreePBX conventions"):
``CF/<ext>`` (unconditional, *72), ``CFB/<ext>`` (when busy, *90),
``CFU/<ext>`` (when unavailable, *52), and follow-me under
``AMPUSER/<ext>/followme/``: ``ddial`` is ``DIRECT`` while follow-me is on
(``EXTENSION``: ring the extension only), ``grplist`` the numbers it rings,
joined by ``-`` (an external one ends with ``#``). astpresence only reads
these: FreePBX applies them before any of astpresence's rules see the call
(docs/call-handling.md, "FreePBX's own forwarding").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: A destination as a card shows it; anything else in astdb is left out.
_TARGET = re.compile(r"[A-Za-z0-9+*#._-]{1,40}")
#: Numbers of a follow-me list kept, at most.
MAX_FOLLOWME = 10
KINDS = ("unconditional", "busy", "unavailable", "followme")


def target(raw: str) -> str:
    """A forward's destination from astdb, or "" when it is not one."""
    raw = raw.strip()
    return raw if _TARGET.fullmatch(raw) else ""


def followme_numbers(ddial: str, grplist: str) -> tuple[str, ...]:
    """The numbers follow-me rings while it is on (``ddial`` = DIRECT), else ()."""
    if ddial.strip().upper() != "DIRECT":
        return ()
    numbers = (target(n.strip().rstrip("#")) for n in grplist.split("-"))
    return tuple(n for n in numbers if n)[:MAX_FOLLOWME]


@dataclass(frozen=True, slots=True)
class Forwarding:
    unconditional: str = ""
    busy: str = ""
    unavailable: str = ""
    followme: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.unconditional or self.busy or self.unavailable or self.followme)

    @property
    def on(self) -> list[str]:
        return [k for k in KINDS if getattr(self, k)]

    def json(self) -> dict[str, Any]:
        return {"on": self.on, "unconditional": self.unconditional, "busy": self.busy,
                "unavailable": self.unavailable, "followme": list(self.followme)}

    def text(self) -> str:
        """One line for a card: ``forwarded to 2002; if busy: 2003``."""
        parts = []
        if self.unconditional:
            parts.append(f"forwarded to {self.unconditional}")
        if self.busy:
            parts.append(f"if busy: {self.busy}")
        if self.unavailable:
            parts.append(f"if unavailable: {self.unavailable}")
        if self.followme:
            parts.append(f"follow-me: {', '.join(self.followme)}")
        return "; ".join(parts)


def forwarding_from_json(data: object) -> Forwarding | None:
    """:meth:`Forwarding.json` read back (a follower reads its leader's); None if absent."""
    if not isinstance(data, dict):
        return None
    fields = {k: target(str(data.get(k) or "")) for k in ("unconditional", "busy",
                                                          "unavailable")}
    numbers = data.get("followme")
    followme = tuple(t for n in numbers if (t := target(str(n))))[:MAX_FOLLOWME] \
        if isinstance(numbers, list) else ()
    found = Forwarding(**fields, followme=followme)
    return found or None
