"""In charge of the IM plug-in's rows: one-time stream tickets (SHA-256 digests, never in
clear), per-user allow / block lists, the history of instant messages received, which
mailbox copies were meant as instant messages, and the pushed messages waiting for a
listener's acknowledgement (`im_pending`: the whole message, so that one not acknowledged
in time still reaches the mailbox after a restart). Every function runs inside a
transaction."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, replace

from lxml import etree

from wsemail.protocol.message import Message
from wsemail.server.store import Tx

MIGRATIONS = [
    """
    CREATE TABLE im_tickets(
        digest TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        expires REAL NOT NULL
    );
    CREATE TABLE im_acl(
        owner TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('allow', 'block')),
        pattern TEXT NOT NULL,
        PRIMARY KEY(owner, kind, pattern)
    );
    CREATE TABLE im_history(
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        push_id TEXT NOT NULL UNIQUE,
        owner TEXT NOT NULL,
        peer TEXT NOT NULL,
        message_id TEXT NOT NULL,
        body TEXT NOT NULL,
        at REAL NOT NULL,
        outcome TEXT NOT NULL
    );
    CREATE INDEX im_history_owner ON im_history(owner, seq);
    CREATE TABLE im_missed(
        owner TEXT NOT NULL,
        id TEXT NOT NULL,
        PRIMARY KEY(owner, id)
    )
    """,
    # 2: pushed, not yet acknowledged (outcome 'pending' in im_history until then)
    """
    CREATE TABLE im_pending(
        push_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        deadline REAL NOT NULL,
        message BLOB NOT NULL,
        origin TEXT,
        signed_xml BLOB
    );
    CREATE INDEX im_pending_deadline ON im_pending(deadline);
    CREATE INDEX im_pending_owner ON im_pending(owner, deadline)
    """,
]


def _digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode("ascii", "replace")).hexdigest()


def issue_ticket(tx: Tx, owner: str, lifetime: float) -> str:
    ticket = secrets.token_urlsafe(32)
    tx.conn.execute("DELETE FROM im_tickets WHERE expires<?", (tx.now,))
    tx.conn.execute(
        "INSERT INTO im_tickets(digest, owner, expires) VALUES (?,?,?)",
        (_digest(ticket), owner, tx.now + lifetime),
    )
    return ticket


def take_ticket(tx: Tx, ticket: str) -> str | None:
    """Consume a stream ticket (once); the address it authenticates, if still valid."""
    row = tx.conn.execute(
        "DELETE FROM im_tickets WHERE digest=? RETURNING owner, expires", (_digest(ticket),)
    ).fetchone()
    if row is None or row[1] < tx.now:
        return None
    return str(row[0])


def acl(tx: Tx, owner: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {"allow": [], "block": []}
    for kind, pattern in tx.conn.execute(
        "SELECT kind, pattern FROM im_acl WHERE owner=? ORDER BY kind, pattern", (owner,)
    ):
        found[kind].append(pattern)
    return found


def set_acl(tx: Tx, owner: str, kind: str, pattern: str, present: bool) -> None:
    if present:
        tx.conn.execute(
            "INSERT OR IGNORE INTO im_acl(owner, kind, pattern) VALUES (?,?,?)",
            (owner, kind, pattern),
        )
    else:
        tx.conn.execute(
            "DELETE FROM im_acl WHERE owner=? AND kind=? AND pattern=?", (owner, kind, pattern)
        )


@dataclass(frozen=True)
class Entry:
    seq: int
    peer: str
    message_id: str
    body: str
    at: float
    outcome: str  # pending | acked | mailbox | dropped (| pushed: before acknowledgements)


def record(
    tx: Tx, push_id: str, owner: str, peer: str, message_id: str, body: str, outcome: str
) -> None:
    tx.conn.execute(
        "INSERT INTO im_history(push_id, owner, peer, message_id, body, at, outcome) "
        "VALUES (?,?,?,?,?,?,?)",
        (push_id, owner, peer, message_id, body, tx.now, outcome),
    )


def committed(tx: Tx, push_id: str) -> bool:
    row = tx.conn.execute("SELECT 1 FROM im_history WHERE push_id=?", (push_id,)).fetchone()
    return row is not None


def set_outcome(tx: Tx, push_id: str, outcome: str) -> None:
    tx.conn.execute("UPDATE im_history SET outcome=? WHERE push_id=?", (outcome, push_id))


def history(tx: Tx, owner: str, peer: str | None, limit: int) -> list[Entry]:
    sql = "SELECT seq, peer, message_id, body, at, outcome FROM im_history WHERE owner=?"
    args: list[object] = [owner]
    if peer:
        sql += " AND peer=?"
        args.append(peer)
    sql += " ORDER BY seq DESC LIMIT ?"
    args.append(limit)
    return [Entry(*row) for row in tx.conn.execute(sql, args)]


def mark_missed(tx: Tx, owner: str, public_id: str) -> None:
    tx.conn.execute("INSERT OR IGNORE INTO im_missed(owner, id) VALUES (?,?)", (owner, public_id))


def missed(tx: Tx, owner: str) -> list[str]:
    """Ids of mailbox copies meant as instant messages that are still in the mailbox."""
    rows = tx.conn.execute(
        "SELECT m.id FROM im_missed i JOIN messages m ON m.owner=i.owner AND m.id=i.id "
        "WHERE i.owner=? ORDER BY m.seq DESC",
        (owner,),
    )
    return [r[0] for r in rows]


# waiting for an acknowledgement ------------------------------------------------------------
@dataclass(frozen=True)
class Pending:
    push_id: str
    owner: str
    deadline: float
    message: Message


def add_pending(tx: Tx, push_id: str, owner: str, message: Message, deadline: float) -> None:
    holder = etree.Element("holder")
    plain = replace(message, signed_xml=None, origin=None)  # kept as they are, beside
    tx.conn.execute(
        "INSERT INTO im_pending(push_id, owner, deadline, message, origin, signed_xml) "
        "VALUES (?,?,?,?,?,?)",
        (
            push_id,
            owner,
            deadline,
            etree.tostring(plain.to_xml(holder)),
            message.origin,
            message.signed_xml,
        ),
    )


def _pending(row: tuple[str, str, float, bytes, str | None, bytes | None]) -> Pending:
    push_id, owner, deadline, data, origin, signed = row
    message = Message.from_xml(etree.fromstring(data))  # written by `add_pending` only
    return Pending(push_id, owner, deadline, replace(message, origin=origin, signed_xml=signed))


_PENDING = "SELECT push_id, owner, deadline, message, origin, signed_xml FROM im_pending"


def overdue(tx: Tx, now: float, limit: int = 200) -> list[Pending]:
    """Pushed messages whose acknowledgement is late (oldest first)."""
    rows = tx.conn.execute(_PENDING + " WHERE deadline<=? ORDER BY deadline LIMIT ?", (now, limit))
    return [_pending(r) for r in rows]


def pending_for(tx: Tx, owner: str, now: float, limit: int = 100) -> list[Pending]:
    """`owner`'s pushed messages still waiting and not yet late (for a new session)."""
    rows = tx.conn.execute(
        _PENDING + " WHERE owner=? AND deadline>? ORDER BY deadline LIMIT ?", (owner, now, limit)
    )
    return [_pending(r) for r in rows]


def take_pending(tx: Tx, push_id: str) -> bool:
    """Forget one waiting push (acknowledged, or moved on); False if it was not waiting."""
    cur = tx.conn.execute("DELETE FROM im_pending WHERE push_id=?", (push_id,))
    return cur.rowcount > 0


def acknowledge(tx: Tx, owner: str, push_id: str) -> str:
    """`owner` acknowledges a push: acked (it was waiting), or what became of it instead
    (mailbox | dropped | acked), or unknown (not one of `owner`'s)."""
    row = tx.conn.execute(
        "SELECT outcome FROM im_history WHERE push_id=? AND owner=?", (push_id, owner)
    ).fetchone()
    if row is None:
        return "unknown"
    if row[0] == "pending" and take_pending(tx, push_id):
        set_outcome(tx, push_id, "acked")
        return "acked"
    return str(row[0])
