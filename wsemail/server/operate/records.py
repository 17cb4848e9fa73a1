"""In charge of the operate feature's rows and queries: per-user storage quota overrides
(its own table, component schema `operate`), what each user keeps on the server, and the
queue rows an administrator lists, retries or bounces. Every function runs inside a store
transaction.

Other features ask for quotas before this component's tables exist (or without it loaded):
what exists is read from the `components` table (`_has`), on both stores, rather than
trying a statement and catching the error (on PostgreSQL a failed statement ends the
whole transaction)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from wsemail.server.sql import COMMIT_LOCK, POSTGRESQL, SQLITE
from wsemail.server.store import QueueRow, Tx

COMPONENT = "operate"
ATTACHMENTS = "attachments"  # the attachment plug-in's component (table attachment_blobs)
SQLITE_MIGRATIONS = [
    """
    CREATE TABLE operate_quotas(
        address TEXT PRIMARY KEY,
        limit_bytes INTEGER NOT NULL,
        changed REAL NOT NULL
    ) WITHOUT ROWID
    """,
    # what each owner keeps in mailboxes, kept by triggers on the core messages table, so a
    # delivery's quota check is one row read however large the mailbox
    """
    CREATE TABLE operate_usage(
        owner TEXT PRIMARY KEY,
        messages INTEGER NOT NULL,
        bytes INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO operate_usage(owner, messages, bytes)
        SELECT owner, count(*), coalesce(sum(size), 0) FROM messages GROUP BY owner;
    CREATE TRIGGER operate_usage_insert AFTER INSERT ON messages BEGIN
        INSERT INTO operate_usage(owner, messages, bytes) VALUES (new.owner, 1, new.size)
        ON CONFLICT(owner) DO UPDATE SET messages=messages+1, bytes=bytes+new.size;
    END;
    CREATE TRIGGER operate_usage_delete AFTER DELETE ON messages BEGIN
        UPDATE operate_usage SET messages=messages-1, bytes=bytes-old.size
        WHERE owner=old.owner;
    END;
    CREATE TRIGGER operate_usage_update AFTER UPDATE OF owner, size ON messages BEGIN
        UPDATE operate_usage SET messages=messages-1, bytes=bytes-old.size
        WHERE owner=old.owner;
        INSERT INTO operate_usage(owner, messages, bytes) VALUES (new.owner, 1, new.size)
        ON CONFLICT(owner) DO UPDATE SET messages=messages+1, bytes=bytes+new.size;
    END
    """,
]
# the body of the PostgreSQL totals trigger (migration 1 ran it per row at once; 2 at commit)
_USAGE_CHANGE = """        IF TG_OP IN ('DELETE', 'UPDATE') THEN
            UPDATE operate_usage SET messages=messages-1, bytes=bytes-OLD.size
            WHERE owner=OLD.owner;
        END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            INSERT INTO operate_usage AS u(owner, messages, bytes) VALUES (NEW.owner, 1, NEW.size)
            ON CONFLICT(owner) DO UPDATE SET messages=u.messages+1, bytes=u.bytes+NEW.size;
        END IF;
        RETURN NULL;
"""
# PostgreSQL: the final shape at once; the triggers are in place (and hold off other writers of
# `messages`) before the totals are counted, so no copy is missed or counted twice
POSTGRESQL_MIGRATIONS = [
    f"""
    CREATE TABLE operate_quotas(
        address TEXT PRIMARY KEY,
        limit_bytes BIGINT NOT NULL,
        changed DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE operate_usage(
        owner TEXT PRIMARY KEY,
        messages BIGINT NOT NULL,
        bytes BIGINT NOT NULL
    );
    CREATE FUNCTION operate_usage_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
{_USAGE_CHANGE}    END $$;
    CREATE TRIGGER operate_usage_insert AFTER INSERT OR DELETE ON messages
        FOR EACH ROW EXECUTE FUNCTION operate_usage_change();
    CREATE TRIGGER operate_usage_update AFTER UPDATE OF owner, size ON messages
        FOR EACH ROW WHEN (OLD.owner IS DISTINCT FROM NEW.owner OR OLD.size <> NEW.size)
        EXECUTE FUNCTION operate_usage_change();
    INSERT INTO operate_usage(owner, messages, bytes)
        SELECT owner, count(*), coalesce(sum(size), 0) FROM messages GROUP BY owner;
    """,
    # 2: the totals change at commit (deferred), under the commit lock: two nodes' batches
    # that store copies for the same owners in opposite orders no longer deadlock on the
    # totals rows (each held from its insert to the commit before); a quota check sees the
    # copies of earlier batches, not those of earlier units in its own batch
    f"""
    CREATE OR REPLACE FUNCTION operate_usage_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_advisory_xact_lock({COMMIT_LOCK});
{_USAGE_CHANGE}    END $$;
    DROP TRIGGER operate_usage_insert ON messages;
    DROP TRIGGER operate_usage_update ON messages;
    CREATE CONSTRAINT TRIGGER operate_usage_insert AFTER INSERT OR DELETE ON messages
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION operate_usage_change();
    CREATE CONSTRAINT TRIGGER operate_usage_update AFTER UPDATE OF owner, size ON messages
        DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW WHEN (OLD.owner IS DISTINCT FROM NEW.owner OR OLD.size <> NEW.size)
        EXECUTE FUNCTION operate_usage_change();
    """,
]
MIGRATIONS = {SQLITE: SQLITE_MIGRATIONS, POSTGRESQL: POSTGRESQL_MIGRATIONS}
# the tables read here that may not exist yet: the component that makes each, and from
# which of its versions on, per dialect
_SINCE = {
    "operate_quotas": (COMPONENT, {SQLITE: 1, POSTGRESQL: 1}),
    "operate_usage": (COMPONENT, {SQLITE: 2, POSTGRESQL: 1}),
    "attachment_blobs": (ATTACHMENTS, {SQLITE: 1, POSTGRESQL: 1}),
}


def _has(tx: Tx, table: str) -> bool:
    """Whether `table` exists here (its component's migrations made it; once it does, it
    stays: remembered by the store)."""
    if tx.known(f"table:{table}"):
        return True
    component, since = _SINCE[table]
    row = tx.conn.execute("SELECT version FROM components WHERE name=?", (component,)).fetchone()
    found = row is not None and int(row[0]) >= since[tx.dialect]
    if found:
        tx.learn(f"table:{table}")
    return found


@dataclass(frozen=True)
class Usage:
    """What one user keeps here against their storage quota."""

    address: str
    messages: int
    message_bytes: int  # mailbox copies (every folder, Trash included)
    attachment_bytes: int  # uploads stored, bound or announced
    limit: int  # the quota in force (the override, else the server default)
    override: bool  # a per-user quota is set

    @property
    def used(self) -> int:
        return self.message_bytes + self.attachment_bytes


def set_limit(tx: Tx, address: str, limit: int | None) -> None:
    """Set `address`'s own quota (None: back to the server default)."""
    if limit is None:
        tx.conn.execute("DELETE FROM operate_quotas WHERE address=?", (address,))
        return
    tx.conn.execute(
        "INSERT INTO operate_quotas(address, limit_bytes, changed) VALUES (?,?,?) "
        "ON CONFLICT(address) DO UPDATE SET limit_bytes=excluded.limit_bytes, "
        "changed=excluded.changed",
        (address, limit, tx.now),
    )


def override_of(tx: Tx, address: str) -> int | None:
    """`address`'s own quota, if one is set (None also while the table does not exist:
    other features ask before this one has run its migration)."""
    if not _has(tx, "operate_quotas"):
        return None
    row = tx.conn.execute(
        "SELECT limit_bytes FROM operate_quotas WHERE address=?", (address,)
    ).fetchone()
    return int(row[0]) if row else None


def limit_for(tx: Tx, address: str, default: int) -> int:
    found = override_of(tx, address)
    return default if found is None else found


_COUNTED = "state IN ('pending','uploading','stored','bound')"  # uploads a quota counts
# the size of an upload a quota counts, else NULL: for the check at every delivered copy,
# where `state IN (list)` would build a temporary b-tree for the list each time
_COUNTED_SIZE = (
    "CASE state WHEN 'pending' THEN size WHEN 'uploading' THEN size "
    "WHEN 'stored' THEN size WHEN 'bound' THEN size END"
)


def _attachment_bytes(tx: Tx, address: str | None) -> dict[str, int]:
    """Upload bytes per owner that count against the quota (the attachment plug-in's
    table, when it exists: the same states its own quota counts)."""
    where = _COUNTED + (" AND owner=?" if address else "")
    if not _has(tx, "attachment_blobs"):
        return {}
    rows = tx.conn.execute(
        f"SELECT owner, coalesce(sum(size), 0) FROM attachment_blobs WHERE {where} GROUP BY owner",
        (address,) if address else (),
    ).fetchall()
    return {r[0]: int(r[1]) for r in rows}


def _mailboxes(tx: Tx, address: str | None) -> dict[str, tuple[int, int]]:
    """(messages, bytes) per owner (one owner, or all): from the trigger-kept totals, or
    counted from the mailboxes while this component's tables do not exist yet."""
    where, args = (" WHERE owner=?", (address,)) if address else ("", ())
    if _has(tx, "operate_usage"):
        rows = tx.conn.execute(
            f"SELECT owner, messages, bytes FROM operate_usage{where}", args
        ).fetchall()
    else:
        rows = tx.conn.execute(
            f"SELECT owner, count(*), coalesce(sum(size), 0) FROM messages{where} GROUP BY owner",
            args,
        ).fetchall()
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


def usage(tx: Tx, address: str, default: int) -> Usage:
    count, size = _mailboxes(tx, address).get(address, (0, 0))
    override = override_of(tx, address)
    return Usage(
        address,
        int(count),
        int(size),
        _attachment_bytes(tx, address).get(address, 0),
        default if override is None else override,
        override is not None,
    )


def room_left(tx: Tx, address: str, default: int) -> int:
    """Bytes `address` may still receive (negative: over quota) — the delivery check's
    one read of the totals and the override, plus the attachment uploads."""
    if not _has(tx, "operate_usage"):  # before this component's migrations ran
        counted = usage(tx, address, default)
        return counted.limit - counted.used
    sql = (
        "SELECT (SELECT bytes FROM operate_usage WHERE owner=?), "
        "(SELECT limit_bytes FROM operate_quotas WHERE address=?)"
    )
    args = [address, address]
    if _has(tx, "attachment_blobs"):  # the uploads counted in the same statement
        sql += f", (SELECT coalesce(sum({_COUNTED_SIZE}), 0) FROM attachment_blobs WHERE owner=?)"
        args.append(address)
    used, override, *attached = tx.conn.execute(sql, args).fetchone()
    limit = default if override is None else int(override)
    return limit - int(used or 0) - int(attached[0] if attached else 0)


def usage_all(tx: Tx, default: int) -> list[Usage]:
    """Every account's usage, by address."""
    per_owner = _mailboxes(tx, None)
    attached = _attachment_bytes(tx, None)
    overrides = {}
    if _has(tx, "operate_quotas"):
        overrides = {
            r[0]: int(r[1])
            for r in tx.conn.execute("SELECT address, limit_bytes FROM operate_quotas")
        }
    return [
        Usage(
            user.address,
            per_owner.get(user.address, (0, 0))[0],
            per_owner.get(user.address, (0, 0))[1],
            attached.get(user.address, 0),
            overrides.get(user.address, default),
            user.address in overrides,
        )
        for user in sorted(tx.users(), key=lambda u: u.address)
    ]


# the outbound queue, for the administrator ------------------------------------------------
@dataclass(frozen=True)
class QueuedRow:
    """One queue row as the administrator sees it."""

    id: int
    domain: str
    sender: str
    recipients: list[str]
    state: str
    attempts: int
    created: float
    next_attempt: float
    last_error: str


def queue_rows(tx: Tx, domain: str | None = None, limit: int = 1000) -> list[QueuedRow]:
    where, args = ("WHERE domain=?", (domain,)) if domain else ("", ())
    rows = tx.conn.execute(
        "SELECT id, domain, sender, recipients_json, state, attempts, created, next_attempt, "
        f"coalesce(last_error, '') FROM queue {where} ORDER BY created, id LIMIT ?",
        (*args, limit),
    ).fetchall()
    return [
        QueuedRow(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6], r[7], r[8]) for r in rows
    ]


def retry_now(tx: Tx, row_id: int) -> bool:
    """Make a waiting row due now (a leased one is being tried already)."""
    return (
        tx.conn.execute(
            "UPDATE queue SET next_attempt=? WHERE id=? AND state IN ('queued','deferred')",
            (tx.now, row_id),
        ).rowcount
        > 0
    )


def take_for_bounce(tx: Tx, row_id: int) -> QueueRow | None:
    """The waiting row `row_id`, for the relay to bounce (None: no such row, or the relay
    holds it right now)."""
    r = tx.conn.execute(
        "SELECT id, message_id, sender, domain, payload, recipients_json, attempts, created, "
        "notified FROM queue WHERE id=? AND state IN ('queued','deferred')",
        (row_id,),
    ).fetchone()
    if r is None:
        return None
    return QueueRow(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7], bool(r[8]))


def schema_versions(tx: Tx) -> tuple[int, dict[str, int]]:
    """The core schema version and each component's."""
    if tx.dialect == POSTGRESQL:
        core = int(tx.conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0)
    else:
        core = int(tx.conn.execute("PRAGMA user_version").fetchone()[0])
    components = {r[0]: int(r[1]) for r in tx.conn.execute("SELECT name, version FROM components")}
    return core, components


def database_bytes(tx: Tx) -> int | None:
    """What the PostgreSQL database holds on its server's disks (None on SQLite: the size
    of its file is read from the data dir)."""
    if tx.dialect != POSTGRESQL:
        return None
    return int(tx.conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])


def counts(tx: Tx) -> tuple[int, int]:
    """(accounts, messages) on this server."""
    users = int(tx.conn.execute("SELECT count(*) FROM users").fetchone()[0])
    return users, tx.count_messages()


def overdue(tx: Tx) -> float:
    """Seconds the most overdue queue row is past its attempt (a waiting row past its
    next attempt, a leased one past its lease; 0: none)."""
    row = tx.conn.execute(
        "SELECT min(CASE WHEN state='leased' THEN lease_until ELSE next_attempt END) FROM queue"
    ).fetchone()
    if row is None or row[0] is None:
        return 0.0
    return max(0.0, tx.now - float(row[0]))
