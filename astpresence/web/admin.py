"""Users, status, config and tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from astpresence import __version__
from astpresence.domain import mirror
from astpresence.web.auth import issue_token, parse_role
from astpresence.domain.logsafe import clip
from astpresence.domain.model import check_label, validate_user_id
from astpresence.engine.ports import PresenceAPI
from astpresence.asterisk.retry import Failures

from astpresence.web.stream import STREAMS_KEY
from astpresence.web.http import (CONFIG_KEY, HA_KEY, NotFound, SOURCES_KEY, presence_api,
    STATUS_KEY, STORE_KEY, _json_body, principal)

logger = logging.getLogger(__name__)


# -- users, status, config, tokens --------------------------------------------


async def list_users(request: web.Request) -> web.Response:
    service = presence_api(request)
    cfg = service.rules
    return web.json_response(
        {
            "users": [
                {
                    "id": u.id,
                    "name": service.view(u.id).name,
                    "extension": u.extension,
                    "context": u.context,
                    "devices": list(u.devices),
                    "origin": u.origin,
                    "mirror_device": mirror.mirror_device(u.id, cfg),
                }
                for u in service.users.all()
            ]
        }
    )


async def get_status(request: web.Request) -> web.Response:
    service = presence_api(request)
    links = request.app[STATUS_KEY]()
    ha = _ha_status(request)
    return web.json_response(
        {
            "version": __version__,
            "ami": links[0],  # the first (or only) server, as before [[asterisk]]
            "asterisk": links,
            "synced": service.synced,
            "last_sync": service.last_sync.isoformat() if service.last_sync else None,
            "users": len(service.users.ids()),
            "pending_writes": len(service.pending_users()),
            "write_failures": _failure_counts(service),
            "failing_writes": _failing(service),
            "websocket_clients": service.events.subscribers,
            **{name: source.status_json() for name, source in request.app[SOURCES_KEY].items()},
            "ha": ha,
            # This node's part in its HA group: "leader" or "follower" (null: no group).
            "role": ha["role"] if ha is not None else None,
            "features": {
                "mirror": service.rules.mirror,
                "mirror_prefix": service.rules.mirror_prefix,
                "queue_pause": service.rules.queue_pause,
                "missed_calls_away": service.rules.missed_calls_away,
            },
        }
    )


def _ha_status(request: web.Request) -> dict[str, Any] | None:
    ha = request.app[HA_KEY]
    return ha() if ha is not None else None


#: Refused writes listed in /v1/status, at most (the counts are complete).
FAILING_SHOWN = 20


def _failure_counts(service: PresenceAPI) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in service.nodes.values():
        for failures in node.outbox.failures():
            counts[failures.kind] = counts.get(failures.kind, 0) + len(failures)
    return counts


def _failing(service: PresenceAPI) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name, node in service.nodes.items():
        out += _failing_on(name, node.outbox.failures(), FAILING_SHOWN - len(out))
    return out


def _failing_on(node: str, kinds: Iterable[Failures[Any]], room: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for failures in kinds:
        now = failures.now()
        for key, f in failures.items():
            if len(out) >= room:
                return out
            out.append({
                "node": node,
                "kind": failures.kind,
                "key": key if isinstance(key, str) else "/".join(key),
                "error": f.error,
                "attempts": f.attempts,
                "retry_in_seconds": round(max(0.0, f.retry_at - now), 1)
                if f.retry_at != float("inf") else None,
            })
    return out


async def get_config(request: web.Request) -> web.Response:
    principal(request).require_admin()
    return web.json_response(request.app[CONFIG_KEY]())


def _token_json(rec: Any) -> dict[str, Any]:
    return {
        "id": rec.id,
        "role": rec.role,
        "user": rec.user,
        "label": rec.label,
        "created_at": rec.created_at.isoformat(),
        "revoked_at": rec.revoked_at.isoformat() if rec.revoked_at else None,
    }


async def list_tokens(request: web.Request) -> web.Response:
    principal(request).require_admin()
    tokens = await request.app[STORE_KEY].list_tokens()
    return web.json_response({"tokens": [_token_json(t) for t in tokens]})


async def create_token(request: web.Request) -> web.Response:
    principal(request).require_admin()
    body = await _json_body(request, {"role", "user", "label"})
    role = parse_role(body.get("role", "user"))
    user = body.get("user")
    if user is not None:
        user = validate_user_id(user)
    label = check_label(body.get("label", ""))
    token, record = await issue_token(request.app[STORE_KEY], role, user, label,
                                      datetime.now(UTC))
    logger.info("token %s created (%s, user %s) by %s", record.id, role.value, clip(user),
                principal(request).token_id)
    return web.json_response({**_token_json(record), "token": token}, status=201)


async def revoke_token(request: web.Request) -> web.Response:
    principal(request).require_admin()
    token_id = request.match_info["id"]
    if not await request.app[STORE_KEY].revoke_token(token_id, datetime.now(UTC)):
        raise NotFound(f"no active token {token_id!r}")
    closed = request.app[STREAMS_KEY].revoked([token_id])
    logger.info("token %s revoked by %s; %d event stream(s) closed", token_id,
                principal(request).token_id, closed)
    return web.json_response({"id": token_id, "revoked": True})
