"""What contact cards need from one Asterisk server, read at each sync.

FreePBX's astdb (names, devices), app_voicemail's boxes (or MailboxCount for the
boxes the config names), and the caller ID names of the phones of users without
a name yet. Split out of the bridge, which starts these reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from astpresence.asterisk.ami.client import ActionError, AMIClient
from astpresence.asterisk.sync import AsteriskSync
from astpresence.asterisk.translate import (
    FORWARD_FAMILIES,
    ampuser_entries,
    forward_targets,
    forwardings,
    endpoint_callerid,
    message_waiting,
    translated,
    voicemail_entry,
)
from astpresence.domain.forwarding import target
from astpresence.domain.logsafe import clip
from astpresence.domain.model import InvalidInput
from astpresence.engine.cards import Mailbox
from astpresence.engine.service import PresenceService

#: Contact-card reads (caller IDs, mailbox counts) in flight at once.
MAX_CONCURRENT_READS = 16

T = TypeVar("T")


class CardReads:
    def __init__(self, service: PresenceService, sync: AsteriskSync,
                 log: logging.LoggerAdapter,  # type: ignore[type-arg]
                 progress: Callable[[str], None]) -> None:
        self._service = service
        self._sync = sync
        self._log = log
        self._progress = progress  # "reading caller IDs 12/100", "done": the link's status
        self._mailbox_count_needed = False

    async def astdb(self, client: AMIClient) -> None:
        """FreePBX's astdb: AMPUSER (display names, each user's devices for DEVDND,
        follow-me) and the call forwarding families CF, CFB and CFU."""
        try:
            items = await client.send_list_action("DBGetTree", {"Family": "AMPUSER"})
        except ActionError as exc:
            # DBGetTree needs Asterisk 16.28/18.14/19.6+ and read=system or reporting.
            self._log.info("astdb not read (%s): no FreePBX names, devices or forwarding",
                           exc)
            return
        entries = ampuser_entries(items)
        if entries:
            self._log.info("FreePBX astdb: %d extension(s) in AMPUSER", len(entries))
        self._sync.on_ampuser(entries)
        targets = {family: forward_targets(
            await client.send_list_action("DBGetTree", {"Family": family}), family)
            for family in FORWARD_FAMILIES}
        known = self._extensions()
        self._sync.on_forwarding({ext: f for ext, f in forwardings(targets, entries).items()
                                  if ext in known})

    def _extensions(self) -> set[str]:
        """The users' extensions: forwarding of any other is not kept."""
        return {u.extension for u in self._service.users.all() if u.extension}

    async def forwarding_of(self, client: AMIClient, extension: str) -> None:
        """One extension's forwarding read again: FreePBX moved its ``Custom:CF<ext>`` or
        ``Custom:FOLLOWME<ext>`` device (its *72/*73, *21). CFB and CFU have no device
        of their own: they are read with it, and at each sync."""
        if extension not in self._extensions():
            return

        async def get(family: str, key: str) -> str:
            try:
                answer = await client.send_list_action("DBGet", {"Family": family, "Key": key})
            except ActionError:  # "Database entry not found"
                return ""
            return next((m.get("Val") or "" for m in answer if m.event == "DBGetResponse"), "")

        targets = {family: {extension: value} for family in FORWARD_FAMILIES
                   if (value := target(await get(family, extension)))}
        followme = {extension: {f: await get("AMPUSER", f"{extension}/{f}")
                                for f in ("followme/ddial", "followme/grplist")}}
        self._sync.on_forwarding_of(extension, forwardings(targets, followme).get(extension))

    async def voicemail(self, client: AMIClient) -> None:
        """New/old counts of every app_voicemail box (one list action); MessageWaiting
        events keep them current. Without app_voicemail, the mailboxes set in the
        config are asked with MailboxCount after the sync (:meth:`after_sync`)."""
        self._mailbox_count_needed = False
        if not self._service.cards.mailboxes():
            return
        try:
            listed = await client.send_list_action("VoicemailUsersList")
        except ActionError as exc:
            self._log.info("VoicemailUsersList failed (%s): voicemail counts only for mailboxes "
                        "set in the config (MailboxCount)", exc)
            self._mailbox_count_needed = True
            return
        counts = dict(translated(listed, voicemail_entry, "voicemail box"))
        self._sync.on_mailboxes(counts)

    async def _mailbox_counts(self, client: AMIClient) -> None:
        """MailboxCount for each mailbox the config names (external MWI: res_mwi_external
        and the like answer it too), a few at a time."""
        service = self._service
        boxes = [service.cards.mailbox(u.id) for u in service.users.all() if u.mailbox]
        counts: dict[str, Mailbox] = {}

        async def one(box: str) -> None:
            with contextlib.suppress(ActionError, InvalidInput):
                counts.update([message_waiting(await client.send_action(
                    "MailboxCount", {"Mailbox": box}))])

        await each(boxes, one)
        self._sync.on_mailboxes(counts)

    async def after_sync(self, client: AMIClient) -> None:
        """After the sync: MailboxCount where needed, then the phones' caller IDs."""
        if self._mailbox_count_needed:
            await self._mailbox_counts(client)
        await self._endpoint_names(client)

    async def _endpoint_names(self, client: AMIClient) -> None:
        """Caller ID names of the phones of users with no name from config or astdb."""
        service = self._service
        cards = service.cards
        wanted = {uid: eps for uid in service.users.ids()
                  if cards.needs_endpoint_name(uid) and (eps := cards.phone_endpoints(uid))}
        found: dict[str, str] = {}
        if wanted:
            try:
                listed = {e.get("ObjectName") for e in
                          await client.send_list_action("PJSIPShowEndpoints")}
            except ActionError as exc:  # "No endpoints found", or res_pjsip not loaded
                self._log.info("no PJSIP endpoints listed (%s): no caller ID names", exc)
                listed = set()
            todo = [(uid, ep) for uid, eps in wanted.items()
                    if (ep := next((e for e in eps if e in listed), None)) is not None]
            total, done = len(todo), 0
            self._progress(f"reading caller IDs 0/{total}")
            self._log.info("reading the caller IDs of %d phone(s) for display names", total)

            async def one(phone: tuple[str, str]) -> None:
                nonlocal done
                uid, endpoint = phone
                try:
                    items = await client.send_list_action("PJSIPShowEndpoint",
                                                          {"Endpoint": endpoint})
                except ActionError as exc:
                    self._log.debug("no caller ID for %s: %s", clip(endpoint), exc)
                    items = []
                callerid = endpoint_callerid(items)
                if callerid:
                    found[uid] = callerid
                done += 1
                self._progress(f"reading caller IDs {done}/{total}")

            await each(todo, one)
        self._sync.on_endpoint_names(found)
        self._progress("done")
        self._log.info("contact cards read: %d name(s) from caller IDs", len(found))


async def each(items: Sequence[T], work: Callable[[T], Awaitable[None]],
               limit: int = MAX_CONCURRENT_READS) -> None:
    """``work(item)`` for every item, ``limit`` at a time: that many workers take
    the items in turn, so the tasks are as many as the workers. (A task per
    item held back by a semaphore made 10,000 tasks in one loop turn after a
    sync of 10,000 phones.)"""
    items_left = iter(items)

    async def worker() -> None:
        for item in items_left:
            await work(item)

    await asyncio.gather(*(worker() for _ in range(min(limit, len(items)))))
