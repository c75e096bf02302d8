"""What the engine decides from the phones, once the Asterisk side has translated
their events: missed-call auto-away, and FreePBX's DND switch as the person's dnd.

The Asterisk side (asterisk/sync.py) only says what happened (a call step on a
user's devices, the DND device switched and not by astpresence itself); the rules
of what that means for presence live here, next to the engine they change.
"""

from __future__ import annotations

import logging
from datetime import datetime

from astpresence.domain import rules
from astpresence.domain import behaviours
from astpresence.domain.model import DeviceState, Presence, State
from astpresence.engine.devices import CallEnd
from astpresence.engine.service import MANUAL, PresenceService
from astpresence.store.base import Batch

logger = logging.getLogger(__name__)

#: The actor of a dnd switched on with FreePBX's DND codes (*76/*78).
FREEPBX_DND = "freepbx-dnd"


def call_step(engine: PresenceService, uid: str, states: tuple[DeviceState, ...],
              now: datetime, batch: Batch) -> None:
    """Missed-call auto-away: a ring that ends without any device in a call."""
    ended = engine.devices.call_step(uid, states)
    if ended is CallEnd.ANSWERED:
        engine.contributions.drop(uid, rules.SOURCE_AUTO, batch)
    elif ended is CallEnd.AUTO_AWAY and engine.contributions.get(uid, rules.SOURCE_AUTO) is None:
        logger.info("%s missed %d calls in a row: auto-away", uid, engine.rules.missed_calls_away)
        engine.contributions.put(behaviours.auto_contribution(uid, now, engine.rules), batch)


def freepbx_dnd_switched(engine: PresenceService, uid: str, on: bool, batch: Batch) -> None:
    """FreePBX DND switched on or off (not by astpresence's own write).

    On is taken as the person's manual dnd, like a feature code on the phone
    (protected: a call does not overlay it). Off removes that dnd, unless the
    person chose something else since.
    """
    manual = engine.contributions.get(uid, MANUAL)
    # With dnd_sync the switch and astpresence's dnd are one thing: FreePBX's off
    # ends any manual dnd; without it, only the dnd it switched on.
    from_freepbx = manual is not None and (
        manual.actor == FREEPBX_DND
        or engine.dnd_sync and manual.presence.state is State.DND)
    if on:
        if manual is None or manual.presence.state is not State.DND:
            logger.info("FreePBX DND of %s switched on", uid)
            engine.set_manual_in(uid, Presence(State.DND), FREEPBX_DND, batch,
                                 reason="FreePBX DND on")
    elif from_freepbx:
        logger.info("FreePBX DND of %s switched off", uid)
        engine.clear_manual_in(uid, FREEPBX_DND, batch, reason="FreePBX DND off")
