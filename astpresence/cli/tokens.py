"""API tokens: create, list, revoke (on the database directly: the first admin
token needs no token).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import click

from astpresence.web.auth import check_token_request, issue_token, parse_role
from astpresence.app.config import load_config
from astpresence.app.settings import Config, ConfigError
from astpresence.domain.model import InvalidInput
from astpresence.domain.records import TokenRecord
from astpresence.store.base import Store, StoreError
from astpresence.app.store_choice import open_store, store_name

from astpresence.cli.common import _emit, _stacked, _table, fail, json_option


# -- tokens (work on the database directly: the first admin token needs no token) --


def _store_for(config_path: str | None, db: str | None) -> tuple[Store, Config]:
    """The daemon's database, which must exist (never a new, empty SQLite file)."""
    try:
        config = load_config(config_path, overrides={"db": db})
    except ConfigError as exc:
        fail(str(exc))
    return open_store(config, create=False), config


async def _with_store(store: Store, fn: Callable[[Store], Awaitable[Any]]) -> Any:
    try:
        await store.open()
    except StoreError as exc:
        fail(str(exc))
    try:
        return await fn(store)
    except StoreError as exc:
        fail(str(exc))
    finally:
        await store.close()


#: Where the token commands find the daemon's database.
_db_opts = _stacked(
    click.option("--config", "config_path", type=click.Path(dir_okay=False),
                 envvar="ASTPRESENCE_CONFIG", help="TOML config (for [store] path)."),
    click.option("--db", help="SQLite database of the daemon (env ASTPRESENCE_DB). "
                              "[default: as the daemon: ~/.local/state/astpresence/"
                              "astpresence.db, /var/lib/astpresence/astpresence.db as root]"),
)


@click.group()
def token() -> None:
    """API tokens: create (shown once), list, revoke. Works on the database directly."""


@token.command(name="create")
@click.option("--role", default="user", show_default=True,
              type=click.Choice(["user", "operator", "admin"]),
              help="user: own presence; operator: anyone's; admin: also tokens and config.")
@click.option("--user", "uid", help="The user the token acts for (required for role user).")
@click.option("--label", default="", help="A note to recognise the token by.")
@_db_opts
@json_option
def token_create(role: str, uid: str | None, label: str, config_path: str | None,
                 db: str | None, as_json: bool) -> None:
    """Create a token and print it (it is stored hashed and cannot be shown again)."""
    try:
        check_token_request(parse_role(role), uid, label)  # before the store is opened
    except InvalidInput as exc:
        fail(str(exc))

    store, config = _store_for(config_path, db)

    async def add(store: Store) -> tuple[str, TokenRecord, bool]:
        secret, record = await issue_token(store, parse_role(role), uid, label,
                                           datetime.now(UTC))
        known = {u.id for u in config.users} | {u.id for u in await store.load_users()}
        return secret, record, uid is None or uid in known

    secret, record, known = asyncio.run(_with_store(store, add))
    if not known:
        click.echo(f"warning: no user {uid!r} is known yet (not in [[users]], not in any hint "
                   "the daemon has seen); the token works once one names it", err=True)
    if as_json:
        click.echo(json.dumps({"id": record.id, "token": secret, "role": record.role,
                               "user": record.user, "database": store_name(config)}))
    else:
        click.echo(secret)
        click.echo(f"token {record.id} ({record.role}{', user ' + uid if uid else ''}) "
                   f"created in {store_name(config)}; it is shown only this once", err=True)


@token.command(name="list")
@_db_opts
@json_option
def token_list(config_path: str | None, db: str | None, as_json: bool) -> None:
    """List tokens (never their secrets)."""
    tokens = asyncio.run(_with_store(_store_for(config_path, db)[0],
                                     lambda store: store.list_tokens()))
    data = [{"id": t.id, "role": t.role, "user": t.user, "label": t.label,
             "created_at": t.created_at.isoformat(),
             "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None} for t in tokens]
    rows = [[d["id"], d["role"], d["user"] or "", d["label"], d["created_at"][:19],
             "revoked" if d["revoked_at"] else "active"] for d in data]
    _emit(data, as_json, _table(rows, ["id", "role", "user", "label", "created", "status"])
          if rows else "no tokens")


@token.command(name="revoke")
@click.argument("token_id")
@_db_opts
def token_revoke(token_id: str, config_path: str | None, db: str | None) -> None:
    """Revoke token TOKEN_ID; the daemon refuses it from the next request on."""

    async def revoke(store: Store) -> bool:
        return await store.revoke_token(token_id, datetime.now(UTC))

    if not asyncio.run(_with_store(_store_for(config_path, db)[0], revoke)):
        fail(f"no active token {token_id!r}")
    click.echo(f"token {token_id} revoked")
