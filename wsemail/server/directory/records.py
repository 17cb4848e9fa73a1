"""In charge of the address directory's rows: who is listed, under which display name.

Only listed users have a row (unlisting deletes it), so an unlisted user cannot appear in
any answer. A search matches a prefix of the address or of any word of the display name,
case-insensitively, in (name, address) order; a removed account leaves the directory with
it (trigger on `users`). Every function runs inside a store transaction.

On PostgreSQL the keys sort in byte order (COLLATE "C"), as on SQLite, and the rate limits
of searches are rows here too (`take`), shared by every node of the domain.
"""

from __future__ import annotations

from dataclasses import dataclass

from wsemail.server.sql import POSTGRESQL, SQLITE
from wsemail.server.store import Tx

SQLITE_MIGRATIONS = [
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
POSTGRESQL_MIGRATIONS = [
    """
    CREATE TABLE directory_entries(
        address TEXT COLLATE "C" PRIMARY KEY,
        name TEXT NOT NULL,
        name_key TEXT COLLATE "C" NOT NULL,
        listed DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX directory_by_name ON directory_entries(name_key, address);
    CREATE FUNCTION directory_user_removed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM directory_entries WHERE address=OLD.address;
        RETURN NULL;
    END $$;
    CREATE TRIGGER directory_user_removed AFTER DELETE ON users
        FOR EACH ROW EXECUTE FUNCTION directory_user_removed();
    -- token buckets of the search rate limits (key: 'user:' or 'domain:' and the name)
    CREATE TABLE directory_rates(
        key TEXT PRIMARY KEY,
        tokens DOUBLE PRECISION NOT NULL,
        at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX directory_rates_at ON directory_rates(at);
    """
]
MIGRATIONS = {SQLITE: SQLITE_MIGRATIONS, POSTGRESQL: POSTGRESQL_MIGRATIONS}


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
    sql = "SELECT address, name FROM directory_entries WHERE 1=1"
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


# rate limits in the database (PostgreSQL: every node counts against the same buckets) ----
_REFILLED = "least(?, b.tokens + greatest(0, excluded.at - b.at) * ?)"
_TAKE = (
    "INSERT INTO directory_rates AS b(key, tokens, at) VALUES (?, ?, ?) "
    f"ON CONFLICT(key) DO UPDATE SET at=excluded.at, tokens={_REFILLED} - 1 "
    f"WHERE {_REFILLED} >= 1 RETURNING tokens"
)


def take(tx: Tx, key: str, limit: int, window: float) -> bool:
    """Take one search from `key`'s token bucket (`limit` per `window` seconds, refilled
    continuously, as wsemail.server.ratelimit's); False, nothing taken, when it is empty."""
    full, rate = float(limit), limit / window
    row = tx.conn.execute(_TAKE, (key, full - 1, tx.now, full, rate, full, rate)).fetchone()
    return row is not None


def forget_idle(tx: Tx, window: float) -> int:
    """Drop buckets idle for a whole window (they would be full again)."""
    return tx.conn.execute("DELETE FROM directory_rates WHERE at<?", (tx.now - window,)).rowcount
