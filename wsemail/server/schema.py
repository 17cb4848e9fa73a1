"""The core schema of the SQLite store: migrations applied in order, once each
(`PRAGMA user_version` counts them)."""

from __future__ import annotations

# the message ids a row inserted with thread 0 names: its own, In-Reply-To, References
_IDS = """
                SELECT new.message_id AS value
                UNION SELECT new.in_reply_to WHERE new.in_reply_to<>''
                UNION SELECT value FROM json_each(new.references_json)"""


def _merged(table: str) -> str:
    """The insert trigger's statement that moves `table`'s rows of the other conversations
    a new row's ids name into the oldest one (only when they name more than one)."""
    oldest = f"""
            SELECT min(thread) FROM thread_links WHERE owner=new.owner AND message_id IN ({_IDS})"""
    return f"""
        UPDATE {table} SET thread=({oldest})
        WHERE (new.in_reply_to<>'' OR new.references_json<>'[]') AND (
            SELECT count(DISTINCT thread) FROM thread_links
            WHERE owner=new.owner AND message_id IN ({_IDS}))>1
        AND owner=new.owner AND thread IN (
            SELECT thread FROM thread_links WHERE owner=new.owner AND message_id IN ({_IDS}))
        AND thread<>({oldest});"""


# the body of the insert trigger for a row inserted with thread 0 (migrations 8 and 11)
_THREAD_INSERT = (
    """
        INSERT OR IGNORE INTO thread_links(owner, message_id, thread)
            SELECT new.owner, k.value, new.seq FROM (SELECT new.message_id AS value
                UNION SELECT new.in_reply_to WHERE new.in_reply_to<>''
                UNION SELECT value FROM json_each(new.references_json)) AS k;"""
    + _merged("messages")
    + _merged("thread_links")
    + """
        UPDATE messages SET thread=(SELECT thread FROM thread_links
            WHERE owner=new.owner AND message_id=new.message_id) WHERE seq=new.seq;
"""
)

MIGRATIONS: list[str] = [
    # 1: accounts, mailboxes, replay cache, outbound queue
    """
    CREATE TABLE users(
        address TEXT PRIMARY KEY,
        salt BLOB NOT NULL,
        key BLOB NOT NULL,
        admin INTEGER NOT NULL DEFAULT 0,
        created TEXT NOT NULL
    );
    CREATE TABLE messages(
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        owner TEXT NOT NULL,
        folder TEXT NOT NULL,
        message_id TEXT NOT NULL,
        sender TEXT NOT NULL,
        to_json TEXT NOT NULL,
        cc_json TEXT NOT NULL,
        subject TEXT NOT NULL,
        date TEXT NOT NULL,
        size INTEGER NOT NULL,
        seen INTEGER NOT NULL DEFAULT 0,
        body TEXT NOT NULL
    );
    CREATE INDEX messages_mailbox ON messages(owner, folder, seq);
    CREATE UNIQUE INDEX messages_once ON messages(owner, folder, sender, message_id);
    CREATE TABLE nonces(
        principal TEXT NOT NULL,
        nonce TEXT NOT NULL,
        expires REAL NOT NULL,
        PRIMARY KEY(principal, nonce)
    ) WITHOUT ROWID;
    CREATE INDEX nonces_expiry ON nonces(expires);
    CREATE TABLE queue(
        id INTEGER PRIMARY KEY,
        message_id TEXT NOT NULL,
        sender TEXT NOT NULL,
        domain TEXT NOT NULL,
        payload BLOB NOT NULL,
        recipients_json TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'queued',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL NOT NULL,
        lease_until REAL,
        created REAL NOT NULL,
        last_error TEXT
    );
    CREATE INDEX queue_due ON queue(state, next_attempt);
    """,
    # 2: federation — provenance of relayed copies, idempotent inbound deliveries
    """
    ALTER TABLE messages ADD COLUMN origin TEXT;
    ALTER TABLE messages ADD COLUMN signed_xml BLOB;
    CREATE TABLE deliveries(
        origin TEXT NOT NULL,
        message_id TEXT NOT NULL,
        recipient TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        at REAL NOT NULL,
        PRIMARY KEY(origin, message_id, recipient)
    ) WITHOUT ROWID;
    CREATE INDEX deliveries_age ON deliveries(at);
    """,
    # 3: schema versions of plug-ins that keep tables of their own
    """
    CREATE TABLE components(name TEXT PRIMARY KEY, version INTEGER NOT NULL)
    """,
    # 4: server certificates this server verified on accepting relayed mail, by SHA-256 of
    # the DER (clients resolve the compact provenance's dsig11:X509Digest through them)
    """
    CREATE TABLE certificates(
        digest BLOB PRIMARY KEY,
        der BLOB NOT NULL,
        added REAL NOT NULL
    ) WITHOUT ROWID
    """,
    # 5: the IM flags of a mailbox copy (a relayed one also keeps them in its signed form)
    """
    ALTER TABLE messages ADD COLUMN instant INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN delete_if_undeliverable INTEGER NOT NULL DEFAULT 0
    """,
    # 6: a mailbox to live in (wsemail/server/mailbox/) — custom folders; flags; Trash with
    # the time a copy went there; `arrival`, the folder a copy arrived in, keeps deliveries
    # idempotent wherever the copy was moved since; full-text search (FTS5, external content
    # over a view that leaves end-to-end encrypted bodies out, kept in sync by triggers; the
    # owner is indexed too, as one hex token, so a search walks only its owner's matches)
    """
    ALTER TABLE messages ADD COLUMN flagged INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN answered INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN has_attachment INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN trashed_at REAL;
    ALTER TABLE messages ADD COLUMN arrival TEXT NOT NULL DEFAULT '';
    UPDATE messages SET arrival=folder;
    UPDATE messages SET sealed=1
        WHERE ltrim(body, ' ' || char(9, 10, 13)) LIKE '<e2e:Sealed xmlns:e2e="urn:wsemail:e2e"%';
    DROP INDEX messages_once;
    CREATE UNIQUE INDEX messages_once ON messages(owner, arrival, sender, message_id);
    CREATE INDEX messages_owner ON messages(owner, seq);
    CREATE INDEX messages_trash ON messages(trashed_at) WHERE trashed_at IS NOT NULL;
    CREATE INDEX messages_sealed ON messages(owner, folder) WHERE sealed=1;
    CREATE INDEX messages_date ON messages(owner, date);
    CREATE INDEX messages_unread ON messages(owner, seq) WHERE seen=0;
    CREATE INDEX messages_flagged ON messages(owner, seq) WHERE flagged=1;
    CREATE INDEX messages_attached ON messages(owner, seq) WHERE has_attachment=1;
    CREATE TABLE folders(
        owner TEXT NOT NULL,
        name TEXT NOT NULL COLLATE NOCASE,
        created REAL NOT NULL,
        PRIMARY KEY(owner, name)
    ) WITHOUT ROWID;
    CREATE VIEW messages_text AS SELECT seq, subject,
        CASE WHEN sealed THEN '' ELSE body END AS body, sender,
        to_json || ' ' || cc_json AS recipients, hex(owner) AS mailbox FROM messages;
    CREATE VIRTUAL TABLE messages_fts USING fts5(
        subject, body, sender, recipients, mailbox,
        content='messages_text', content_rowid='seq',
        tokenize='unicode61 remove_diacritics 2'
    );
    CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts(rowid, subject, body, sender, recipients, mailbox) VALUES (
            new.seq, new.subject, CASE WHEN new.sealed THEN '' ELSE new.body END,
            new.sender, new.to_json || ' ' || new.cc_json, hex(new.owner));
    END;
    CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, subject, body, sender, recipients, mailbox)
        VALUES ('delete', old.seq, old.subject, CASE WHEN old.sealed THEN '' ELSE old.body END,
            old.sender, old.to_json || ' ' || old.cc_json, hex(old.owner));
    END;
    CREATE TRIGGER messages_fts_update
    AFTER UPDATE OF subject, body, sender, to_json, cc_json, sealed, owner ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, subject, body, sender, recipients, mailbox)
        VALUES ('delete', old.seq, old.subject, CASE WHEN old.sealed THEN '' ELSE old.body END,
            old.sender, old.to_json || ' ' || old.cc_json, hex(old.owner));
        INSERT INTO messages_fts(rowid, subject, body, sender, recipients, mailbox) VALUES (
            new.seq, new.subject, CASE WHEN new.sealed THEN '' ELSE new.body END,
            new.sender, new.to_json || ' ' || new.cc_json, hex(new.owner));
    END;
    INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')
    """,
    # 7: whether the sender was told a queued message is delayed (one notice per row)
    """
    ALTER TABLE queue ADD COLUMN notified INTEGER NOT NULL DEFAULT 0
    """,
    # 8: conversations (wsemail/server/mailbox/threads.py). In-Reply-To and References of a
    # copy, its blind copies (the sender's own copy only), and `thread`, the conversation it
    # belongs to: copies linked by those message ids, whichever arrives first. thread_links
    # maps every message id a mailbox has seen (its copies' and those they name) to its
    # conversation. `Tx.add_message` links each copy as it inserts it (its row written once,
    # with its thread); the insert trigger does the same for a row inserted another way
    # (thread 0): links, merging two conversations that a new copy links (the two UPDATEs
    # run only then), numbering. The delete trigger forgets a conversation's links when its
    # last copy goes. A thread number is the seq of a copy of the conversation, so it is
    # never reused while the conversation lives.
    """
    ALTER TABLE messages ADD COLUMN in_reply_to TEXT NOT NULL DEFAULT '';
    ALTER TABLE messages ADD COLUMN references_json TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE messages ADD COLUMN bcc_json TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE messages ADD COLUMN thread INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE thread_links(
        owner TEXT NOT NULL,
        message_id TEXT NOT NULL,
        thread INTEGER NOT NULL,
        PRIMARY KEY(owner, message_id)
    ) WITHOUT ROWID;
    CREATE INDEX thread_links_thread ON thread_links(owner, thread);
    INSERT OR IGNORE INTO thread_links(owner, message_id, thread)
        SELECT owner, message_id, seq FROM messages ORDER BY seq;
    UPDATE messages SET thread=(SELECT l.thread FROM thread_links l
        WHERE l.owner=messages.owner AND l.message_id=messages.message_id);
    CREATE INDEX messages_thread ON messages(owner, thread, seq);
    CREATE INDEX messages_folder_thread ON messages(owner, folder, thread, seq);
    CREATE TRIGGER messages_thread_insert AFTER INSERT ON messages WHEN new.thread=0 BEGIN"""
    + _THREAD_INSERT
    + """    END;
    CREATE TRIGGER messages_thread_delete AFTER DELETE ON messages BEGIN
        DELETE FROM thread_links WHERE owner=old.owner AND thread=old.thread AND NOT EXISTS (
            SELECT 1 FROM messages WHERE owner=old.owner AND thread=old.thread);
    END
    """,
    # 9: drafts saved on the server and imported mail (wsemail/server/mailbox/): `draft`, a
    # draft's JSON (Bcc, attachment ids, IM flags; a copy sent from a draft keeps it, so a
    # retried SendDraft is recognised); `imported`, when a message was imported (its
    # provenance record says "imported", never signed)
    """
    ALTER TABLE messages ADD COLUMN draft TEXT;
    ALTER TABLE messages ADD COLUMN imported REAL
    """,
    # 10: the full-text entries of a commit batch are written once, at its end. FTS5 writes
    # what it holds as a new index segment at every savepoint, and every unit of work runs
    # in one, so each stored copy made a segment of its own and the merges that follow
    # (~6 index writes a send). A new copy now only notes its seq in messages_fts_pending;
    # the store indexes the noted rows with their values at commit time (FTS_FLUSH, run
    # between the last unit and COMMIT). A noted row that is changed or deleted before that
    # has no entry to take out yet: the triggers leave it to the flush.
    """
    CREATE TABLE messages_fts_pending(seq INTEGER PRIMARY KEY);
    DROP TRIGGER messages_fts_insert;
    CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT OR IGNORE INTO messages_fts_pending(seq) VALUES (new.seq);
    END;
    DROP TRIGGER messages_fts_delete;
    CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, subject, body, sender, recipients, mailbox)
        SELECT 'delete', old.seq, old.subject, CASE WHEN old.sealed THEN '' ELSE old.body END,
            old.sender, old.to_json || ' ' || old.cc_json, hex(old.owner)
        WHERE NOT EXISTS (SELECT 1 FROM messages_fts_pending WHERE seq=old.seq);
        DELETE FROM messages_fts_pending WHERE seq=old.seq;
    END;
    DROP TRIGGER messages_fts_update;
    CREATE TRIGGER messages_fts_update
    AFTER UPDATE OF subject, body, sender, to_json, cc_json, sealed, owner ON messages
    WHEN NOT EXISTS (SELECT 1 FROM messages_fts_pending WHERE seq=old.seq) BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, subject, body, sender, recipients, mailbox)
        VALUES ('delete', old.seq, old.subject, CASE WHEN old.sealed THEN '' ELSE old.body END,
            old.sender, old.to_json || ' ' || old.cc_json, hex(old.owner));
        INSERT INTO messages_fts(rowid, subject, body, sender, recipients, mailbox) VALUES (
            new.seq, new.subject, CASE WHEN new.sealed THEN '' ELSE new.body END,
            new.sender, new.to_json || ' ' || new.cc_json, hex(new.owner));
    END
    """,
    # 11: a copy's own message id is found through `messages` itself, not a link of its own:
    # the copies' unique index now begins (owner, message_id), which answers "which of this
    # mailbox's copies have this id" and keeps one sender's copies of a mailbox side by side
    # (ids sort by time) instead of one index page per sender. `Tx.add_message` links only
    # the ids a copy names (In-Reply-To, References): for a copy that names none, no link
    # row and no write to the links' two b-trees (26 % of a send's WAL frames; measured).
    # A deleted copy whose conversation lives on leaves a link for its id (the delete
    # trigger), so a later reply that names only it still finds the conversation, as
    # before. A row inserted another way (thread 0) first links the ids its insert trigger
    # is about to look up that copies already have, then links and merges as migration 8.
    """
    DROP INDEX messages_once;
    CREATE UNIQUE INDEX messages_once ON messages(owner, message_id, arrival, sender);
    DROP TRIGGER messages_thread_delete;
    CREATE TRIGGER messages_thread_delete AFTER DELETE ON messages BEGIN
        INSERT OR IGNORE INTO thread_links(owner, message_id, thread)
            SELECT old.owner, old.message_id, old.thread WHERE EXISTS (
                SELECT 1 FROM messages WHERE owner=old.owner AND thread=old.thread);
        DELETE FROM thread_links WHERE owner=old.owner AND thread=old.thread AND NOT EXISTS (
            SELECT 1 FROM messages WHERE owner=old.owner AND thread=old.thread);
    END;
    DROP TRIGGER messages_thread_insert;
    CREATE TRIGGER messages_thread_insert AFTER INSERT ON messages WHEN new.thread=0 BEGIN
        INSERT OR IGNORE INTO thread_links(owner, message_id, thread)
            SELECT m.owner, m.message_id, m.thread FROM messages m
            WHERE m.owner=new.owner AND m.thread<>0 AND m.message_id IN ("""
    + _IDS
    + """);"""
    + _THREAD_INSERT
    + """    END
    """,
]

# what the SQLite store runs at the end of every commit batch (migration 10)
FTS_FLUSH = (
    "INSERT INTO messages_fts(rowid, subject, body, sender, recipients, mailbox) "
    "SELECT m.seq, m.subject, CASE WHEN m.sealed THEN '' ELSE m.body END, m.sender, "
    "m.to_json || ' ' || m.cc_json, hex(m.owner) "
    "FROM messages_fts_pending p JOIN messages m ON m.seq=p.seq",
    "DELETE FROM messages_fts_pending",
)
