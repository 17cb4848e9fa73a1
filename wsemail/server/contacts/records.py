"""In charge of the personal-contacts plug-in's rows: each user's contacts (name,
organisation, note, one to ten addresses, an address belonging to one contact of a user
at most) and the addresses that user sent mail to (`contacts_seen`: how often, when last,
dismissed or not). Every query names the owner: no function reads another user's rows. A
removed account takes its rows with it (trigger on `users`). Every function runs inside a
store transaction.

Addresses compare without regard to case: SQLite's columns say COLLATE NOCASE, PostgreSQL's
unique indexes are on lower(address) and the look-ups say lower(address)=lower(?)
(`_same`). Names sort by their folded key in byte order on both (COLLATE "C" there).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from wsemail.server.sql import POSTGRESQL, SQLITE
from wsemail.server.store import Tx

SQLITE_MIGRATIONS = [
    """
    CREATE TABLE contacts(
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        name TEXT NOT NULL,
        name_key TEXT NOT NULL,
        org TEXT NOT NULL DEFAULT '',
        note TEXT NOT NULL DEFAULT '',
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE INDEX contacts_owner ON contacts(owner, name_key, id);
    CREATE TABLE contact_emails(
        owner TEXT NOT NULL,
        address TEXT NOT NULL COLLATE NOCASE,
        contact TEXT NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        PRIMARY KEY(owner, address)
    ) WITHOUT ROWID;
    CREATE INDEX contact_emails_contact ON contact_emails(contact, position);
    CREATE TABLE contacts_seen(
        owner TEXT NOT NULL,
        address TEXT NOT NULL COLLATE NOCASE,
        times INTEGER NOT NULL,
        last REAL NOT NULL,
        dismissed INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY(owner, address)
    ) WITHOUT ROWID;
    CREATE INDEX contacts_seen_recent ON contacts_seen(owner, last);
    CREATE TRIGGER contacts_user_removed AFTER DELETE ON users BEGIN
        DELETE FROM contact_emails WHERE owner=old.address;
        DELETE FROM contacts WHERE owner=old.address;
        DELETE FROM contacts_seen WHERE owner=old.address;
    END
    """
]
POSTGRESQL_MIGRATIONS = [
    """
    CREATE TABLE contacts(
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        name TEXT NOT NULL,
        name_key TEXT COLLATE "C" NOT NULL,
        org TEXT NOT NULL DEFAULT '',
        note TEXT NOT NULL DEFAULT '',
        created DOUBLE PRECISION NOT NULL,
        updated DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX contacts_owner ON contacts(owner, name_key, id);
    CREATE TABLE contact_emails(
        owner TEXT NOT NULL,
        address TEXT NOT NULL,
        contact TEXT NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
        position INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX contact_emails_key ON contact_emails(owner, lower(address));
    CREATE INDEX contact_emails_contact ON contact_emails(contact, position);
    CREATE TABLE contacts_seen(
        owner TEXT NOT NULL,
        address TEXT NOT NULL,
        times BIGINT NOT NULL,
        last DOUBLE PRECISION NOT NULL,
        dismissed INTEGER NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX contacts_seen_key ON contacts_seen(owner, lower(address));
    CREATE INDEX contacts_seen_recent ON contacts_seen(owner, last);
    CREATE FUNCTION contacts_user_removed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM contact_emails WHERE owner=OLD.address;
        DELETE FROM contacts WHERE owner=OLD.address;
        DELETE FROM contacts_seen WHERE owner=OLD.address;
        RETURN NULL;
    END $$;
    CREATE TRIGGER contacts_user_removed AFTER DELETE ON users
        FOR EACH ROW EXECUTE FUNCTION contacts_user_removed();
    """
]
MIGRATIONS = {SQLITE: SQLITE_MIGRATIONS, POSTGRESQL: POSTGRESQL_MIGRATIONS}


@dataclass
class Contact:
    id: str
    name: str
    emails: list[str] = field(default_factory=list)
    org: str = ""
    note: str = ""


@dataclass(frozen=True)
class Seen:
    address: str
    times: int
    last: float


def fold(text: str) -> str:
    return " ".join(text.casefold().split())


def _like(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _same(tx: Tx, column: str = "address") -> str:
    """`column` equals the next parameter, without regard to case."""
    return f"lower({column})=lower(?)" if tx.dialect == POSTGRESQL else f"{column}=?"


def count(tx: Tx, owner: str) -> int:
    row = tx.conn.execute("SELECT count(*) FROM contacts WHERE owner=?", (owner,)).fetchone()
    return int(row[0])


def owners_of(tx: Tx, owner: str, emails: list[str]) -> set[str]:
    """The ids of `owner`'s contacts that hold any of `emails`."""
    found: set[str] = set()
    for address in emails:
        row = tx.conn.execute(
            f"SELECT contact FROM contact_emails WHERE owner=? AND {_same(tx)}", (owner, address)
        ).fetchone()
        if row is not None:
            found.add(row[0])
    return found


def _write_emails(tx: Tx, owner: str, contact_id: str, emails: list[str]) -> None:
    tx.conn.execute("DELETE FROM contact_emails WHERE contact=?", (contact_id,))
    tx.conn.executemany(
        "INSERT INTO contact_emails(owner, address, contact, position) VALUES (?,?,?,?)",
        [(owner, address, contact_id, n) for n, address in enumerate(emails)],
    )


def add(tx: Tx, owner: str, contact: Contact) -> str:
    contact_id = secrets.token_hex(8)
    tx.conn.execute(
        "INSERT INTO contacts(id, owner, name, name_key, org, note, created, updated) "
        "VALUES (?,?,?,?,?,?,?,?)",
        (contact_id, owner, contact.name, fold(contact.name), contact.org, contact.note,
         tx.now, tx.now),
    )  # fmt: skip
    _write_emails(tx, owner, contact_id, contact.emails)
    return contact_id


def update(tx: Tx, owner: str, contact: Contact) -> None:
    tx.conn.execute(
        "UPDATE contacts SET name=?, name_key=?, org=?, note=?, updated=? WHERE id=? AND owner=?",
        (contact.name, fold(contact.name), contact.org, contact.note, tx.now, contact.id, owner),
    )
    _write_emails(tx, owner, contact.id, contact.emails)


def remove(tx: Tx, owner: str, contact_id: str) -> bool:
    tx.conn.execute("DELETE FROM contact_emails WHERE owner=? AND contact=?", (owner, contact_id))
    return (
        tx.conn.execute("DELETE FROM contacts WHERE owner=? AND id=?", (owner, contact_id)).rowcount
        > 0
    )


def _emails(tx: Tx, contact_id: str) -> list[str]:
    rows = tx.conn.execute(
        "SELECT address FROM contact_emails WHERE contact=? ORDER BY position", (contact_id,)
    )
    return [r[0] for r in rows]


def get(tx: Tx, owner: str, contact_id: str) -> Contact | None:
    row = tx.conn.execute(
        "SELECT id, name, org, note FROM contacts WHERE owner=? AND id=?", (owner, contact_id)
    ).fetchone()
    if row is None:
        return None
    return Contact(row[0], row[1], _emails(tx, row[0]), row[2], row[3])


def by_address(tx: Tx, owner: str, address: str) -> Contact | None:
    row = tx.conn.execute(
        f"SELECT contact FROM contact_emails WHERE owner=? AND {_same(tx)}", (owner, address)
    ).fetchone()
    return None if row is None else get(tx, owner, row[0])


def listing(
    tx: Tx, owner: str, prefix: str, after: tuple[str, str] | None, limit: int
) -> list[Contact]:
    """`owner`'s contacts in (name, id) order whose name (any word) or an address starts
    with `prefix` (folded; empty: all), after the position `after`, at most `limit`."""
    sql = "SELECT id, name, org, note, name_key FROM contacts c WHERE owner=?"
    args: list[object] = [owner]
    if prefix:
        sql += (
            " AND (name_key LIKE ? ESCAPE '\\' OR name_key LIKE ? ESCAPE '\\' OR EXISTS ("
            "SELECT 1 FROM contact_emails e WHERE e.contact=c.id AND e.owner=c.owner"
            " AND lower(e.address) LIKE ? ESCAPE '\\'))"
        )
        args += [_like(prefix), "% " + _like(prefix), _like(prefix)]
    if after is not None:
        sql += " AND (name_key, id) > (?, ?)"
        args += list(after)
    sql += " ORDER BY name_key, id LIMIT ?"
    args.append(limit)
    rows = tx.conn.execute(sql, args).fetchall()
    return [Contact(r[0], r[1], _emails(tx, r[0]), r[2], r[3]) for r in rows]


# addresses sent to ---------------------------------------------------------------------
def record_seen(tx: Tx, owner: str, addresses: list[str], keep: int) -> None:
    """Count one message to each of `addresses`; when one is new, keep only the `keep`
    most recent of the owner's (an index look-up per address on the send path)."""
    fresh = False
    for address in addresses:
        updated = tx.conn.execute(
            f"UPDATE contacts_seen SET times=times+1, last=? WHERE owner=? AND {_same(tx)}",
            (tx.now, owner, address),
        ).rowcount
        if not updated:
            tx.conn.execute(  # a conflict: another node counted it just now
                "INSERT INTO contacts_seen(owner, address, times, last) VALUES (?,?,1,?) "
                "ON CONFLICT DO NOTHING",
                (owner, address, tx.now),
            )
            fresh = True
    if fresh:
        tx.conn.execute(
            "DELETE FROM contacts_seen WHERE owner=? AND address NOT IN (SELECT address FROM "
            "contacts_seen WHERE owner=? ORDER BY last DESC, address LIMIT ?)",
            (owner, owner, keep),
        )


def seen(tx: Tx, owner: str, prefix: str, limit: int) -> list[Seen]:
    """Addresses `owner` sent to that are not a contact and not dismissed, most recent
    first, starting with `prefix` (any case) when given."""
    same = (
        "lower(e.address)=lower(s.address)" if tx.dialect == POSTGRESQL else "e.address=s.address"
    )
    sql = (
        "SELECT address, times, last FROM contacts_seen s WHERE owner=? AND dismissed=0 "
        f"AND NOT EXISTS (SELECT 1 FROM contact_emails e WHERE e.owner=s.owner AND {same})"
    )
    args: list[object] = [owner]
    if prefix:
        sql += " AND lower(address) LIKE ? ESCAPE '\\'"
        args.append(_like(prefix))
    sql += " ORDER BY last DESC, address LIMIT ?"
    args.append(limit)
    return [Seen(r[0], int(r[1]), float(r[2])) for r in tx.conn.execute(sql, args)]


def dismiss(tx: Tx, owner: str, address: str) -> bool:
    return (
        tx.conn.execute(
            f"UPDATE contacts_seen SET dismissed=1 WHERE owner=? AND {_same(tx)}", (owner, address)
        ).rowcount
        > 0
    )
