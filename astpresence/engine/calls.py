"""Each person's call-handling rules, as the engine keeps them (docs/call-handling.md).

The rules are stored in the store's meta table, one entry per person
(``calls/<user>``: the rules, who saved them and when), and kept in memory. What
holds now for a person (:meth:`CallHandling.handling`) follows their chosen
presence: a call overlays nothing of it, and the dialplan sees a busy phone for
itself. Each server's outbox writes it to astdb (asterisk/write_kinds.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from astpresence.domain import statuses as catalogue
from astpresence.domain.call_settings import CallSettings
from astpresence.domain.calls import (
    CALLER_KINDS,
    Action,
    CallRule,
    Callers,
    Handling,
    check_policy,
    describe,
    parse_body,
    parse_rule,
    resolve,
    shown_name,
)
from astpresence.domain.model import InvalidInput, Presence
from astpresence.engine.users import UserDirectory

logger = logging.getLogger(__name__)

#: The store's meta key of a person's rules: this prefix and their id.
META_PREFIX = "calls/"


class CallsOff(InvalidInput):
    """Call handling is not enabled on this site."""


class CallHandling:
    def __init__(self, settings: CallSettings, users: UserDirectory,
                 statuses: Sequence[catalogue.Status], mark: Callable[[str], None],
                 name: Callable[[str], str] = lambda uid: "") -> None:
        self.settings = settings
        self._users = users
        self._name = name  # the contact card's display name
        self._statuses = tuple(statuses)
        self._status_ids = tuple(s.id for s in statuses)
        self._mark = mark
        self._rules: dict[str, tuple[CallRule, ...]] = {}
        self._saved: dict[str, tuple[str, str]] = {}  # user -> (actor, ISO time)
        self._summaries: dict[str, tuple[Presence, str]] = {}  # user -> (for, summary)
        self._show: dict[str, bool] = {}  # user -> their own show_presence

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    # -- what holds now -------------------------------------------------------

    def usable(self, rule: CallRule) -> bool:
        """May the rule be applied now? A forward only where the policy allows it
        today (it may have changed since the rule was saved)."""
        return rule.action is not Action.FORWARD or self.settings.policy.allows(
            rule.to, self._users.__contains__)

    def handling(self, uid: str, chosen: Presence) -> dict[Callers, Handling]:
        """What happens now to a call for ``uid``, per kind of caller ({} when off)."""
        if not self.settings.enabled:
            return {}
        rules = self._rules.get(uid, ()) + self.settings.defaults
        if not rules:
            return {c: Handling() for c in CALLER_KINDS}
        found = catalogue.matching(self._statuses, chosen) if self._statuses else None
        status = found.id if found is not None else None
        return {c: resolve(rules, chosen.state, status, c, self.usable) for c in CALLER_KINDS}

    def summary(self, uid: str, chosen: Presence) -> str:
        """One line for the contact card ("" when off, or when no rule applies)."""
        if not self.settings.enabled or not (uid in self._rules or self.settings.defaults):
            return ""
        cached = self._summaries.get(uid)
        if cached is not None and cached[0] == chosen:
            return cached[1]
        now = self.handling(uid, chosen)
        inside, outside = now[Callers.INTERNAL], now[Callers.EXTERNAL]
        if inside == outside:
            text = describe(inside) if inside else ""
        else:
            text = f"internal {describe(inside)}; external {describe(outside)}"
        self._summaries[uid] = (chosen, text)
        return text

    def display(self, uid: str) -> str:
        """What the kit shows callers before the callee's presence ("" when not shown)."""
        if not self.settings.enabled or not self._show.get(uid, self.settings.show_presence):
            return ""
        return shown_name(self._name(uid), uid)

    def view(self, uid: str, chosen: Presence) -> dict[str, Any]:
        """The API's answer: the person's rules, the site's, and what holds now."""
        actor, at = self._saved.get(uid, ("", ""))
        now = self.handling(uid, chosen) or {c: Handling() for c in CALLER_KINDS}
        return {
            "user": uid, "enabled": self.settings.enabled,
            "rules": [r.json() for r in self._rules.get(uid, ())],
            "defaults": [r.json() for r in self.settings.defaults],
            "updated_by": actor or None, "updated_at": at or None,
            "show_presence": self._show.get(uid),
            "shown_to_callers": self.display(uid) or None,
            "now": {c.value: {"summary": describe(h),
                              "rules": {on: r.json() for on in ("call", "busy", "no_answer",
                                                                "unregistered")
                                        if (r := getattr(h, on)) is not None}}
                    for c, h in now.items()},
        }

    # -- changes --------------------------------------------------------------

    def prepare(self, uid: str, body: object, actor: str, now: datetime
                ) -> tuple[tuple[CallRule, ...], str]:
        """Check ``body`` (``{"rules": [...]}``) for ``uid``: the rules and the meta
        entry to store. InvalidInput (nothing changes) when a rule is invalid or a
        forward goes where the site's policy does not allow."""
        if not self.settings.enabled:
            raise CallsOff("call handling is off on this site: an admin enables it with a "
                           "[calls] section in the config")
        rules, show = parse_body(body, self._status_ids)
        check_policy(rules, self.settings.policy, self._users.__contains__)
        entry = json.dumps({"rules": [r.json() for r in rules], "show_presence": show,
                            "actor": actor, "at": now.isoformat()}, separators=(",", ":"))
        return rules, entry

    def apply(self, uid: str, rules: tuple[CallRule, ...], entry: str) -> None:
        """The rules of ``uid`` are stored: hold them and rewrite what Asterisk has."""
        self._set(uid, rules, entry)
        self._mark(uid)

    def _set(self, uid: str, rules: tuple[CallRule, ...], entry: str) -> None:
        data = json.loads(entry)
        self._summaries.pop(uid, None)
        show = data.get("show_presence")
        if isinstance(show, bool):
            self._show[uid] = show
        else:
            self._show.pop(uid, None)
        if rules:
            self._rules[uid] = rules
        else:
            self._rules.pop(uid, None)
        self._saved[uid] = (str(data.get("actor", "")), str(data.get("at", "")))

    def load(self, stored: Mapping[str, str]) -> None:
        """The meta entries (``calls/<user>`` -> JSON) as stored. A rule that no longer
        reads (a status removed from the catalogue) is left out with a warning."""
        self._rules.clear()
        self._saved.clear()
        self._summaries.clear()
        self._show.clear()
        for key, text in stored.items():
            uid = key[len(META_PREFIX):]
            try:
                data = json.loads(text)
                raw = data["rules"]
                if not isinstance(raw, list):
                    raise InvalidInput("rules is not a list")
            except (ValueError, KeyError, TypeError) as exc:
                logger.warning("stored call handling of %s cannot be read (%s); ignored",
                               uid, exc)
                continue
            rules = []
            for i, item in enumerate(raw):
                try:
                    rules.append(parse_rule(item, self._status_ids, f"rule {i + 1}"))
                except InvalidInput as exc:
                    logger.warning("stored call handling of %s: %s; that rule is ignored",
                                   uid, exc)
            self._set(uid, tuple(rules), text)
