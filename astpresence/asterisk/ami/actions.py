"""AMI actions in flight, sans I/O: each waits for the frames carrying its ActionID.

A response resolves its action (an error answer raises :class:`ActionError`);
a list action collects its item events until ``EventList: Complete``; late
events of a list action given up on are dropped; every other event is live
and goes back to the caller for the dispatcher (client.py).

Asterisk facts this relies on (docs/asterisk.md, main/manager.c):

- The session writes an action's response before any event queued while the
  action ran (``process_message`` then ``process_events``), but events are
  produced asynchronously (stasis): an action's events may arrive after the
  response to the *next* action. Nothing here assumes they follow at once.
- A refused login is answered ``Response: Error`` / ``Message: Authentication
  failed`` after a one-second sleep, then Asterisk closes the socket.
- List actions answer ``Response: Success`` / ``EventList: start``, then item
  events carrying the ActionID, then an event with ``EventList: Complete``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field

from astpresence.asterisk.ami.frames import Banner, Message

logger = logging.getLogger(__name__)


class AMIError(Exception):
    """Base class of every error raised by :class:`AMIClient`."""


class AMIConnectionError(AMIError):
    """The link could not be opened, is not AMI, or was lost."""


class AuthenticationError(AMIError):
    """Asterisk refused the Login."""

    def __init__(self, username: str) -> None:
        super().__init__(f"authentication failed for user {username}")
        self.username = username


class ActionError(AMIError):
    """Asterisk answered ``Response: Error``; ``.response`` is its frame."""

    def __init__(self, action: str, response: Message) -> None:
        message = response.get("Message") or "(no message)"
        super().__init__(f"{action} failed: {message}")
        self.action = action
        self.response = response


class ActionTimeout(AMIError):
    """No (complete) answer to an action in time."""

    def __init__(self, action: str, timeout: float) -> None:
        super().__init__(f"{action} got no response within {timeout:g} s")
        self.action = action
        self.timeout = timeout


@dataclass(eq=False)
class _Pending:
    action: str
    future: asyncio.Future[Message | list[Message]]
    is_list: bool
    items: list[Message] = field(default_factory=list)


class Actions:
    """Actions waiting for their answers, by ActionID."""

    def __init__(self) -> None:
        self._pending: dict[str, _Pending] = {}
        # List actions given up on (timeout): their late events are dropped
        # instead of being taken for live events.
        self._abandoned: deque[str] = deque(maxlen=256)

    def add(self, action_id: str, action: str, future: asyncio.Future[Message | list[Message]],
            is_list: bool) -> _Pending:
        pending = _Pending(action, future, is_list)
        self._pending[action_id] = pending
        return pending

    def done(self, action_id: str) -> None:
        self._pending.pop(action_id, None)

    def expire(self, action_id: str, timeout: float) -> None:
        """No answer within ``timeout``: the action fails with :class:`ActionTimeout`."""
        pending = self._pending.pop(action_id, None)
        if pending is not None and not pending.future.done():
            pending.future.set_exception(ActionTimeout(pending.action, timeout))

    def abandon(self, action_id: str) -> None:
        self._abandoned.append(action_id)

    def fail_all(self, error: Exception) -> None:
        """The link ended: every action waiting gets ``error``."""
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(error)
        self._pending.clear()

    def route(self, item: Banner | Message) -> Message | None:
        """Hand a frame to the action waiting for it; returns it if it is a live event."""
        if isinstance(item, Banner):  # the parser emits one, at the start
            return None
        action_id = item.action_id
        pending = self._pending.get(action_id) if action_id is not None else None
        if item.response is not None:
            if pending is None:
                logger.debug("AMI response for unknown ActionID %s dropped", action_id)
            else:
                _on_response(pending, item)
                # Answered: no longer waiting (a list action goes on until Complete).
                if pending.future.done() and action_id is not None:
                    del self._pending[action_id]
            return None
        if item.event is None:
            logger.warning("AMI frame without Response or Event dropped: %r", item.headers[:3])
            return None
        if pending is not None and pending.is_list:
            _on_list_event(pending, item)
        elif action_id is not None and action_id in self._abandoned:
            logger.debug("Late %s event of an abandoned list action dropped", item.event)
        else:
            return item
        return None


def _on_response(pending: _Pending, message: Message) -> None:
    if pending.future.done():
        return
    if (message.response or "").lower() == "error":
        pending.future.set_exception(ActionError(pending.action, message))
    elif not pending.is_list:
        pending.future.set_result(message)
    elif (message.get("EventList") or "").lower() == "start":
        return  # the items follow as events
    else:
        # A Success without a list to follow: nothing to collect.
        pending.future.set_result([])

def _on_list_event(pending: _Pending, event: Message) -> None:
    if pending.future.done():
        return
    if (event.get("EventList") or "").lower() == "complete":
        pending.future.set_result(pending.items)
    else:
        pending.items.append(event)
