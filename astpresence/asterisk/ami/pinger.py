"""The pinger of one AMI link: a server that keeps the socket open but stops
answering is declared lost within two ``interval``\\ s."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from astpresence.asterisk.ami.actions import ActionError, ActionTimeout, AMIConnectionError

logger = logging.getLogger(__name__)


async def keep_alive(interval: float, closed: asyncio.Event,
                     ping: Callable[[], Awaitable[Any]], busy: Callable[[], int | None],
                     end: Callable[[str], None]) -> None:
    """``Ping`` every ``interval`` until ``closed``; ``end`` the link when one goes
    unanswered, unless ``busy()`` says how many events the reader holds back (the
    answer waits in the socket behind them: we are the slow side, not a dead link)."""
    while not closed.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await closed.wait()
            return
        try:
            await ping()
        except ActionTimeout:
            waiting = busy()
            if waiting is not None:
                logger.debug("Ping unanswered while %d events wait: the link is busy", waiting)
                continue
            end(f"no answer to Ping within {interval:g} s")
            return
        except ActionError:
            pass  # an answer, even a refusal, proves the link is alive
        except AMIConnectionError:
            return
