"""Store helpers for tests that build their own servers: the settings of a server on a
store, a second database of the same kind for another domain, which store a running
server has, and the real binary's commands on a data dir pointed at the server's store."""

from __future__ import annotations

import re

import pytest

from wsemail.server.config import DEFAULT_PLUGINS
from wsemail.server.pipeline import PluginSpec

from conftest import Running

# default plug-ins that do not run on the PostgreSQL store yet (issue 20: shrinks as each
# feature is ported); a server on PostgreSQL starts without them
NOT_ON_POSTGRESQL: frozenset[str] = frozenset()


def on_store(store_url: str, plugins: list[PluginSpec] | None = None) -> dict[str, object]:
    """start_server settings for a server on `store_url` ("" SQLite, else PostgreSQL) with
    `plugins` (the defaults when None), less those that do not run on its store yet."""
    chosen = list(DEFAULT_PLUGINS if plugins is None else plugins)
    if not store_url:
        return {"store_url": "", "plugins": chosen}
    return {
        "store_url": store_url,
        "plugins": [p for p in chosen if p.ref not in NOT_ON_POSTGRESQL],
    }


def another_store(store_url: str, request: pytest.FixtureRequest) -> str:
    """A store of the same kind as `store_url` for another domain: "" (SQLite in its data
    dir) or a new database on the session's PostgreSQL server."""
    if not store_url:
        return ""
    url: str = request.getfixturevalue("postgres").database()
    return url


def on_postgres(running: Running) -> bool:
    return bool(running.controller.server.store.dialect == "postgresql")


def cli_sees_store(running: Running) -> None:
    """Make `wsemail … --data-dir DIR` (alias, user quota) open `running`'s store: on
    PostgreSQL its data dir's server.toml names the database (on SQLite the file in the data
    dir is the store already)."""
    url = running.config.store_url
    if not url:
        return
    path = running.config.data_dir / "server.toml"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if not re.search(r"^\s*\[store\]", text, re.MULTILINE):  # the template's is a comment
        path.write_text(f'{text}\n[store]\nurl = "{url}"\n', encoding="utf-8")
