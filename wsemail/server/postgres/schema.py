"""The core schema of the PostgreSQL store: the same tables and columns as the SQLite
store's (wsemail/server/schema.py) after its migrations, written for PostgreSQL. Applied
in order, once each; `schema_version` counts them. Integers are BIGINT (sizes and quotas
pass 2^31), times DOUBLE PRECISION (seconds since the epoch), bytes BYTEA; flags stay
integers 0/1 so that the records modules' SQL reads the same on both stores.

Differences: `messages.seq` comes from the sequence `messages_seq` (several nodes insert at
once); folder names are unique case-insensitively through an index on lower(name); the
conversation triggers are PL/pgSQL; full-text search is a GIN index over a tsvector of the
searchable text (subject, body unless end-to-end sealed, sender, recipients).
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: everything the SQLite store has after its migration 9
    """
    CREATE TABLE users(
        address TEXT PRIMARY KEY,
        salt BYTEA NOT NULL,
        key BYTEA NOT NULL,
        admin INTEGER NOT NULL DEFAULT 0,
        created TEXT NOT NULL
    );
    CREATE SEQUENCE messages_seq;
    CREATE TABLE messages(
        seq BIGINT PRIMARY KEY DEFAULT nextval('messages_seq'),
        id TEXT NOT NULL UNIQUE,
        owner TEXT NOT NULL,
        folder TEXT NOT NULL,
        message_id TEXT NOT NULL,
        sender TEXT NOT NULL,
        to_json TEXT NOT NULL,
        cc_json TEXT NOT NULL,
        subject TEXT NOT NULL,
        date TEXT NOT NULL,
        size BIGINT NOT NULL,
        seen INTEGER NOT NULL DEFAULT 0,
        body TEXT NOT NULL,
        origin TEXT,
        signed_xml BYTEA,
        instant INTEGER NOT NULL DEFAULT 0,
        delete_if_undeliverable INTEGER NOT NULL DEFAULT 0,
        flagged INTEGER NOT NULL DEFAULT 0,
        answered INTEGER NOT NULL DEFAULT 0,
        has_attachment INTEGER NOT NULL DEFAULT 0,
        sealed INTEGER NOT NULL DEFAULT 0,
        trashed_at DOUBLE PRECISION,
        arrival TEXT NOT NULL DEFAULT '',
        in_reply_to TEXT NOT NULL DEFAULT '',
        references_json TEXT NOT NULL DEFAULT '[]',
        bcc_json TEXT NOT NULL DEFAULT '[]',
        thread BIGINT NOT NULL DEFAULT 0,
        draft TEXT,
        imported DOUBLE PRECISION
    );
    ALTER SEQUENCE messages_seq OWNED BY messages.seq;
    CREATE INDEX messages_mailbox ON messages(owner, folder, seq);
    CREATE UNIQUE INDEX messages_once ON messages(owner, arrival, sender, message_id);
    CREATE INDEX messages_owner ON messages(owner, seq);
    CREATE INDEX messages_trash ON messages(trashed_at) WHERE trashed_at IS NOT NULL;
    CREATE INDEX messages_sealed ON messages(owner, folder) WHERE sealed=1;
    CREATE INDEX messages_date ON messages(owner, date);
    CREATE INDEX messages_unread ON messages(owner, seq) WHERE seen=0;
    CREATE INDEX messages_flagged ON messages(owner, seq) WHERE flagged=1;
    CREATE INDEX messages_attached ON messages(owner, seq) WHERE has_attachment=1;
    CREATE INDEX messages_thread ON messages(owner, thread, seq);
    CREATE INDEX messages_folder_thread ON messages(owner, folder, thread, seq);
    CREATE INDEX messages_text ON messages USING GIN (to_tsvector('simple',
        subject || ' ' || CASE WHEN sealed=1 THEN '' ELSE body END || ' ' || sender || ' '
        || to_json || ' ' || cc_json));
    CREATE TABLE nonces(
        principal TEXT NOT NULL,
        nonce TEXT NOT NULL,
        expires DOUBLE PRECISION NOT NULL,
        PRIMARY KEY(principal, nonce)
    );
    CREATE INDEX nonces_expiry ON nonces(expires);
    CREATE TABLE queue(
        id BIGSERIAL PRIMARY KEY,
        message_id TEXT NOT NULL,
        sender TEXT NOT NULL,
        domain TEXT NOT NULL,
        payload BYTEA NOT NULL,
        recipients_json TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'queued',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt DOUBLE PRECISION NOT NULL,
        lease_until DOUBLE PRECISION,
        created DOUBLE PRECISION NOT NULL,
        last_error TEXT,
        notified INTEGER NOT NULL DEFAULT 0,
        leased_by TEXT
    );
    CREATE INDEX queue_due ON queue(state, next_attempt);
    CREATE TABLE deliveries(
        origin TEXT NOT NULL,
        message_id TEXT NOT NULL,
        recipient TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY(origin, message_id, recipient)
    );
    CREATE INDEX deliveries_age ON deliveries(at);
    CREATE TABLE components(name TEXT PRIMARY KEY, version INTEGER NOT NULL);
    CREATE TABLE certificates(
        digest BYTEA PRIMARY KEY,
        der BYTEA NOT NULL,
        added DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE folders(
        owner TEXT NOT NULL,
        name TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL
    );
    CREATE UNIQUE INDEX folders_name ON folders(owner, lower(name));
    CREATE TABLE thread_links(
        owner TEXT NOT NULL,
        message_id TEXT NOT NULL,
        thread BIGINT NOT NULL,
        PRIMARY KEY(owner, message_id)
    );
    CREATE INDEX thread_links_thread ON thread_links(owner, thread);
    CREATE TABLE auth_failures(
        id BIGSERIAL PRIMARY KEY,
        node TEXT NOT NULL,
        username TEXT NOT NULL,
        peer TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX auth_failures_age ON auth_failures(at);
    CREATE TABLE server_secret(
        one INTEGER PRIMARY KEY CHECK (one = 1),
        secret BYTEA NOT NULL
    );
    CREATE FUNCTION messages_thread_insert() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        keys TEXT[];
        oldest BIGINT;
    BEGIN
        keys := ARRAY(SELECT DISTINCT k FROM unnest(ARRAY[NEW.message_id, NEW.in_reply_to]
            || ARRAY(SELECT json_array_elements_text(NEW.references_json::json))) AS k
            WHERE k <> '');
        SELECT min(thread) INTO oldest FROM thread_links
            WHERE owner=NEW.owner AND message_id=ANY(keys);
        IF oldest IS NULL THEN
            oldest := NEW.seq;
        ELSE
            UPDATE messages SET thread=oldest WHERE owner=NEW.owner AND thread IN (
                SELECT thread FROM thread_links WHERE owner=NEW.owner AND message_id=ANY(keys))
                AND thread<>oldest;
            UPDATE thread_links SET thread=oldest WHERE owner=NEW.owner AND thread IN (
                SELECT thread FROM thread_links WHERE owner=NEW.owner AND message_id=ANY(keys))
                AND thread<>oldest;
        END IF;
        INSERT INTO thread_links(owner, message_id, thread)
            SELECT NEW.owner, k, oldest FROM unnest(keys) AS k ON CONFLICT DO NOTHING;
        UPDATE messages SET thread=oldest WHERE seq=NEW.seq;
        RETURN NULL;
    END $$;
    CREATE TRIGGER messages_thread_insert AFTER INSERT ON messages
        FOR EACH ROW WHEN (NEW.thread=0) EXECUTE FUNCTION messages_thread_insert();
    CREATE FUNCTION messages_thread_delete() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM thread_links WHERE owner=OLD.owner AND thread=OLD.thread AND NOT EXISTS (
            SELECT 1 FROM messages WHERE owner=OLD.owner AND thread=OLD.thread);
        RETURN NULL;
    END $$;
    CREATE TRIGGER messages_thread_delete AFTER DELETE ON messages
        FOR EACH ROW EXECUTE FUNCTION messages_thread_delete();
    """,
]
