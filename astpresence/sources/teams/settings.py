"""``[teams]`` in the config, validated at load time (shaped like an m365 calendar).

```toml
[teams]
tenant = "contoso.onmicrosoft.com"
client_id = "..."
client_secret_env = "TEAMS_SECRET"        # or client_secret_file
# authority = "https://login.microsoftonline.com"
# graph = "https://graph.microsoft.com/v1.0"
sync = "both"                              # both | from_teams | to_teams
poll = 30                                  # seconds between batch reads without notifications
# notification_url = "https://presence.example.com/v1/teams/notifications"
# resync = 300          # a full read this often even while notifications arrive
# call_session = 600    # seconds an Asterisk call's Teams session lasts unrenewed (300-14400)
# max_requests = 45     # Graph requests per second, at most (Graph: 1,500 per 30 s per app)

[teams.users]                              # astpresence user -> Entra object id or UPN
2000 = "alice@contoso.com"

[teams.from_teams]                         # Teams word -> astpresence state or "none"
# Offline = "unavailable"

[teams.to_teams]                           # astpresence state -> preferred availability or "clear"
# xa = "BeRightBack"
```
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from astpresence.domain.model import InvalidInput, validate_user_id
from astpresence.sources.msgraph import M365_AUTHORITY, M365_GRAPH
from astpresence.sources.settings_reader import Credential, Reader, section
from astpresence.sources.teams.mapping import (
    DEFAULT_FROM_TEAMS,
    DEFAULT_TO_TEAMS,
    parse_from_table,
    parse_to_table,
)

SYNCS = ("both", "from_teams", "to_teams")
#: People mapped, at most (8 subscriptions of 650, 8 batch reads a poll).
MAX_USERS = 5200
_KEYS = {"tenant", "client_id", "client_secret_env", "client_secret_file", "authority",
         "graph", "sync", "poll", "notification_url", "resync", "call_session",
         "max_requests", "users", "from_teams", "to_teams"}
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                   r"[0-9a-fA-F]{12}")
_UPN = re.compile(r"[A-Za-z0-9._%+'-]{1,64}@[A-Za-z0-9.-]{1,190}")


@dataclass(frozen=True)
class TeamsSettings:
    tenant: str = ""  # "": Teams is off
    client_id: str = ""
    secret: Credential = Credential()
    authority: str = M365_AUTHORITY
    graph: str = M365_GRAPH
    sync: str = "both"
    poll: float = 30.0
    notification_url: str = ""
    resync: float = 300.0
    call_session: float = 600.0
    max_requests: float = 45.0
    #: astpresence user -> object id or UPN, in the config's order.
    users: Mapping[str, str] = field(default_factory=dict)
    from_teams: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_FROM_TEAMS))
    to_teams: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_TO_TEAMS))

    @property
    def enabled(self) -> bool:
        return bool(self.tenant)

    @property
    def reads(self) -> bool:
        return self.sync in ("both", "from_teams")

    @property
    def writes(self) -> bool:
        return self.sync in ("both", "to_teams")


def is_object_id(ref: str) -> bool:
    return bool(_GUID.fullmatch(ref))


def parse_section(raw: object, where: str) -> TeamsSettings:
    raw = section(raw, where, "teams", _KEYS)
    get = Reader(raw, f"{where} teams")
    secret = get.credential("client_secret")
    if not secret.set:
        raise InvalidInput(f"{where} teams: client_secret_env or client_secret_file is required")
    sync = get.text("sync", "both")
    if sync not in SYNCS:
        raise InvalidInput(f"{where} teams.sync: expected one of {', '.join(SYNCS)}")
    return TeamsSettings(
        tenant=get.text("tenant", None), client_id=get.text("client_id", None),
        secret=secret, authority=get.url("authority", M365_AUTHORITY),
        graph=get.url("graph", M365_GRAPH), sync=sync,
        poll=get.number("poll", 30, 5, 3600),
        notification_url=_notification_url(raw.get("notification_url"), where),
        resync=get.number("resync", 300, 30, 86400),
        call_session=get.number("call_session", 600, 300, 14400),
        max_requests=get.number("max_requests", 45, 0.1, 10000),
        users=_users(raw.get("users"), where),
        from_teams=parse_from_table(raw.get("from_teams"), f"{where} teams.from_teams"),
        to_teams=parse_to_table(raw.get("to_teams"), f"{where} teams.to_teams"))


def _notification_url(raw: object, where: str) -> str:
    """HTTPS, as Graph requires; plain HTTP only on loopback (a test's fake Graph)."""
    if raw is None:
        return ""
    what = f"{where} teams.notification_url"
    if not isinstance(raw, str) or not raw.isprintable() or len(raw) > 2000:
        raise InvalidInput(f"{what}: expected a URL")
    parts = urlsplit(raw)
    loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise InvalidInput(f"{what}: Microsoft Graph delivers notifications to https only")
    if not parts.hostname:
        raise InvalidInput(f"{what}: expected a URL with a host")
    return raw


def _users(raw: object, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"{where} teams.users: expected a table user = \"UPN or object id\"")
    if len(raw) > MAX_USERS:
        raise InvalidInput(f"{where} teams.users: more than {MAX_USERS} people")
    out: dict[str, str] = {}
    seen: dict[str, str] = {}
    for key, ref in raw.items():
        uid = validate_user_id(str(key))
        if not isinstance(ref, str) or not (_GUID.fullmatch(ref) or _UPN.fullmatch(ref)):
            raise InvalidInput(f"{where} teams.users.{uid}: expected a UPN (name@domain) or "
                               "an object id (a GUID)")
        folded = ref.lower()
        if folded in seen:
            raise InvalidInput(f"{where} teams.users: {uid} and {seen[folded]} are the same "
                               "Teams user")
        seen[folded] = uid
        out[uid] = ref
    return out


def show(settings: TeamsSettings) -> dict[str, Any]:
    """As ``/v1/config`` shows it: the secret by reference only."""
    return {"enabled": settings.enabled, "tenant": settings.tenant,
            "client_id": settings.client_id,
            "client_secret": ("env " + settings.secret.env if settings.secret.env
                              else "file" if settings.secret.file else ""),
            "authority": settings.authority, "graph": settings.graph, "sync": settings.sync,
            "poll": settings.poll, "notification_url": bool(settings.notification_url),
            "resync": settings.resync, "call_session": settings.call_session,
            "max_requests": settings.max_requests, "users": len(settings.users),
            "from_teams": dict(settings.from_teams), "to_teams": dict(settings.to_teams)}
