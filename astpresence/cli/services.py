"""Checks of what astpresence talks to besides AMI: its store and ARI.
"""

from __future__ import annotations

import json
import os
import logging
from datetime import UTC, datetime

import aiohttp

from astpresence.asterisk.ari import basic_auth
from astpresence.app.settings import Config
from astpresence.asterisk.settings import AMIConfig
from astpresence.domain.model import DEFAULT_NODE
from astpresence.domain.logsafe import clip

from astpresence.cli.checks import CHECK_ARI, CHECK_STORE, Check

logger = logging.getLogger(__name__)


def _setting(ami: AMIConfig, key: str) -> str:
    """How the config names one of this server's settings, for a fix."""
    return f"ami.{key}" if ami.name == DEFAULT_NODE else f"{key} of [[asterisk]] {ami.name!r}"


async def store_check(config: Config) -> Check:
    """Where the state lives; on PostgreSQL: reachable, schema, and the HA group."""
    if not config.db_url.value:
        where = config.db if os.path.exists(config.db) else \
            f"{config.db} (made at the daemon's first start)"
        note = "; [ha] needs [store] url (PostgreSQL)" if config.ha.enabled else ""
        return Check(CHECK_STORE, not config.ha.enabled, f"SQLite {where}{note}",
                     "set [store] url = \"postgresql://...\" or switch [ha] off"
                     if config.ha.enabled else "")
    import asyncpg

    from astpresence.cluster.ha import GONE_AFTER
    from astpresence.store.postgres import safe_dsn

    url = safe_dsn(config.db_url.value)
    try:
        conn = await asyncpg.connect(config.db_url.value, timeout=5)
    except (OSError, asyncpg.PostgresError, ValueError, TimeoutError) as exc:
        return Check(CHECK_STORE, False, f"PostgreSQL at {url} unreachable: {exc}",
                     "check [store] url (host, port, database, user), that PostgreSQL "
                     "listens there and that pg_hba.conf lets this host in")
    try:
        try:
            version = await conn.fetchval("SELECT version FROM astpresence_schema")
        except asyncpg.UndefinedTableError:
            version = None
        nodes = []
        if config.ha.enabled and version is not None:
            now = datetime.now(UTC)
            for row in await conn.fetch("SELECT value FROM meta WHERE key LIKE 'ha_node:%'"):
                try:
                    info = json.loads(row[0])
                    age = (now - datetime.fromisoformat(info["seen"])).total_seconds()
                except (ValueError, KeyError, TypeError):
                    continue
                if age <= GONE_AFTER:
                    nodes.append(f"{clip(str(info.get('node')), 60)} ({info.get('role')}, "
                                 f"seen {age:.0f} s ago)")
    finally:
        await conn.close()
    schema = f"schema version {version}" if version is not None else \
        "empty (the daemon creates the tables at its first start)"
    detail = f"PostgreSQL at {url}: {schema}"
    if config.ha.enabled:
        detail += "; HA group: " + (", ".join(sorted(nodes)) or "no daemon running")
    return Check(CHECK_STORE, True, detail)


async def ari_check(config: Config) -> Check:
    """With ``mirror_via = "ari"``: does ARI answer, with these credentials?

    On Asterisk 22 ``res_ari`` needs ``res_websocket_client`` and
    ``res_ari_model``; without them every ARI URL is a 404 (docs/asterisk.md,
    "ARI"), so a 404 here names those modules.
    """
    if not (config.rules.mirror and config.rules.mirror_via == "ari"):
        return Check(CHECK_ARI, True, "skipped: not used (the mirror goes through AMI)")
    ari = config.ari
    url = ari.url.rstrip("/") + "/asterisk/info"
    headers = {"Authorization": basic_auth(ari.username, ari.password.value)}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            async with http.get(url, headers=headers) as resp:
                status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return Check(CHECK_ARI, False, f"{ari.url} unreachable: {exc or type(exc).__name__}",
                     "check ari.url, and that http.conf enables the HTTP server "
                     "(enabled = yes, bindaddr, bindport)")
    if status == 200:
        return Check(CHECK_ARI, True, f"{ari.url} answered as {ari.username}")
    if status == 401:
        return Check(CHECK_ARI, False, f"ARI refused user {ari.username!r} (401)",
                     "make ari.username/ari.password match a user in ari.conf")
    if status == 404:
        return Check(CHECK_ARI, False, f"{url} answered 404: ARI is not loaded",
                     "load res_websocket_client.so and res_ari_model.so before res_ari.so "
                     "(Asterisk 22 needs them), and check that ari.conf has enabled = yes")
    return Check(CHECK_ARI, False, f"{url} answered {status}",
                 "check the Asterisk log for ARI errors")
