"""The daemon's event loop: uvloop's when installed, asyncio's otherwise."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from astpresence.domain.logsafe import clip

logger = logging.getLogger(__name__)


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when it is installed (``pip install 'astpresence[fast]'``), unless
    ``ASTPRESENCE_EVENT_LOOP=asyncio`` asks for the standard one (bench/README.md has
    both measured); None: the standard loop."""
    wanted = os.environ.get("ASTPRESENCE_EVENT_LOOP", "auto")
    if wanted not in ("auto", "asyncio", "uvloop"):
        logger.warning("ASTPRESENCE_EVENT_LOOP=%s is not one of auto, asyncio, uvloop; "
                       "using auto", clip(wanted))
        wanted = "auto"
    if wanted == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if wanted == "uvloop":
            logger.warning("ASTPRESENCE_EVENT_LOOP=uvloop but uvloop is not installed "
                           "(pip install 'astpresence[fast]'); using asyncio's loop")
        return None
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return loop_factory
