"""Search on the server (issue 17): the query language over FTS5, newest first with paging,
encrypted bodies left out and said so; through the real server and the CLI."""

from __future__ import annotations

import json

import pytest

from wsemail.protocol.message import SEALED_MARKER, AttachmentRef, Message

from conftest import Cli, Running

pytestmark = pytest.mark.both_stores  # the server fixture: on SQLite and on PostgreSQL

REF = AttachmentRef(
    "localhost", "http://x/wsemail", "g1", "q3.pdf", 10, "application/pdf", "0" * 64
)


def _put(
    server: Running,
    subject: str,
    body: str,
    date: str,
    *,
    owner: str = "bob@localhost",
    sender: str = "alice@localhost",
    folder: str = "inbox",
    seen: bool = False,
    attachments: list[AttachmentRef] | None = None,
) -> str:
    """One copy written straight into the store (a chosen date), searched through the server."""
    message = Message(
        id="",
        message_id=f"<{abs(hash((subject, date, owner)))}@localhost>",
        folder=folder,
        sender=sender,
        to=[owner],
        cc=[],
        subject=subject,
        date=date,
        size=len(body),
        seen=seen,
        body=body,
        attachments=list(attachments or []),
    )
    store = server.controller.server.store
    public_id, _ = store.transact_sync(lambda tx: tx.add_message(owner, folder, message))
    return public_id


def test_search_words_phrases_operators_and_dates(server: Running) -> None:
    m1 = _put(
        server, "Quarterly budget", "numbers for Q3", "2026-01-10T09:00:00Z", attachments=[REF]
    )
    m2 = _put(
        server,
        "Lunch",
        "the budget for pizza is small, café at noon",
        "2026-02-01T12:00:00Z",
        sender="carol@localhost",
        seen=True,
    )
    m3 = _put(server, "Weekly report", "all fine", "2026-03-05T08:00:00Z", folder="Archive")
    m4 = _put(server, "budget, old", "gone", "2025-12-01T00:00:00Z", folder="Trash")
    _put(server, "budget secret", "alice's own", "2026-02-02T00:00:00Z", owner="alice@localhost")
    bob = server.client("bob@localhost")
    bob.set_flags([m3], flagged=True)

    def ids(query: str) -> list[str]:
        return [h.id for h in bob.search(query).headers]

    assert ids("budget") == [m2, m1]  # newest first; not Trash, not alice's
    assert ids("BUDGET numbers") == [m1]
    assert ids("from:alice") == [m3, m1]
    assert ids("from:carol@localhost budget") == [m2]
    assert ids("to:bob@localhost") == [m3, m2, m1]
    assert ids("subject:budget") == [m1]
    assert ids('"budget for pizza"') == [m2] and ids('"pizza for budget"') == []
    assert ids('subject:"weekly report"') == [m3]
    assert ids("café") == [m2]
    if not server.config.store_url:  # PostgreSQL's index keeps diacritics (README: Search)
        assert ids("cafe") == [m2]  # diacritics folded
    assert ids("has:attachment") == [m1]
    assert ids("is:flagged") == [m3] and ids("is:unread") == [m3, m1] and ids("is:read") == [m2]
    assert ids("in:archive") == [m3] and ids("in:Trash budget") == [m4]
    assert ids("before:2026-02-01") == [m1]  # before is exclusive, after inclusive
    assert ids("after:2026-02-01") == [m3, m2]
    assert ids("budget after:2026-01-15 before:2026-03-01") == [m2]
    assert ids("nothinglikethis") == []
    assert ids(b"bob@localhost".hex()) == []  # the owner token is not a word
    alice = server.client("alice@localhost")
    assert [h.subject for h in alice.search("budget").headers] == ["budget secret"]


def test_addresses_are_found_by_their_words_in_order(server: Running) -> None:
    dave = _put(server, "hello", "hi", "2026-01-01T00:00:00Z", sender="dave@b.test")
    erin = _put(server, "other", "hi", "2026-01-02T00:00:00Z", sender="erin.x@c.test")
    bob = server.client("bob@localhost")

    def ids(query: str) -> list[str]:
        return [h.id for h in bob.search(query).headers]

    assert ids("from:dave") == [dave] and ids("from:b.test") == [dave]
    assert ids("from:dave@b.test hi") == [dave] and ids("from:test") == [erin, dave]
    assert ids("from:erin@c.test") == [] and ids("from:x@c") == [erin]
    assert ids("from:dav") == [] and ids("from:hello") == []  # whole words; the sender only
    assert ids("to:bob") == [erin, dave] and ids("to:dave") == []
    assert ids("from:d%") == []  # no wildcards: % and _ separate words as "." does
    assert ids("hi from:b_test") == [dave]


def test_search_pages_newest_first_with_a_cursor(server: Running) -> None:
    made = [
        _put(server, f"report {n}", "weekly", f"2026-01-{n + 1:02}T00:00:00Z") for n in range(7)
    ]
    bob = server.client("bob@localhost")
    page = bob.search("weekly", limit=3)
    assert [h.id for h in page.headers] == made[:-4:-1] and page.next_cursor
    walked: list[str] = []
    cursor = None
    while True:
        page = bob.search("report", limit=3, cursor=cursor)
        walked += [h.id for h in page.headers]
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    assert walked == made[::-1]
    filters = bob.search("is:unread", limit=4)  # no words: the index is not needed
    assert [h.id for h in filters.headers] == made[:-5:-1] and filters.next_cursor


def test_encrypted_bodies_are_not_searched_and_the_answer_says_so(server: Running) -> None:
    alice, bob = server.client(), server.client("bob@localhost")
    sealed = f"{SEALED_MARKER}><e2e:Cipher>harvest moon</e2e:Cipher></e2e:Sealed>"
    alice.send(["bob@localhost"], "(encrypted message)", sealed)
    alice.send(["bob@localhost"], "plain", "the harvest is in")
    page = bob.search("harvest")
    assert [h.subject for h in page.headers] == ["plain"]
    assert page.encrypted_not_searched == 1
    assert [h.subject for h in bob.search("encrypted").headers] == ["(encrypted message)"]
    assert bob.search("is:unread").encrypted_not_searched == 0  # no words, nothing unsearched


def test_the_index_follows_final_deletes_and_reused_rows(server: Running) -> None:
    bob = server.client("bob@localhost")
    first = _put(server, "alpha", "zebra crossing", "2026-01-01T00:00:00Z")
    bob.delete(first)
    assert bob.search("zebra").headers == []  # in Trash: not searched by default
    assert [h.id for h in bob.search("in:trash zebra").headers] == [first]
    bob.delete(first)  # final
    assert bob.search("in:trash zebra").headers == []
    # SQLite may give the next row the deleted one's rowid: it must not inherit its words
    second = _put(server, "beta", "giraffe", "2026-01-02T00:00:00Z")
    assert bob.search("zebra").headers == [] and bob.search("in:trash zebra").headers == []
    assert [h.id for h in bob.search("giraffe").headers] == [second]


def test_cli_search(cli: Cli) -> None:
    _put(cli.server, "Weekly report", "figures", "2026-03-05T08:00:00Z")
    _put(cli.server, "weekly chores", "report later", "2026-03-06T08:00:00Z")
    bob = "bob@localhost"
    found = cli("search", "subject:weekly report", "--json", user=bob)  # quotes put back
    assert [json.loads(x)["subject"] for x in found.stdout.splitlines()] == ["Weekly report"]
    lines = cli("search", "report", "--limit", "1", user=bob).stdout.splitlines()
    assert len(lines) == 1 and "weekly chores" in lines[0] and "inbox" in lines[0]
