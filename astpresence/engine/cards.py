"""Contact cards: a person's display name and voicemail count, as Asterisk knows them.

Names come, in this order, from the config, FreePBX's astdb key
``AMPUSER/<ext>/cidname``, and the caller ID of the user's PJSIP endpoint
(``PJSIPShowEndpoint``); all are read again at every resync. The voicemail
count is the number of new messages in the user's mailbox (``<ext>@default``
unless the config says otherwise), read with ``VoicemailUsersList`` and kept
current by ``MessageWaiting`` events. Plain values only: the AMI side
(bridge.py) reads, this decides what each user shows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeAlias

from astpresence.domain.forwarding import Forwarding
from astpresence.domain.model import InvalidInput, normalise_text
from astpresence.engine.users import UserDirectory

#: A display name is cut here (characters); a board tile or CLI column holds no more.
MAX_NAME = 100
#: ``mailbox[@context]`` as app_voicemail names them.
_MAILBOX = re.compile(r"[^@\s,&|;()\"'\\]{1,80}(@[^@\s,&|;()\"'\\]{1,80})?")
#: Each user's mailbox unless the config says otherwise ([cards] mailbox). Counts
#: are kept only for users' mailboxes: MessageWaiting for any other is dropped.
DEFAULT_MAILBOX = "{extension}@default"


def check_mailbox(raw: object, what: str = "mailbox") -> str:
    """``2000@default``; ``2000`` means ``2000@default`` (app_voicemail's separate_mailbox)."""
    if not isinstance(raw, str) or not _MAILBOX.fullmatch(raw):
        raise InvalidInput(f"{what}: expected a voicemail box like '2000@default', got {raw!r}")
    return raw if "@" in raw else f"{raw}@default"


def callerid_name(text: str) -> str:
    """The name in a caller ID as Asterisk prints it (main/callerid.c ast_callerid_merge).

    ``"Alice Martin" <2000>`` -> ``Alice Martin``; the quoted name has ``"`` and
    ``\\`` escaped with a backslash (ast_escape_quoted). A caller ID with only a
    number (``2000``, ``<2000>``) or ``<unknown>`` has no name: "".
    """
    text = text.strip()
    if text.startswith('"'):
        out: list[str] = []
        chars = iter(text[1:])
        for ch in chars:
            if ch == "\\":
                ch = next(chars, "")
            elif ch == '"':
                break
            out.append(ch)
        name = "".join(out)
    elif "<" in text:
        name = text[:text.index("<")]
    else:
        name = text
    return display_name(name)


def display_name(raw: str) -> str:
    """A name fit to show: no control characters, trimmed, at most :data:`MAX_NAME`
    characters; a bare number is not a name."""
    name = normalise_text(" ".join(raw.split()))[:MAX_NAME].strip()
    if not name or name.lstrip("+").isdigit():
        return ""
    return name


#: What a user's card shows: (display name, new voicemail messages or None, the
#: forwarding FreePBX applies or None).
Card: TypeAlias = tuple[str, int | None, Forwarding | None]
NO_CARD: Card = ("", None, None)


@dataclass(frozen=True, slots=True)
class Mailbox:
    new: int
    old: int


class Cards:
    """Names and voicemail counts of the users in a :class:`UserDirectory`."""

    def __init__(self, users: UserDirectory, *, mailbox_pattern: str = DEFAULT_MAILBOX,
                 read_names: bool = True) -> None:
        self._users = users
        self.mailbox_pattern = mailbox_pattern
        self.read_names = read_names
        self._astdb: dict[str, str] = {}  # user -> AMPUSER/<ext>/cidname
        self._endpoint: dict[str, str] = {}  # user -> caller ID name of a phone
        self._counts: dict[str, Mailbox] = {}  # mailbox -> counts, users' mailboxes only
        self._forwarding: dict[str, Forwarding] = {}  # user -> FreePBX's CF/CFB/CFU/follow-me
        self._boxes: tuple[dict[str, str], dict[str, str]] | None = None

    # -- what users show -------------------------------------------------

    def card(self, uid: str) -> Card:
        return self.name(uid), self.voicemail(uid), self._forwarding.get(uid)

    def name(self, uid: str) -> str:
        user = self._users.get(uid)
        if user is not None and user.name:
            return user.name
        return self._astdb.get(uid) or self._endpoint.get(uid, "")

    def voicemail(self, uid: str) -> int | None:
        """New messages waiting; None when the user has no known mailbox."""
        box = self.mailbox(uid)
        counts = self._counts.get(box) if box else None
        return counts.new if counts is not None else None

    def mailbox(self, uid: str) -> str:
        return self._mailboxes()[0].get(uid, "")

    def mailboxes(self) -> list[str]:
        return list(self._mailboxes()[1])

    def has_mailbox(self, mailbox: str) -> bool:
        """Is ``mailbox`` some user's?"""
        return mailbox in self._mailboxes()[1]

    # -- what Asterisk said ----------------------------------------------

    def users_changed(self) -> None:
        """The users changed: mailboxes are worked out again when next needed."""
        self._boxes = None

    def _mailboxes(self) -> tuple[dict[str, str], dict[str, str]]:
        """(user -> mailbox, mailbox -> user), and cards of users gone dropped."""
        if self._boxes is not None:
            return self._boxes
        mailbox_of: dict[str, str] = {}
        for user in self._users.all():
            box = user.mailbox
            if not box and self.mailbox_pattern and user.extension:
                try:
                    box = check_mailbox(self.mailbox_pattern.replace("{extension}",
                                                                     user.extension))
                except InvalidInput:
                    box = ""  # an extension that cannot name a mailbox
            if box:
                mailbox_of[user.id] = box
        by_mailbox = {box: uid for uid, box in mailbox_of.items()}
        self._counts = {box: c for box, c in self._counts.items() if box in by_mailbox}
        for table in (self._astdb, self._endpoint, self._forwarding):
            for uid in [u for u in table if u not in self._users]:
                del table[uid]
        self._boxes = (mailbox_of, by_mailbox)
        return self._boxes

    def replace_astdb_names(self, by_extension: Mapping[str, str]) -> dict[str, Card]:
        """``AMPUSER/<ext>/cidname`` by extension; returns the cards that changed, as
        they were."""
        fresh = {}
        for user in self._users.all():
            name = display_name(by_extension.get(user.extension, "")) if user.extension else ""
            if name:
                fresh[user.id] = name
        return self._replace(self._astdb, fresh)

    def replace_endpoint_names(self, by_user: Mapping[str, str]) -> dict[str, Card]:
        """Caller ID (as Asterisk prints it) of each user's phone; returns the cards
        that changed, as they were."""
        fresh = {uid: n for uid, raw in by_user.items() if uid in self._users
                 and (n := callerid_name(raw))}
        return self._replace(self._endpoint, fresh)

    def _replace(self, table: dict[str, str], fresh: dict[str, str]) -> dict[str, Card]:
        self._mailboxes()
        before = {uid: self.card(uid) for uid in set(table) | set(fresh)}
        table.clear()
        table.update(fresh)
        return {uid: card for uid, card in before.items() if self.card(uid) != card}

    def replace_forwarding(self, by_extension: Mapping[str, Forwarding]) -> dict[str, Card]:
        """FreePBX's forwarding of every extension (read at each sync); returns the
        cards that changed, as they were."""
        self._mailboxes()
        fresh = {u.id: f for u in self._users.all()
                 if u.extension and (f := by_extension.get(u.extension))}
        before = {uid: self.card(uid) for uid in set(self._forwarding) | set(fresh)}
        self._forwarding = fresh
        return {uid: card for uid, card in before.items() if self.card(uid) != card}

    def replace_mailboxes(self, counts: Mapping[str, Mailbox]) -> dict[str, Card]:
        """Counts of every mailbox Asterisk lists (a user's box not listed has none);
        returns the cards that changed, as they were."""
        mailbox_of, by_mailbox = self._mailboxes()
        before = {uid: self.card(uid) for uid in mailbox_of}
        self._counts = {box: c for box, c in counts.items() if box in by_mailbox}
        return {uid: card for uid, card in before.items() if self.card(uid) != card}

    def mailbox_changed(self, mailbox: str, counts: Mailbox) -> dict[str, Card]:
        """A ``MessageWaiting``: the card that changed, as it was (none for a mailbox
        no user has: nothing is kept for it)."""
        uid = self._mailboxes()[1].get(mailbox)
        if uid is None or self._counts.get(mailbox) == counts:
            return {}
        before = self.card(uid)
        self._counts[mailbox] = counts
        return {uid: before} if self.card(uid) != before else {}

    def missing_mailboxes(self, listed: Iterable[str]) -> list[str]:
        """Mailboxes set in the config that Asterisk does not have (for a warning)."""
        have = set(listed)
        return sorted(box for uid, box in self._mailboxes()[0].items()
                      if box not in have and (u := self._users.get(uid)) is not None
                      and u.mailbox)

    def needs_endpoint_name(self, uid: str) -> bool:
        """No name from the config or astdb: worth asking the phone's endpoint."""
        user = self._users.get(uid)
        return (self.read_names and user is not None and not user.name
                and uid not in self._astdb)

    def phone_endpoints(self, uid: str) -> list[str]:
        """The PJSIP endpoints among the user's devices, where a caller ID name can be read."""
        user = self._users.get(uid)
        if user is None:
            return []
        return [d.partition("/")[2] for d in user.devices if d.upper().startswith("PJSIP/")]
