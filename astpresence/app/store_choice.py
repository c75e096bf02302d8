"""Which store a configuration names: PostgreSQL with ``[store] url``, else SQLite."""

from __future__ import annotations

from astpresence.app.settings import Config
from astpresence.store.base import Store
from astpresence.store.postgres import PostgresStore, safe_dsn
from astpresence.store.sqlite import SqliteStore


def open_store(config: Config, *, create: bool = True) -> Store:
    """The daemon's store (not opened yet). ``create=False``: a missing SQLite file is
    an error (the token commands must not make a new, empty database)."""
    if config.db_url.value:
        return PostgresStore(config.db_url.value)
    return SqliteStore(config.db, create=create)


def store_name(config: Config) -> str:
    """How messages name the store: the file, or the URL without its password."""
    return safe_dsn(config.db_url.value) if config.db_url.value else config.db
