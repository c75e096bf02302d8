"""API tokens and roles, and who may see what (presence levels).

Tokens look like ``astp_<8 hex id>_<secret>``; only their SHA-256 is stored.
Roles: ``user`` reads as visibility allows and changes only its own presence,
``operator`` changes anyone's, ``admin`` also manages tokens and reads config.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

from astpresence.domain.model import NOT_SET, InvalidInput, check_label, validate_user_id
from astpresence.domain.records import TokenRecord
from astpresence.store.base import Store, StoreError

TOKEN_RE = re.compile(r"astp_([0-9a-f]{8})_([A-Za-z0-9_-]{32})")


class Role(str, enum.Enum):
    USER = "user"
    OPERATOR = "operator"
    ADMIN = "admin"


class AuthError(Exception):
    """401: no usable token. The message says what is wrong, never the token."""


class Forbidden(Exception):
    """403: the token is valid but may not do this."""


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: str
    role: Role
    user: str | None

    @property
    def privileged(self) -> bool:
        return self.role in (Role.OPERATOR, Role.ADMIN)

    def may_change(self, uid: str) -> bool:
        return self.privileged or self.user == uid

    def require_change(self, uid: str) -> None:
        if not self.may_change(uid):
            raise Forbidden(f"a {self.role.value} token may change only its own presence "
                            f"({self.user or 'no user'}), not {uid!r}")

    def require_admin(self) -> None:
        if self.role is not Role.ADMIN:
            raise Forbidden("this needs an admin token")

    def to_json(self) -> dict[str, Any]:
        return {"id": self.token_id, "role": self.role.value, "user": self.user}


def parse_role(raw: str) -> Role:
    try:
        return Role(raw)
    except ValueError:
        raise InvalidInput(
            f"invalid role {raw!r}: expected one of {', '.join(r.value for r in Role)}"
        ) from None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_token_request(role: Role, user: str | None, label: str) -> None:
    """InvalidInput unless a token of ``role`` for ``user`` labelled ``label`` may be made."""
    if user is not None:
        validate_user_id(user)
    if role is Role.USER and user is None:
        raise InvalidInput("a user token needs --user (the user it acts for)")
    check_label(label)


def new_token(role: Role, user: str | None, label: str, now: datetime) -> tuple[str, TokenRecord]:
    """A fresh token (shown once) and the record to store."""
    check_token_request(role, user, label)
    token_id = secrets.token_hex(4)
    token = f"astp_{token_id}_{secrets.token_urlsafe(24)}"
    return token, TokenRecord(token_id, hash_token(token), role.value, user, label, now)


#: Ids drawn for a new token at most: 8 hex digits are 2^32 ids, so with 10,000
#: tokens stored one draw in 430,000 finds its id taken; five in a row, never.
TOKEN_DRAWS = 5


async def issue_token(store: Store, role: Role, user: str | None, label: str,
                      now: datetime) -> tuple[str, TokenRecord]:
    """:func:`new_token`, stored: a new id is drawn while the one drawn is taken."""
    for _ in range(TOKEN_DRAWS):
        token, record = new_token(role, user, label, now)
        if await store.add_token(record):
            return token, record
    raise StoreError(f"no free token id in {TOKEN_DRAWS} draws")


async def authenticate(store: Store, header: str | None) -> Principal:
    """Check an ``Authorization: Bearer <token>`` value against the store."""
    if not header:
        raise AuthError("missing token: send 'Authorization: Bearer <token>' "
                        "(create one with 'astpresence token create')")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthError("malformed Authorization header: expected 'Bearer <token>'")
    return await check_token(store, token.strip())


async def check_token(store: Store, token: str) -> Principal:
    if not TOKEN_RE.fullmatch(token):
        raise AuthError("malformed token")
    record = await store.find_token(hash_token(token))
    if record is None:
        raise AuthError("unknown token")
    if record.revoked_at is not None:
        raise AuthError("token revoked")
    return Principal(record.id, Role(record.role), record.user)


# -- presence levels -------------------------------------------------------


class Level(str, enum.Enum):
    PUBLIC = "public"  # everyone sees the state only
    TEAM = "team"  # members of a shared group see subtype and message too
    BLOCKED = "blocked"  # appears as not_set


@dataclass(frozen=True)
class Privacy:
    default: Level = Level.TEAM
    levels: Mapping[str, Level] = field(default_factory=dict)
    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def level(self, uid: str) -> Level:
        return self.levels.get(uid, self.default)

    def share_group(self, a: str, b: str) -> bool:
        return any(a in members and b in members for members in self.groups.values())

    def view_mode(self, viewer: Principal, target: str) -> str:
        """``full``, ``state`` or ``hidden``."""
        if viewer.privileged or viewer.user == target:
            return "full"
        level = self.level(target)
        if level is Level.BLOCKED:
            return "hidden"
        if level is Level.TEAM and viewer.user is not None and self.share_group(
            viewer.user, target
        ):
            return "full"
        return "state"


def project(presence: dict[str, Any], mode: str) -> dict[str, Any]:
    """A presence object as a viewer in ``mode`` may see it."""
    if mode == "full":
        return presence
    if mode == "state":
        # The state only: what set it (a source named "job-interview", the rule
        # "on-the-phone") says as much as the message would.
        # The voicemail count is the person's own business, like the message.
        # The chosen state shows; its text and the activity say as much as a message.
        # Forwarding shows as on or off; where calls go (a mobile number) does not.
        chosen = presence.get("chosen") or {}
        forwarding = presence.get("forwarding")
        return {**presence, "subtype": "", "message": "", "actor": "", "source": "",
                "rule": "", "voicemail": None, "activity": "", "calls": "",
                "forwarding": forwarding and {"on": forwarding["on"], "unconditional": "",
                                              "busy": "", "unavailable": "", "followme": []},
                "chosen": {"state": chosen.get("state", presence["state"]), "subtype": "",
                           "message": ""}}
    hidden = {"state": NOT_SET.state.value, "subtype": "", "message": ""}
    return {**presence, **hidden, "source": "default", "rule": "default", "actor": "",
            "since": None, "pending": False, "voicemail": None, "activity": "",
            "forwarding": None, "calls": "", "chosen": hidden}
