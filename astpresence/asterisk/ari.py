"""A thin ARI client for the one thing astpresence needs: ``Stasis:`` device states.

ARI has no presence at all (docs/asterisk.md, "ARI"); it can only
read and write device states it controls, ``PUT /deviceStates/{name}?deviceState=``.
The ``ari`` package on PyPI does not import on Python 3, hence this.
"""

from __future__ import annotations

import base64
import logging
import urllib.parse

import aiohttp

from astpresence.domain.model import DeviceState

logger = logging.getLogger(__name__)

#: What ARI accepts for deviceState (Devicestates REST API, "update").
ARI_STATES = frozenset(s.value for s in DeviceState) - {"UNKNOWN"}


def basic_auth(username: str, password: str) -> str:
    """The ``Authorization`` value ARI expects (HTTP basic, UTF-8)."""
    credentials = base64.b64encode(f"{username}:{password}".encode("utf-8")).decode("ascii")
    return f"Basic {credentials}"


class AriError(Exception):
    """An ARI request failed; the message names the device and the reason."""


class AriClient:
    def __init__(self, url: str, username: str, password: str, *, timeout: float = 5.0) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"ARI url must be http(s)://host:port/ari, got {url!r}")
        self._base = url.rstrip("/")
        self._headers = {"Authorization": basic_auth(username, password)}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self._session

    async def set_device_state(self, device: str, state: str) -> None:
        """``PUT /deviceStates/Stasis:<name>?deviceState=<state>``."""
        if not device.startswith("Stasis:"):
            raise AriError(f"{device}: ARI controls only Stasis: devices")
        if state not in ARI_STATES:
            raise AriError(f"{device}: ARI does not accept device state {state!r}")
        url = f"{self._base}/deviceStates/{urllib.parse.quote(device, safe=':')}"
        try:
            async with self._http().put(url, params={"deviceState": state}) as resp:
                if resp.status >= 300:
                    text = (await resp.text())[:200]
                    raise AriError(f"{device}: ARI answered {resp.status} {resp.reason}: {text}")
        except aiohttp.ClientError as exc:
            raise AriError(f"{device}: ARI at {self._base} unreachable: {exc}") from None
        except TimeoutError:
            raise AriError(f"{device}: ARI at {self._base} did not answer in time") from None
