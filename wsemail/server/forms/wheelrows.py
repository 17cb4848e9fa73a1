"""Published form wheels kept in the PostgreSQL store (every SQL string of them), so that
every node of a domain serves what an administrator published through any one. On the
SQLite store they stay files in the data dir's `forms/` folder (plugin.py)."""

from __future__ import annotations

from wsemail.server.sql import POSTGRESQL
from wsemail.server.store import Tx

COMPONENT = "forms-wheels"
MIGRATIONS = {  # PostgreSQL only: plugin.py asks for it on that store alone
    POSTGRESQL: [
        """
        CREATE TABLE forms_wheels(
            name TEXT PRIMARY KEY,
            data BYTEA NOT NULL,
            published DOUBLE PRECISION NOT NULL
        )
        """
    ]
}


def put(tx: Tx, files: list[tuple[str, bytes]]) -> None:
    """Publish (or publish again) the wheel and its signature, in the request's unit."""
    tx.conn.executemany(
        "INSERT INTO forms_wheels(name, data, published) VALUES (?,?,?) "
        "ON CONFLICT(name) DO UPDATE SET data=excluded.data, published=excluded.published",
        [(name, data, tx.now) for name, data in files],
    )


def get(tx: Tx, name: str) -> bytes | None:
    row = tx.conn.execute("SELECT data FROM forms_wheels WHERE name=?", (name,)).fetchone()
    return bytes(row[0]) if row else None
