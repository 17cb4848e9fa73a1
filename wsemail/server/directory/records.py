"""In charge of the address directory's rows: who is listed, under which display name.

Only listed users have a row (unlisting deletes it), so an unlisted user cannot appear in
any answer. A search matches a prefix of the address or of any word of the display name,
case-insensitively, in (name, address) order; a removed account leaves the directory with
it (trigger on `users`). Every function runs inside a store transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from wsemail.server.store import Tx

MIGRATIONS = [
    """
    CREATE TABLE directory_entries(
        address TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        name_key TEXT NOT NULL,
        listed REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX directory_by_name ON directory_entries(name_key, address);
    CREATE TRIGGER directory_user_removed AFTER DELETE ON users BEGIN
        DELETE FROM directory_entries WHERE address=old.address;
    END
    """
]


@dataclass(frozen=True)
class Entry:
    address: str
    name: str


def fold(text: str) -> str:
    """The form names and queries are compared in: case-folded, single spaces."""
    return " ".join(text.casefold().split())


def publish(tx: Tx, address: str, name: str) -> None:
    tx.conn.execute(
        "INSERT INTO directory_entries(address, name, name_key, listed) VALUES (?,?,?,?) "
        "ON CONFLICT(address) DO UPDATE SET name=excluded.name, name_key=excluded.name_key",
        (address, name, fold(name), tx.now),
    )


def unpublish(tx: Tx, address: str) -> bool:
    return tx.conn.execute("DELETE FROM directory_entries WHERE address=?", (address,)).rowcount > 0


def entry(tx: Tx, address: str) -> Entry | None:
    row = tx.conn.execute(
        "SELECT address, name FROM directory_entries WHERE address=?", (address,)
    ).fetchone()
    return None if row is None else Entry(row[0], row[1])


def _like(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def search(tx: Tx, query: str, after: tuple[str, str] | None, limit: int) -> list[Entry]:
    """Listed entries whose address or a word of whose name starts with `query` (folded;
    empty: all), after the (name_key, address) position `after`, at most `limit`."""
    sql = "SELECT address, name FROM directory_entries WHERE 1"
    args: list[object] = []
    if query:
        sql += (
            " AND (lower(address) LIKE ? ESCAPE '\\' OR name_key LIKE ? ESCAPE '\\'"
            " OR name_key LIKE ? ESCAPE '\\')"
        )
        args += [_like(query), _like(query), "% " + _like(query)]
    if after is not None:
        sql += " AND (name_key, address) > (?, ?)"
        args += list(after)
    sql += " ORDER BY name_key, address LIMIT ?"
    args.append(limit)
    return [Entry(r[0], r[1]) for r in tx.conn.execute(sql, args)]
