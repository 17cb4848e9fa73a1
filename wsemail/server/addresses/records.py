"""Every SQL string of the mapped addresses feature (component `addresses`). Every
function runs inside a transaction."""

from __future__ import annotations

from dataclasses import dataclass

from wsemail.server.sql import POSTGRESQL, SQLITE
from wsemail.server.store import Tx

COMPONENT = "addresses"
KINDS = ("alias", "role", "autoresponse")
SQLITE_MIGRATIONS = [
    """
    CREATE TABLE mapped_addresses(
        address TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('alias', 'role', 'autoresponse')),
        subject TEXT NOT NULL DEFAULT '',
        body TEXT NOT NULL DEFAULT '',
        created REAL NOT NULL
    );
    CREATE TABLE mapped_targets(
        address TEXT NOT NULL REFERENCES mapped_addresses(address) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        target TEXT NOT NULL,
        PRIMARY KEY(address, target)
    )
    """,
]
POSTGRESQL_MIGRATIONS = [
    """
    CREATE TABLE mapped_addresses(
        address TEXT COLLATE "C" PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('alias', 'role', 'autoresponse')),
        subject TEXT NOT NULL DEFAULT '',
        body TEXT NOT NULL DEFAULT '',
        created DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE mapped_targets(
        address TEXT COLLATE "C" NOT NULL
            REFERENCES mapped_addresses(address) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        target TEXT NOT NULL,
        PRIMARY KEY(address, target)
    )
    """,
]
MIGRATIONS = {SQLITE: SQLITE_MIGRATIONS, POSTGRESQL: POSTGRESQL_MIGRATIONS}


@dataclass(frozen=True)
class Mapped:
    address: str
    kind: str
    targets: tuple[str, ...]
    subject: str = ""
    body: str = ""


def get(tx: Tx, address: str) -> Mapped | None:
    row = tx.conn.execute(
        "SELECT kind, subject, body FROM mapped_addresses WHERE address=?", (address,)
    ).fetchone()
    if row is None:
        return None
    targets = tuple(
        r[0]
        for r in tx.conn.execute(
            "SELECT target FROM mapped_targets WHERE address=? ORDER BY position", (address,)
        )
    )
    return Mapped(address, row[0], targets, row[1], row[2])


def listing(tx: Tx) -> list[Mapped]:
    names = [r[0] for r in tx.conn.execute("SELECT address FROM mapped_addresses ORDER BY address")]
    return [m for m in (get(tx, n) for n in names) if m is not None]


def put(tx: Tx, mapped: Mapped) -> None:
    """Create or replace `mapped` with its targets."""
    tx.conn.execute("DELETE FROM mapped_addresses WHERE address=?", (mapped.address,))
    tx.conn.execute(
        "INSERT INTO mapped_addresses(address, kind, subject, body, created) VALUES (?,?,?,?,?)",
        (mapped.address, mapped.kind, mapped.subject, mapped.body, tx.now),
    )
    tx.conn.executemany(
        "INSERT INTO mapped_targets(address, position, target) VALUES (?,?,?)",
        [(mapped.address, i, t) for i, t in enumerate(mapped.targets)],
    )


def remove(tx: Tx, address: str) -> bool:
    return tx.conn.execute("DELETE FROM mapped_addresses WHERE address=?", (address,)).rowcount > 0
