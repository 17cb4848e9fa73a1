"""In charge of the attachment plug-in's rows: uploads and their state, the recipients of
each attachment, one-time upload and download tickets (stored as SHA-256 digests, never in
clear), the audit log of fetches, and on the PostgreSQL store the bytes themselves as
chunk rows. Every function runs inside a store transaction.

    pending ─(bytes streamed, fsynced, renamed)→ stored ─(Send)→ bound ─(Revoke)→ revoked
                                                             └─(Replace)→ superseded
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass

from wsemail.server.sql import POSTGRESQL, SQLITE
from wsemail.server.store import Tx

# 2: an owner's uploads by state (the quota of every delivery and upload reads them: without
# it each delivered copy read the whole table)
_BY_OWNER = "CREATE INDEX attachment_blobs_owner ON attachment_blobs(owner, state)"
SQLITE_MIGRATIONS = [
    """
    CREATE TABLE attachment_blobs(
        guid TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        name TEXT NOT NULL,
        media_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT,
        base_url TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL,
        upload_ticket TEXT UNIQUE,
        ticket_expires REAL NOT NULL,
        message_id TEXT,
        replaced_by TEXT,
        created REAL NOT NULL
    );
    CREATE INDEX attachment_blobs_message ON attachment_blobs(message_id);
    CREATE TABLE attachment_recipients(
        guid TEXT NOT NULL,
        address TEXT NOT NULL,
        PRIMARY KEY(guid, address)
    );
    CREATE TABLE attachment_tickets(
        ticket TEXT PRIMARY KEY,
        guid TEXT NOT NULL,
        address TEXT NOT NULL,
        expires REAL NOT NULL
    );
    CREATE TABLE attachment_audit(
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        guid TEXT NOT NULL,
        address TEXT NOT NULL,
        at REAL NOT NULL,
        event TEXT NOT NULL,
        first_byte INTEGER NOT NULL DEFAULT 0,
        last_byte INTEGER NOT NULL DEFAULT -1
    );
    CREATE INDEX attachment_audit_guid ON attachment_audit(guid, seq)
    """,
    _BY_OWNER,
]
# the same tables on PostgreSQL, plus the bytes themselves: chunk rows of CHUNK_BYTES
# (every node of the domain reads them; wsemail.server.attachments.chunks)
POSTGRESQL_MIGRATIONS = [
    """
    CREATE TABLE attachment_blobs(
        guid TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        name TEXT NOT NULL,
        media_type TEXT NOT NULL,
        size BIGINT NOT NULL,
        sha256 TEXT,
        base_url TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL,
        upload_ticket TEXT UNIQUE,
        ticket_expires DOUBLE PRECISION NOT NULL,
        message_id TEXT,
        replaced_by TEXT,
        created DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX attachment_blobs_message ON attachment_blobs(message_id);
    CREATE TABLE attachment_recipients(
        guid TEXT NOT NULL,
        address TEXT NOT NULL,
        PRIMARY KEY(guid, address)
    );
    CREATE TABLE attachment_tickets(
        ticket TEXT PRIMARY KEY,
        guid TEXT NOT NULL,
        address TEXT NOT NULL,
        expires DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE attachment_audit(
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        guid TEXT NOT NULL,
        address TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        event TEXT NOT NULL,
        first_byte BIGINT NOT NULL DEFAULT 0,
        last_byte BIGINT NOT NULL DEFAULT -1
    );
    CREATE INDEX attachment_audit_guid ON attachment_audit(guid, seq);
    CREATE TABLE attachment_chunks(
        guid TEXT NOT NULL,
        n BIGINT NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY(guid, n)
    );
    ALTER TABLE attachment_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
    """,
    _BY_OWNER,
]
MIGRATIONS = {SQLITE: SQLITE_MIGRATIONS, POSTGRESQL: POSTGRESQL_MIGRATIONS}
_QUOTA_LOCK = 0x77736174  # pg_advisory_xact_lock(class, owner): one quota check at a time

ACTIVE = ("bound",)


def digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode("ascii", "replace")).hexdigest()


def new_ticket() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Blob:
    guid: str
    owner: str
    name: str
    media_type: str
    size: int
    sha256: str | None
    base_url: str
    state: str
    message_id: str | None
    replaced_by: str | None
    created: float


_COLUMNS = (
    "guid, owner, name, media_type, size, sha256, base_url, state, message_id, replaced_by, created"
)


def _blob(row: tuple[object, ...] | None) -> Blob | None:
    return None if row is None else Blob(*row)  # type: ignore[arg-type]


def create_upload(
    tx: Tx, owner: str, name: str, media_type: str, size: int, expires: float
) -> tuple[str, str]:
    """A pending upload; returns (guid, upload ticket in clear)."""
    guid = secrets.token_hex(16)
    ticket = new_ticket()
    tx.conn.execute(
        "INSERT INTO attachment_blobs(guid, owner, name, media_type, size, state, "
        "upload_ticket, ticket_expires, created) VALUES (?,?,?,?,?,'pending',?,?,?)",
        (guid, owner, name, media_type, size, digest(ticket), expires, tx.now),
    )
    return guid, ticket


def take_upload_ticket(tx: Tx, ticket: str) -> Blob | None:
    """Consume an upload ticket (once): the pending upload it opens, if still valid."""
    row = tx.conn.execute(
        f"UPDATE attachment_blobs SET upload_ticket=NULL, state='uploading' "
        f"WHERE upload_ticket=? AND state='pending' AND ticket_expires>=? RETURNING {_COLUMNS}",
        (digest(ticket), tx.now),
    ).fetchone()
    return _blob(row)


def mark_stored(tx: Tx, guid: str, sha256: str, base_url: str) -> None:
    tx.conn.execute(
        "UPDATE attachment_blobs SET state='stored', sha256=?, base_url=? "
        "WHERE guid=? AND state='uploading'",
        (sha256, base_url, guid),
    )


def forget(tx: Tx, guid: str) -> None:
    tx.conn.execute("DELETE FROM attachment_blobs WHERE guid=?", (guid,))
    tx.conn.execute("DELETE FROM attachment_recipients WHERE guid=?", (guid,))
    tx.conn.execute("DELETE FROM attachment_tickets WHERE guid=?", (guid,))
    if tx.dialect == POSTGRESQL:  # the bytes are rows there: they go with the upload
        drop_chunks(tx, guid)


def get(tx: Tx, guid: str) -> Blob | None:
    row = tx.conn.execute(
        f"SELECT {_COLUMNS} FROM attachment_blobs WHERE guid=?", (guid,)
    ).fetchone()
    return _blob(row)


def bind(tx: Tx, guid: str, message_id: str, recipients: list[str]) -> None:
    tx.conn.execute(
        "UPDATE attachment_blobs SET state='bound', message_id=? WHERE guid=?",
        (message_id, guid),
    )
    tx.conn.executemany(
        "INSERT INTO attachment_recipients(guid, address) VALUES (?,?) ON CONFLICT DO NOTHING",
        [(guid, r) for r in recipients],
    )


def create_received(tx: Tx, owner: str, name: str, media_type: str, size: int) -> str:
    """A row for bytes the server writes itself (mail taken by the SMTP gateway): no
    upload ticket; 'uploading' until `bind_received`, so the sweeper leaves its file alone
    and a crash in between is swept at start-up."""
    guid = secrets.token_hex(16)
    tx.conn.execute(
        "INSERT INTO attachment_blobs(guid, owner, name, media_type, size, state, "
        "ticket_expires, created) VALUES (?,?,?,?,?,'uploading',0,?)",
        (guid, owner, name, media_type, size, tx.now),
    )
    return guid


def bind_received(
    tx: Tx, guid: str, sha256: str, base_url: str, message_id: str, recipients: list[str]
) -> None:
    """The written and fsynced bytes of `create_received` become an attachment of
    `message_id` for `recipients`."""
    tx.conn.execute(
        "UPDATE attachment_blobs SET state='stored', sha256=?, base_url=? "
        "WHERE guid=? AND state='uploading'",
        (sha256, base_url, guid),
    )
    bind(tx, guid, message_id, recipients)


def is_recipient(tx: Tx, guid: str, address: str) -> bool:
    return (
        tx.conn.execute(
            "SELECT 1 FROM attachment_recipients WHERE guid=? AND address=?", (guid, address)
        ).fetchone()
        is not None
    )


def recipients(tx: Tx, guid: str) -> list[str]:
    rows = tx.conn.execute(
        "SELECT address FROM attachment_recipients WHERE guid=? ORDER BY address", (guid,)
    )
    return [r[0] for r in rows]


def for_message(tx: Tx, message_id: str) -> list[Blob]:
    rows = tx.conn.execute(
        f"SELECT {_COLUMNS} FROM attachment_blobs WHERE message_id=? ORDER BY created, guid",
        (message_id,),
    ).fetchall()
    return [Blob(*r) for r in rows]


def set_state(tx: Tx, guid: str, state: str, replaced_by: str | None = None) -> None:
    tx.conn.execute(
        "UPDATE attachment_blobs SET state=?, replaced_by=? WHERE guid=?",
        (state, replaced_by, guid),
    )


def issue_download(tx: Tx, guid: str, address: str, expires: float) -> str:
    ticket = new_ticket()
    tx.conn.execute(
        "INSERT INTO attachment_tickets(ticket, guid, address, expires) VALUES (?,?,?,?)",
        (digest(ticket), guid, address, expires),
    )
    tx.conn.execute("DELETE FROM attachment_tickets WHERE expires<?", (tx.now,))
    return ticket


def take_download_ticket(tx: Tx, ticket: str) -> tuple[Blob, str] | None:
    """Consume a download ticket (once); the attachment and who may read it, if active."""
    row = tx.conn.execute(
        "DELETE FROM attachment_tickets WHERE ticket=? RETURNING guid, address, expires",
        (digest(ticket),),
    ).fetchone()
    if row is None or row[2] < tx.now:
        return None
    blob = get(tx, row[0])
    if blob is None or blob.state not in ACTIVE:
        return None
    return blob, row[1]


def audit(tx: Tx, guid: str, address: str, event: str, first: int = 0, last: int = -1) -> None:
    tx.conn.execute(
        "INSERT INTO attachment_audit(guid, address, at, event, first_byte, last_byte) "
        "VALUES (?,?,?,?,?,?)",
        (guid, address, tx.now, event, first, last),
    )


def audit_log(tx: Tx, guid: str) -> list[dict[str, object]]:
    rows = tx.conn.execute(
        "SELECT address, at, event, first_byte, last_byte FROM attachment_audit "
        "WHERE guid=? ORDER BY seq",
        (guid,),
    )
    return [
        {"address": r[0], "at": r[1], "event": r[2], "first_byte": r[3], "last_byte": r[4]}
        for r in rows
    ]


def stale(tx: Tx, older_than: float) -> list[str]:
    """Uploads never bound to a message (or abandoned mid-stream) before `older_than`."""
    rows = tx.conn.execute(
        "SELECT guid FROM attachment_blobs WHERE state IN ('pending','uploading','stored') "
        "AND created<?",
        (older_than,),
    )
    return [r[0] for r in rows]


def interrupted(tx: Tx) -> list[str]:
    """Uploads (and mail the SMTP gateway was writing) still running: at start-up on the
    SQLite store, none of them will ever finish."""
    rows = tx.conn.execute("SELECT guid FROM attachment_blobs WHERE state='uploading'")
    return [r[0] for r in rows]


def lock_owner(tx: Tx, owner: str) -> None:
    """On PostgreSQL, one quota check of `owner` at a time across the domain's nodes (held
    until the transaction ends: a concurrent BeginUpload on another node waits and then
    counts this one's row). SQLite's single writer serializes them already."""
    if tx.dialect == POSTGRESQL:
        tx.conn.execute(
            "SELECT pg_advisory_xact_lock(CAST(? AS INTEGER), hashtext(?))", (_QUOTA_LOCK, owner)
        )


def owner_bytes(tx: Tx, owner: str) -> int:
    """What `owner` keeps here or announced: every upload not revoked or superseded."""
    row = tx.conn.execute(
        "SELECT COALESCE(SUM(size), 0) FROM attachment_blobs WHERE owner=? "
        "AND state IN ('pending','uploading','stored','bound')",
        (owner,),
    ).fetchone()
    return int(row[0])


def announced_bytes(tx: Tx) -> int:
    """Bytes announced by everyone and not yet on disk (uploads pending or running)."""
    row = tx.conn.execute(
        "SELECT COALESCE(SUM(size), 0) FROM attachment_blobs WHERE state IN ('pending','uploading')"
    ).fetchone()
    return int(row[0])


def live_guids(tx: Tx) -> set[str]:
    rows = tx.conn.execute(
        "SELECT guid FROM attachment_blobs WHERE state IN ('pending','uploading','stored','bound')"
    )
    return {r[0] for r in rows}


def dump(value: object) -> str:
    return json.dumps(value, sort_keys=True)


# attachment bytes as chunk rows (PostgreSQL store only; wsemail.server.attachments.chunks) --
def put_chunk(tx: Tx, guid: str, number: int, data: bytes) -> None:
    tx.conn.execute(
        "INSERT INTO attachment_chunks(guid, n, data) VALUES (?,?,?) "
        "ON CONFLICT(guid, n) DO UPDATE SET data=excluded.data",
        (guid, number, data),
    )


def chunk(tx: Tx, guid: str, number: int) -> bytes | None:
    row = tx.conn.execute(
        "SELECT data FROM attachment_chunks WHERE guid=? AND n=?", (guid, number)
    ).fetchone()
    return None if row is None else bytes(row[0])


def drop_chunks(tx: Tx, guid: str) -> None:
    tx.conn.execute("DELETE FROM attachment_chunks WHERE guid=?", (guid,))


def sweep_chunks(tx: Tx) -> int:
    """Remove the chunks of every upload that is gone, revoked or superseded; how many
    uploads lost theirs. Decided row by row in one statement, so that an upload another
    node starts meanwhile (its row commits before its first chunk) keeps its bytes."""
    rows = tx.conn.execute(
        "DELETE FROM attachment_chunks c WHERE NOT EXISTS (SELECT 1 FROM attachment_blobs b "
        "WHERE b.guid=c.guid AND b.state IN ('pending','uploading','stored','bound')) "
        "RETURNING guid"
    ).fetchall()
    return len({r[0] for r in rows})


def has_chunks(tx: Tx, guid: str) -> bool:
    return (
        tx.conn.execute("SELECT 1 FROM attachment_chunks WHERE guid=? AND n=0", (guid,)).fetchone()
        is not None
    )
