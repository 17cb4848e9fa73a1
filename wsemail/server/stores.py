"""Open the store a server config names: the data dir's SQLite file (the embedded default),
or the PostgreSQL database of `[store] url` (`wsemail serve --store URL`)."""

from __future__ import annotations

import time
from collections.abc import Callable

from wsemail.server.config import ServerConfig
from wsemail.server.pipeline import resolve_class
from wsemail.server.store import BatchStore


def open_store(config: ServerConfig, *, clock: Callable[[], float] = time.time) -> BatchStore:
    """The store of `config` (StoreError, one line, when it cannot be opened)."""
    if config.store_url:
        from wsemail.server.postgres.store import PostgresStore

        return PostgresStore(config.store_url, clock=clock)
    store_cls = resolve_class(config.store)
    store: BatchStore = store_cls(config.db_path, clock=clock)
    return store
