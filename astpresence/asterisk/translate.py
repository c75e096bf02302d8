"""AMI frames and Asterisk's strings become domain values here, and nowhere else.

The bridge calls these on every event and list item; the engine only ever
sees user ids, :class:`~astpresence.domain.model.Presence`,
:class:`~astpresence.domain.model.DeviceState`, :class:`~astpresence.domain.records.UserRecord`
and :class:`~astpresence.asterisk.queues.QueueMember`. Anything that does not parse
is refused here with :class:`~astpresence.domain.model.InvalidInput` or ``None``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

from astpresence.asterisk.ami.frames import Message
from astpresence.engine.cards import Mailbox, check_mailbox
from astpresence.asterisk.codec import presence_from_change_event
from astpresence.domain.forwarding import Forwarding, followme_numbers, target
from astpresence.domain.model import (
    DeviceState,
    InvalidInput,
    Presence,
    parse_device_state,
    validate_user_id,
)
from astpresence.asterisk.queues import QueueMember
from astpresence.domain.records import UserRecord

logger = logging.getLogger(__name__)

PRESENCE_PROVIDER = "CustomPresence:"


def parse_hint(hint: str) -> tuple[tuple[str, ...], str | None]:
    """Split a hint into its devices and its presence provider.

    ``PJSIP/2001&Custom:presence-2001,CustomPresence:2001`` ->
    ``(("PJSIP/2001", "Custom:presence-2001"), "CustomPresence:2001")``.
    Devices come before the comma, joined with ``&``; the presence provider
    after it (docs/asterisk.md, "Hints and what phones see").
    """
    devices_part, _, presence_part = hint.partition(",")
    devices = tuple(d.strip() for d in devices_part.split("&") if d.strip())
    provider = presence_part.strip() or None
    return devices, provider


#: The translations below are pure and see the same few strings again and again (a
#: user's provider and hint at every change): kept, as many as a large site has.
TRANSLATIONS_KEPT = 16_384


@functools.lru_cache(maxsize=TRANSLATIONS_KEPT)
def user_id_from_provider(provider: str | None) -> str | None:
    """``CustomPresence:2000`` -> ``2000``; None for other providers and unusable ids."""
    if not provider or not provider.startswith(PRESENCE_PROVIDER):
        return None
    try:
        return validate_user_id(provider[len(PRESENCE_PROVIDER):])
    except InvalidInput:
        return None


@functools.lru_cache(maxsize=TRANSLATIONS_KEPT)
def user_from_hint(exten: str, context: str, hint: str) -> UserRecord | None:
    devices, provider = parse_hint(hint)
    uid = user_id_from_provider(provider)
    if uid is None:
        return None
    return UserRecord(id=uid, extension=exten, context=context, devices=devices, origin="hint")


def hint_user(msg: Message) -> UserRecord | None:
    """The user an ``ExtensionStatus``/``PresenceStatus``/list item's hint names."""
    hint = msg.get("Hint")
    if not hint:
        return None
    return user_from_hint(msg.get("Exten") or "", msg.get("Context") or "", hint)


def presence_change(msg: Message) -> tuple[str, Presence] | None:
    """A ``PresenceStateChange`` (live or listed): (user id, presence), None if not a user.

    Raises :class:`InvalidInput` for a state Asterisk should never send.
    """
    uid = user_id_from_provider(msg.get("Presentity"))
    if uid is None:
        return None
    return uid, presence_from_change_event(
        msg.get("Status") or "", msg.get("Subtype") or "", msg.get("Message") or "")


def device_change(msg: Message) -> tuple[str, DeviceState] | None:
    """A ``DeviceStateChange`` (live or listed); raises InvalidInput for an unknown state."""
    device = msg.get("Device")
    if not device:
        return None
    return device, parse_device_state(msg.get("State") or "")


def hint_of_state_interface(text: str) -> tuple[str, str] | None:
    """``hint:2000@internal`` -> ``("2000", "internal")`` (context may be empty)."""
    if not text.startswith("hint:"):
        return None
    exten, _, context = text[5:].partition("@")
    return exten, context


def queue_member(msg: Message) -> QueueMember | None:
    """``QueueMember`` (QueueStatus) and the live ``QueueMember*`` events."""
    queue = msg.get("Queue")
    interface = msg.get("Interface") or msg.get("Location")
    if not queue or not interface:
        return None
    return QueueMember(queue, interface, hint_of_state_interface(msg.get("StateInterface") or ""),
                       msg.get("Paused") == "1", msg.get("PausedReason") or "")


#: astdb keys of FreePBX's AMPUSER family that astpresence reads (docs/asterisk.md,
#: "FreePBX conventions"): the display name, the user's devices, and follow-me.
AMPUSER_FIELDS = ("cidname", "device", "followme/ddial", "followme/grplist")
#: FreePBX's call forwarding families: unconditional (*72), busy (*90), unavailable (*52).
FORWARD_FAMILIES = {"CF": "unconditional", "CFB": "busy", "CFU": "unavailable"}
#: Devices of one FreePBX user taken from ``AMPUSER/<ext>/device``, at most.
MAX_FREEPBX_DEVICES = 16


def ampuser_entries(items: list[Message]) -> dict[str, dict[str, str]]:
    """``DBGetTreeResponse`` items of family AMPUSER -> ``{ext: {field: value}}``.

    main/db.c prints the whole key (``/AMPUSER/2000/cidname``); only the fields
    in :data:`AMPUSER_FIELDS` are kept, so the rest of FreePBX's keys cost nothing.
    """
    out: dict[str, dict[str, str]] = {}
    for item in items:
        parts = (item.get("Key") or "").split("/")
        field = "/".join(parts[3:])
        if len(parts) < 4 or parts[0] or parts[1] != "AMPUSER" or field not in AMPUSER_FIELDS:
            continue
        out.setdefault(parts[2], {})[field] = item.get("Val") or ""
    return out


def forward_targets(items: list[Message], family: str) -> dict[str, str]:
    """``DBGetTree`` items of ``CF``, ``CFB`` or ``CFU`` -> {extension: destination}."""
    out: dict[str, str] = {}
    for item in items:
        parts = (item.get("Key") or "").split("/")
        if len(parts) == 3 and not parts[0] and parts[1] == family:
            if found := target(item.get("Val") or ""):
                out[parts[2]] = found
    return out


def forwardings(targets: Mapping[str, Mapping[str, str]],
                ampuser: Mapping[str, Mapping[str, str]]) -> dict[str, Forwarding]:
    """Per extension, what FreePBX forwards: ``targets`` (family -> {ext: destination},
    :func:`forward_targets`) and follow-me from the AMPUSER entries."""
    out: dict[str, Forwarding] = {}
    exts = set(ampuser).union(*(t.keys() for t in targets.values()))
    for ext in exts:
        entry = ampuser.get(ext, {})
        found = Forwarding(
            **{kind: targets.get(family, {}).get(ext, "")
               for family, kind in FORWARD_FAMILIES.items()},
            followme=followme_numbers(entry.get("followme/ddial", ""),
                                      entry.get("followme/grplist", "")))
        if found:
            out[ext] = found
    return out


def freepbx_devices(value: str) -> tuple[str, ...]:
    """``AMPUSER/<ext>/device`` (device ids joined with ``&``) -> the ids that can
    name a ``Custom:DEVDND<id>`` device; anything odd is left out."""
    out = []
    for dev in value.split("&"):
        dev = dev.strip()
        if dev and len(dev) <= 80 and dev.isprintable() and not any(c in dev for c in ",()&|"):
            out.append(dev)
    return tuple(out[:MAX_FREEPBX_DEVICES])


def _count(raw: str | None, what: str) -> int:
    if raw is None or not raw.isdigit() or len(raw) > 9:
        raise InvalidInput(f"{what} is not a message count: {raw!r}")
    return int(raw)


def voicemail_entry(msg: Message) -> tuple[str, Mailbox] | None:
    """A ``VoicemailUserEntry`` (app_voicemail, VoicemailUsersList) -> (mailbox, counts)."""
    box, context = msg.get("VoiceMailbox"), msg.get("VMContext")
    if not box:
        return None
    mailbox = check_mailbox(f"{box}@{context}" if context else box)
    return mailbox, Mailbox(_count(msg.get("NewMessageCount"), "NewMessageCount"),
                            _count(msg.get("OldMessageCount"), "OldMessageCount"))


def message_waiting(msg: Message) -> tuple[str, Mailbox]:
    """A ``MessageWaiting`` event (main/manager_mwi.c) or a ``MailboxCount`` answer."""
    mailbox = check_mailbox(msg.get("Mailbox") or "")
    new = msg.get("New") if msg.get("New") is not None else msg.get("NewMessages")
    old = msg.get("Old") if msg.get("Old") is not None else msg.get("OldMessages")
    return mailbox, Mailbox(_count(new, "New"), _count(old, "Old"))


def endpoint_callerid(items: list[Message]) -> str | None:
    """The ``Callerid`` of the ``EndpointDetail`` among a ``PJSIPShowEndpoint`` answer."""
    for item in items:
        if item.event == "EndpointDetail":
            return item.get("Callerid")
    return None


T = TypeVar("T")


def translated(items: list[Message], translate: Callable[[Message], T | None],
               what: str) -> Iterator[T]:
    """Domain values of list items; an item that does not parse is logged and left out."""
    for item in items:
        try:
            value = translate(item)
        except InvalidInput as exc:
            logger.warning("ignoring a %s listed by Asterisk: %s", what, exc)
            continue
        if value is not None:
            yield value
