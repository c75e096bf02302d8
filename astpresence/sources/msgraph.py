"""What every source that talks to Microsoft Graph shares (calendars, Teams): the
client-credentials token, bounded bodies, Retry-After, JSON objects.

Errors are :class:`RemoteError` with a message for the admin who configured
the source: never the secret, never a token, never the body.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from typing import Any

import aiohttp

#: Microsoft's endpoints (a config may point both at a test server).
M365_AUTHORITY = "https://login.microsoftonline.com"
M365_GRAPH = "https://graph.microsoft.com/v1.0"
#: The longest Retry-After honoured.
MAX_RETRY_AFTER = 60.0
#: A token endpoint's answer, at most.
MAX_TOKEN_BYTES = 1024 * 1024


class RemoteError(Exception):
    """A remote service could not be read; the message says why."""


class Unauthorized(RemoteError):
    """Graph refused the token (401): get a new one once."""


async def read_limited(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The body, or RemoteError once it passes ``max_bytes`` (read no further)."""
    if resp.content_length is not None and resp.content_length > max_bytes:
        raise RemoteError(f"feed is {resp.content_length} bytes, more than the limit of "
                          f"{max_bytes} (max_bytes)")
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > max_bytes:
            raise RemoteError(f"feed is larger than the limit of {max_bytes} bytes (max_bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


async def m365_token(session: aiohttp.ClientSession, authority: str, tenant: str,
                     client_id: str, secret: str) -> tuple[str, float]:
    """OAuth 2.0 client credentials (the tenant's v2.0 token endpoint): (token, lifetime s)."""
    url = f"{authority.rstrip('/')}/{tenant}/oauth2/v2.0/token"
    form = {"grant_type": "client_credentials", "client_id": client_id,
            "client_secret": secret, "scope": "https://graph.microsoft.com/.default"}
    try:
        async with session.post(url, data=form) as resp:
            body = await read_limited(resp, MAX_TOKEN_BYTES)
            if resp.status in (400, 401):
                raise RemoteError(f"the tenant refused the app's credentials (HTTP "
                                  f"{resp.status}{_oauth_error(body)})")
            if resp.status != 200:
                raise RemoteError(f"the token endpoint answered HTTP {resp.status}")
    except aiohttp.ClientError as exc:
        raise RemoteError(f"token endpoint unreachable: {type(exc).__name__}") from None
    except TimeoutError:
        raise RemoteError("token endpoint unreachable: timed out") from None
    data = await asyncio.to_thread(json_object, body)
    token = data.get("access_token")
    if not isinstance(token, str) or not token:
        raise RemoteError("the token endpoint answered without an access_token")
    lifetime = data.get("expires_in", 3600)
    return token, float(lifetime) if isinstance(lifetime, (int, float)) else 3600.0


def _oauth_error(body: bytes) -> str:
    try:
        code = json.loads(body).get("error")
    except (ValueError, AttributeError, RecursionError):
        return ""
    return f": {str(code)[:60]}" if code else ""


def json_object(body: bytes) -> dict[str, Any]:
    """A JSON object, or RemoteError saying what the body is instead."""
    try:
        data = json.loads(body)
    except ValueError:
        raise RemoteError("the answer is not JSON") from None
    except RecursionError:
        raise RemoteError("the answer is nested too deeply") from None
    if not isinstance(data, dict):
        raise RemoteError("the answer is not a JSON object")
    return data


def retry_after(raw: str | None, attempt: int) -> float:
    """Seconds to wait before retrying a throttled request: the service's Retry-After
    (seconds), else 1, 2, 4, ...; never more than :data:`MAX_RETRY_AFTER`."""
    try:
        wait = float(raw) if raw is not None else 2.0 ** attempt
    except ValueError:
        wait = 2.0 ** attempt
    if wait != wait:  # NaN
        wait = 2.0 ** attempt
    return min(max(wait, 0.0), MAX_RETRY_AFTER)


def token_roles(token: str) -> frozenset[str] | None:
    """The application permissions an access token carries (its ``roles`` claim), or
    None when it is not a JWT. Read to say what is missing, never trusted for
    anything: Graph checks the token itself."""
    parts = token.split(".")
    if len(parts) != 3 or len(parts[1]) > 65536:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        return None
    roles = payload.get("roles") if isinstance(payload, dict) else None
    if not isinstance(roles, list):
        return frozenset()
    return frozenset(str(r)[:100] for r in roles[:100])
