"""The store side of new-mail events (`wsemail.server.im.newmail.MailFeed`) on a real
SQLite store: which arrivals the trigger records, and that commits are only checked for new
mail while someone here follows it."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsemail.protocol.message import Message, new_message_id
from wsemail.server.im import records
from wsemail.server.im.newmail import MailFeed
from wsemail.server.store import SqliteStore, Tx

# the trigger as the IM plug-in made it before (a temporary b-tree for the folder list at
# every insert); a database made then still has it
OLD_TRIGGER = """
CREATE TRIGGER im_new_mail_arrived AFTER INSERT ON messages
WHEN new.seen = 0 AND new.arrival NOT IN ('sent', 'Drafts', 'Trash')
BEGIN
    INSERT INTO im_new_mail(owner, copy, at)
    VALUES (new.owner, new.id, CAST(strftime('%s', 'now') AS REAL));
END
"""


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = SqliteStore(tmp_path / "s.db")
    store.ensure_schema("im", records.MIGRATIONS)
    yield store
    store.close()


def _arrive(store: SqliteStore, owner: str, folder: str = "inbox", seen: bool = False) -> None:
    message = Message(
        id="",
        message_id=new_message_id("example.org"),
        folder=folder,
        sender="someone@example.org",
        to=[owner],
        cc=[],
        subject="hello",
        date="2026-12-06T00:00:00Z",
        size=5,
        seen=seen,
        body="hello",
    )
    store.transact_sync(lambda tx: tx.add_message(owner, folder, message))


def _events(store: SqliteStore) -> list[str]:
    return [
        r[0]
        for r in store.transact_sync(
            lambda tx: tx.conn.execute("SELECT owner FROM im_new_mail ORDER BY ev").fetchall()
        )
    ]


def _settled(store: SqliteStore) -> None:
    """Until the checks queued before have run (and told whom they found)."""
    store.submit(lambda tx: None).result(10)


def test_an_older_trigger_is_replaced_and_unread_arrivals_still_make_events(
    store: SqliteStore,
) -> None:
    def old(tx: Tx) -> None:
        tx.conn.execute("DROP TRIGGER IF EXISTS im_new_mail_arrived")
        tx.conn.execute(OLD_TRIGGER)

    store.transact_sync(old)
    feed = MailFeed(store, lambda owners: None)
    store.transact_sync(feed.attach)
    text = store.transact_sync(
        lambda tx: tx.conn.execute(
            "SELECT sql FROM sqlite_master WHERE name='im_new_mail_arrived'"
        ).fetchone()[0]
    )
    assert "NOT IN" not in text
    _arrive(store, "a@example.org")  # unread in the inbox: new mail
    _arrive(store, "b@example.org", folder="work")  # filed unread elsewhere: new mail too
    _arrive(store, "c@example.org", seen=True)  # already read: no
    for folder in ("sent", "Drafts", "Trash"):  # never new mail
        _arrive(store, "d@example.org", folder=folder)
    assert _events(store) == ["a@example.org", "b@example.org"]
    store.transact_sync(feed.attach)  # the next start keeps it as it is
    _arrive(store, "e@example.org")
    assert _events(store)[-1] == "e@example.org"


def test_commits_are_checked_only_while_someone_follows_new_mail(store: SqliteStore) -> None:
    woken: list[list[str]] = []
    feed = MailFeed(store, woken.append)
    store.transact_sync(feed.attach)
    following = False
    feed.listening = lambda: following

    for _ in range(3):  # nobody follows: no check, nobody to wake
        _arrive(store, "early@example.org")
        feed.check_soon()
    _settled(store)
    assert woken == []

    # a session starts: it reads what came before from its own cursor; the checks from now
    # on tell only of what arrives after it
    cursor = store.transact_sync(lambda tx: feed.cursor(tx, None))
    assert cursor == len(_events(store))
    following = True
    _arrive(store, "late@example.org")
    feed.check_soon()
    _settled(store)
    assert woken == [["late@example.org"]]

    following = False  # the session ended: arrivals go unchecked again
    _arrive(store, "later@example.org")
    feed.check_soon()
    _settled(store)
    assert woken == [["late@example.org"]]
    assert _events(store)[-1] == "later@example.org"  # recorded all the same
