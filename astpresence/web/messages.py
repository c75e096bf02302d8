"""What the event stream sends: the messages of presence changes and link events,
rendered once per event and visibility (every client that may see a change as
much gets the same text: fan-out costs one encoding, not one per client)."""

from __future__ import annotations

import functools
import json
from typing import Any

from astpresence.domain.records import PresenceView, presence_json
from astpresence.engine.events import ChangeEvent, Event, LinkEvent
from astpresence.web.auth import Principal, Privacy, project


#: What a change event names as changed. ``chosen`` and ``activity`` too: under an
#: overlay (a call, offline) the effective fields stay put while the person's choice
#: or a source's (idle, a calendar) moves, and clients show that choice.
CHANGED_FIELDS = ("state", "subtype", "message", "source", "name", "voicemail", "forwarding",
                  "calls", "chosen", "activity")


def link_json(event: LinkEvent | None) -> dict[str, Any]:
    """``{"type": "link", "state": "down" | "synced", ...}``; None: never synced yet."""
    if event is None:
        return {"type": "link", "state": "down", "since": None, "asterisk": None,
                "reason": "not synced with Asterisk yet", "node": None}
    return {"type": "link", "state": event.state, "since": event.since.isoformat(),
            "asterisk": event.asterisk, "reason": event.reason, "node": event.node}


@functools.lru_cache(maxsize=256)
def _projected(view: PresenceView, mode: str) -> dict[str, Any]:
    """Rendered once per view and visibility, not once per client (fan-out)."""
    return project(presence_json(view), mode)


class Viewer:
    """One WebSocket client's subscription and visibility."""

    def __init__(self, who: Principal, privacy: Privacy, users: set[str] | None) -> None:
        self.who = who
        self.privacy = privacy
        self.users = users  # None = everyone

    def render(self, event: Event) -> str | None:
        """The event's message for this client, as text (None: nothing to send)."""
        if isinstance(event, LinkEvent):
            return json.dumps(link_json(event))
        if self.users is not None and event.user not in self.users:
            return None
        return _change_text(event, self.privacy.view_mode(self.who, event.user))


#: Texts of recent change events by (seq, visibility): a change is encoded once for
#: every client that may see it as much, not once per client (fan-out). Each entry
#: keeps its event, so a number reused (a follower's renumbering) is never mistaken.
_TEXTS: dict[tuple[int, str], tuple[ChangeEvent, str | None]] = {}
_TEXTS_KEPT = 1024


def _change_text(event: ChangeEvent, mode: str) -> str | None:
    key = (event.seq, mode)
    hit = _TEXTS.get(key)
    if hit is not None and hit[0] is event:
        return hit[1]
    old, new = _projected(event.old, mode), _projected(event.new, mode)
    changed = [f for f in CHANGED_FIELDS if old[f] != new[f]]
    text = json.dumps({"type": "presence", "seq": event.seq, "user": event.user,
                       "presence": new, "changed": changed}) if changed else None
    if len(_TEXTS) >= _TEXTS_KEPT:
        del _TEXTS[next(iter(_TEXTS))]  # the oldest
    _TEXTS[key] = (event, text)
    return text


