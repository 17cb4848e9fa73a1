"""In charge of the IM plug-in's rows: one-time stream tickets (SHA-256 digests, never in
clear), per-user allow / block lists, the history of instant messages received, which
mailbox copies were meant as instant messages, the pushed messages waiting for a
listener's acknowledgement (`im_pending`: the whole message, so that one not acknowledged
in time still reaches the mailbox after a restart), and the new-mail events that live
sessions are told about (`im_new_mail`, filled by a trigger on every new mailbox copy).
Every function runs inside a transaction."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, replace

from lxml import etree

from wsemail.protocol.message import Message, MessageHeader
from wsemail.server.sql import COMMIT_LOCK, POSTGRESQL, SQLITE
from wsemail.server.store import HEADER_COLUMNS, Tx, header

SQLITE_MIGRATIONS = [
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
    # 3: new mail, one row per copy that arrived unread (the trigger: `NEW_MAIL_TRIGGER`);
    # `ev` only grows (AUTOINCREMENT), so it is a cursor a client can resume from
    """
    CREATE TABLE im_new_mail(
        ev INTEGER PRIMARY KEY AUTOINCREMENT,
        owner TEXT NOT NULL,
        copy TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX im_new_mail_owner ON im_new_mail(owner, ev);
    CREATE INDEX im_new_mail_at ON im_new_mail(at)
    """,
]

# Several nodes write new-mail events at once, so an event's number is drawn when its
# transaction commits (a deferred trigger, under a transaction-scoped advisory lock taken
# just before the commit): numbers then follow the commit order, and a session that has read
# event n never finds an event below n committed later. The same trigger NOTIFYs channel
# `NEW_MAIL_CHANNEL` with the owner, delivered to every node's listener when the
# transaction commits (`wsemail.server.im.nodes`). `im_nodes` and `im_presence` say which
# node holds whose live sessions (PostgreSQL only: on SQLite one process holds them all).
NEW_MAIL_CHANNEL = "wsemail_new_mail"
IM_CHANNEL = "wsemail_im"  # pushes, acknowledgements and notices for another node
NEW_MAIL_LOCK = COMMIT_LOCK  # one committer numbers events at a time (wsemail.server.sql)
POSTGRESQL_MIGRATIONS = [
    f"""
    CREATE TABLE im_tickets(
        digest TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        expires DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE im_acl(
        owner TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('allow', 'block')),
        pattern TEXT NOT NULL,
        PRIMARY KEY(owner, kind, pattern)
    );
    CREATE TABLE im_history(
        seq BIGSERIAL PRIMARY KEY,
        push_id TEXT NOT NULL UNIQUE,
        owner TEXT NOT NULL,
        peer TEXT NOT NULL,
        message_id TEXT NOT NULL,
        body TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        outcome TEXT NOT NULL
    );
    CREATE INDEX im_history_owner ON im_history(owner, seq);
    CREATE TABLE im_missed(
        owner TEXT NOT NULL,
        id TEXT NOT NULL,
        PRIMARY KEY(owner, id)
    );
    CREATE TABLE im_pending(
        push_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        deadline DOUBLE PRECISION NOT NULL,
        message BYTEA NOT NULL,
        origin TEXT,
        signed_xml BYTEA
    );
    CREATE INDEX im_pending_deadline ON im_pending(deadline);
    CREATE INDEX im_pending_owner ON im_pending(owner, deadline);
    CREATE SEQUENCE im_new_mail_ev;
    CREATE TABLE im_new_mail(
        ev BIGINT PRIMARY KEY,
        owner TEXT NOT NULL,
        copy TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX im_new_mail_owner ON im_new_mail(owner, ev);
    CREATE INDEX im_new_mail_at ON im_new_mail(at);
    CREATE FUNCTION im_new_mail_arrived() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_advisory_xact_lock({NEW_MAIL_LOCK});
        INSERT INTO im_new_mail(ev, owner, copy, at)
            VALUES (nextval('im_new_mail_ev'), NEW.owner, NEW.id, extract(epoch FROM now()));
        PERFORM pg_notify('{NEW_MAIL_CHANNEL}', NEW.owner);
        RETURN NULL;
    END $$;
    CREATE CONSTRAINT TRIGGER im_new_mail_arrived AFTER INSERT ON messages
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
        WHEN (NEW.seen = 0 AND NEW.arrival NOT IN ('sent', 'Drafts', 'Trash'))
        EXECUTE FUNCTION im_new_mail_arrived();
    CREATE TABLE im_nodes(
        node TEXT PRIMARY KEY,
        alive_until DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE im_presence(
        node TEXT NOT NULL,
        owner TEXT NOT NULL,
        sessions INTEGER NOT NULL,
        PRIMARY KEY(owner, node)
    )
    """,
]
MIGRATIONS = {SQLITE: SQLITE_MIGRATIONS, POSTGRESQL: POSTGRESQL_MIGRATIONS}

# New mail is a copy that arrives unread in any folder but sent, Drafts and Trash: whatever
# wrote it (a Send to a local user, a Deliver, the SMTP gateway, a bounce, a notice, a
# Sieve filing), in the same unit of work, so a rolled-back delivery leaves no event.
# Made at every start (a core migration that rebuilds `messages` drops it), and made again
# when an older text is there. (PostgreSQL's is made once, by its migration 1 above.) The
# folders are compared one by one: `NOT IN (list)` builds a temporary b-tree for the list
# at every insert (~2 % of a send's instructions, measured with callgrind).
NEW_MAIL_TRIGGER = """
CREATE TRIGGER im_new_mail_arrived AFTER INSERT ON messages
WHEN new.seen = 0 AND new.arrival <> 'sent' AND new.arrival <> 'Drafts'
    AND new.arrival <> 'Trash'
BEGIN
    INSERT INTO im_new_mail(owner, copy, at)
    VALUES (new.owner, new.id, CAST(strftime('%s', 'now') AS REAL));
END
"""


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
            "INSERT INTO im_acl(owner, kind, pattern) VALUES (?,?,?) ON CONFLICT DO NOTHING",
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
    tx.conn.execute(
        "INSERT INTO im_missed(owner, id) VALUES (?,?) ON CONFLICT DO NOTHING", (owner, public_id)
    )


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


# new mail ----------------------------------------------------------------------------------
def install_new_mail_trigger(tx: Tx) -> None:
    if tx.dialect == POSTGRESQL:
        return
    row = tx.conn.execute(
        "SELECT sql FROM sqlite_master WHERE type='trigger' AND name='im_new_mail_arrived'"
    ).fetchone()
    if row is not None and row[0] == NEW_MAIL_TRIGGER.strip():
        return
    tx.conn.execute("DROP TRIGGER IF EXISTS im_new_mail_arrived")
    tx.conn.execute(NEW_MAIL_TRIGGER)


def new_mail_mark(tx: Tx) -> int:
    """The newest new-mail event ever (pruned ones too): a new session starts after it.
    (PostgreSQL: the newest committed one kept; a number drawn by a transaction still
    committing is not a mark, or its event would be skipped.)"""
    if tx.dialect == POSTGRESQL:
        row = tx.conn.execute("SELECT max(ev) FROM im_new_mail").fetchone()
        return int(row[0] or 0) if row else 0
    row = tx.conn.execute("SELECT seq FROM sqlite_sequence WHERE name='im_new_mail'").fetchone()
    return int(row[0]) if row else 0


def new_mail_owners(tx: Tx, after: int) -> tuple[int, list[str]]:
    """(newest event, the owners with events after `after`)."""
    newest = new_mail_mark(tx)
    if newest <= after:
        return newest, []
    rows = tx.conn.execute("SELECT DISTINCT owner FROM im_new_mail WHERE ev>?", (after,))
    return newest, [r[0] for r in rows]


def new_mail(
    tx: Tx, owner: str, after: int, limit: int
) -> tuple[list[tuple[int, MessageHeader]], int, bool]:
    """`owner`'s new mail after event `after`, oldest first: ([(event, header)], the last
    event read, whether there are more). Copies deleted since (or in Trash) are skipped."""
    columns = ", ".join(f"m.{c.strip()}" for c in HEADER_COLUMNS.split(","))
    rows = tx.conn.execute(
        f"SELECT e.ev, m.seq, {columns} FROM im_new_mail e "  # noqa: S608 -- fixed columns
        "LEFT JOIN messages m ON m.owner=e.owner AND m.id=e.copy "
        "WHERE e.owner=? AND e.ev>? ORDER BY e.ev LIMIT ?",
        (owner, after, limit),
    ).fetchall()
    found = [(int(r[0]), header(r[2:])) for r in rows if r[1] is not None]
    found = [(ev, head) for ev, head in found if head.folder != "Trash"]
    last = int(rows[-1][0]) if rows else after
    return found, last, len(rows) == limit


def prune_new_mail(tx: Tx, before: float) -> int:
    """Forget new-mail events older than `before` (a reconnecting client replays less)."""
    return tx.conn.execute("DELETE FROM im_new_mail WHERE at<?", (before,)).rowcount


# several nodes (PostgreSQL only) -----------------------------------------------------------
def node_alive(tx: Tx, node: str, until: float) -> None:
    """`node` is alive until `until`; nodes silent for a minute are forgotten."""
    tx.conn.execute(
        "INSERT INTO im_nodes(node, alive_until) VALUES (?,?) "
        "ON CONFLICT(node) DO UPDATE SET alive_until=excluded.alive_until",
        (node, until),
    )
    tx.conn.execute("DELETE FROM im_nodes WHERE alive_until<?", (tx.now - 60,))
    tx.conn.execute("DELETE FROM im_presence WHERE node NOT IN (SELECT node FROM im_nodes)")


def forget_node(tx: Tx, node: str) -> None:
    tx.conn.execute("DELETE FROM im_presence WHERE node=?", (node,))
    tx.conn.execute("DELETE FROM im_nodes WHERE node=?", (node,))


def set_presence(tx: Tx, node: str, owner: str, sessions: int) -> None:
    """`owner` holds `sessions` live sessions that take instant messages on `node`."""
    if sessions:
        tx.conn.execute(
            "INSERT INTO im_presence(node, owner, sessions) VALUES (?,?,?) "
            "ON CONFLICT(owner, node) DO UPDATE SET sessions=excluded.sessions",
            (node, owner, sessions),
        )
    else:
        tx.conn.execute("DELETE FROM im_presence WHERE node=? AND owner=?", (node, owner))


def sync_presence(tx: Tx, node: str, counts: dict[str, int]) -> None:
    """`node`'s live sessions are `counts` (address → sessions), and nothing else."""
    tx.conn.execute("DELETE FROM im_presence WHERE node=?", (node,))
    tx.conn.executemany(
        "INSERT INTO im_presence(node, owner, sessions) VALUES (?,?,?)",
        [(node, owner, sessions) for owner, sessions in counts.items() if sessions],
    )


_ELSEWHERE = (
    "SELECT p.owner, sum(p.sessions) FROM im_presence p JOIN im_nodes n ON n.node=p.node "
    "WHERE p.node<>? AND n.alive_until>?"
)


def live_elsewhere(tx: Tx, owner: str, node: str) -> int:
    """`owner`'s live sessions on the other nodes that are alive."""
    row = tx.conn.execute(_ELSEWHERE + " AND p.owner=? GROUP BY p.owner", (node, tx.now, owner))
    found = row.fetchone()
    return int(found[1]) if found else 0


def online_elsewhere(tx: Tx, node: str) -> dict[str, int]:
    """Everyone's live sessions on the other nodes that are alive."""
    rows = tx.conn.execute(_ELSEWHERE + " GROUP BY p.owner", (node, tx.now))
    return {str(r[0]): int(r[1]) for r in rows}


def pending_one(tx: Tx, push_id: str) -> Pending | None:
    """One push still waiting for its acknowledgement."""
    row = tx.conn.execute(_PENDING + " WHERE push_id=?", (push_id,)).fetchone()
    return None if row is None else _pending(row)


def announce(tx: Tx, payload: str) -> None:
    """Tell every node's listener (on `IM_CHANNEL`) once this transaction commits."""
    tx.conn.execute("SELECT pg_notify(?, ?)", (IM_CHANNEL, payload))
