"""Conversations, reply, forward and blind copies (issue 17) on one real server: the
library, the SOAP operations ListThreads / GetThread, the refusals, and the real binary.
Two domains (signatures, relays): test_threads_federation.py."""

from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from wsemail.client import replies
from wsemail.client.mail import Client
from wsemail.protocol.errors import NotFound, RequestInvalid
from wsemail.protocol.soap import element, q
from wsemail.server.store import MIGRATIONS, SqliteStore, statements

from conftest import Cli, Running, wsemail_binary

pytestmark = pytest.mark.both_stores  # the server fixture: on SQLite and on PostgreSQL

ALICE, BOB, CAROL = "alice@localhost", "bob@localhost", "carol@localhost"


def newest(client: Client, folder: str = "inbox") -> str:
    return client.list_headers(folder).headers[0].id


def state(server: Running) -> Any:
    """Everything a refused request must leave as it was."""

    def read(tx: Any) -> Any:
        return (
            tx.conn.execute(
                "SELECT id, owner, folder, seen, answered, thread FROM messages ORDER BY seq"
            ).fetchall(),
            tx.conn.execute("SELECT * FROM thread_links ORDER BY 1, 2").fetchall(),
            tx.conn.execute("SELECT count(*) FROM queue").fetchone(),
        )

    return server.controller.server.store.transact_sync(read)


def test_a_reply_quotes_once_prefixed_and_joins_the_conversation(server: Running) -> None:
    alice, bob = server.client(ALICE), server.client(BOB)
    alice.send([BOB], "Lunch?", "Noon at the usual place?\n\nA.", cc=[CAROL])
    original = newest(bob)
    sent = replies.reply(bob, original, "Yes, see you there.", to_all=True)
    got = alice.retrieve(newest(alice))
    assert got.id != original and got.subject == "Re: Lunch?"
    assert got.to == [ALICE] and got.cc == [CAROL]
    first = bob.retrieve(original, peek=True)
    assert got.in_reply_to == first.message_id and got.references == [first.message_id]
    assert got.body.startswith("Yes, see you there.\n\nOn ")
    assert f", {ALICE} wrote:\n> Noon at the usual place?\n>\n> A.\n" in got.body
    assert first.answered and first.seen
    # a reply to the reply: "Re: " once, References grow oldest first
    replies.reply(alice, got.id, "Good.", to_all=True)
    third = bob.retrieve(newest(bob), peek=True)
    assert third.subject == "Re: Lunch?" and third.to == [BOB] and third.cc == [CAROL]
    assert third.references == [first.message_id, sent.message_id]
    # every mailbox groups what it has of it: bob's inbox (2) and his sent reply
    [conversation] = bob.list_threads().threads
    assert conversation.count == 3 and conversation.unread == 1
    assert [h.subject for h in conversation.headers] == ["Lunch?", "Re: Lunch?", "Re: Lunch?"]
    assert [h.folder for h in conversation.headers] == ["inbox", "sent", "inbox"]
    whole = bob.thread(original, peek=True)
    assert [m.message_id for m in whole] == [first.message_id, sent.message_id, third.message_id]
    # carol was on all three: one conversation of three in her inbox
    [theirs] = server.client(CAROL).list_threads().threads
    assert theirs.count == 3 and theirs.unread == 3
    # a plain reply goes to the sender only (the newest is alice's)
    replies.reply(server.client(CAROL), newest(server.client(CAROL)), "noted")
    last = alice.retrieve(newest(alice))
    assert (last.sender, last.to, last.cc) == (CAROL, [ALICE], [])
    assert newest(bob) == third.id


def test_conversations_link_by_ids_whichever_arrives_first(server: Running) -> None:
    alice, carol, bob = server.client(ALICE), server.client(CAROL), server.client(BOB)
    # carol's answer to a message bob does not have yet
    carol.send(
        [BOB], "Re: plan", "agreed", in_reply_to="<plan@localhost>", references=["<plan@localhost>"]
    )
    alice.send([BOB], "unrelated", "x")
    alice.send([BOB], "plan", "the plan", message_id="<plan@localhost>")
    alice.send([BOB], "budget", "numbers", message_id="<budget@localhost>")
    threads = bob.list_threads().threads
    assert [[h.subject for h in t.headers] for t in threads] == [
        ["budget"],
        ["Re: plan", "plan"],
        ["unrelated"],
    ]
    # one message naming both conversations merges them
    carol.send(
        [BOB],
        "Re: plan and budget",
        "both",
        references=["<plan@localhost>", "<budget@localhost>"],
    )
    threads = bob.list_threads().threads
    assert [t.count for t in threads] == [4, 1]
    # the same subject alone never groups: two strangers' "Hello" stay apart
    alice.send([BOB], "Hello", "1")
    carol.send([BOB], "Hello", "2")
    assert [t.count for t in bob.list_threads(limit=2).threads] == [1, 1]


def test_list_threads_pages_newest_first_and_own_replies_do_not_reorder(
    server: Running,
) -> None:
    alice, bob = server.client(ALICE), server.client(BOB)
    for n in range(5):
        alice.send([BOB], f"topic {n}", "x")
    ids = {h.subject: h.id for h in bob.list_headers().headers}
    replies.reply(bob, ids["topic 1"], "my answer")  # in bob's sent: topic 1 stays put
    seen: list[str] = []
    cursor = None
    while True:
        page = bob.list_threads(limit=2, cursor=cursor)
        seen += [t.headers[0].subject for t in page.threads]
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    assert seen == [f"topic {n}" for n in (4, 3, 2, 1, 0)]
    assert [t.count for t in bob.iter_threads()] == [1, 1, 1, 2, 1]
    assert len(list(bob.iter_threads(unread_only=True))) == 4  # answered: read
    bob.thread(ids["topic 4"])  # reading the conversation marks it seen
    unread = [t.headers[0].subject for t in bob.iter_threads(unread_only=True)]
    assert unread == ["topic 3", "topic 2", "topic 0"]
    # the sent folder lists the conversations bob wrote in
    assert [t.headers[-1].subject for t in bob.iter_threads("sent")] == ["Re: topic 1"]
    # Trash: a conversation is read there, and left out of the others
    bob.delete(ids["topic 0"])
    assert [t.headers[0].subject for t in bob.iter_threads("Trash")] == ["topic 0"]
    assert "topic 0" not in [t.headers[0].subject for t in bob.iter_threads()]
    assert [m.subject for m in bob.thread(ids["topic 0"])] == ["topic 0"]
    # a conversation's message in Trash is left out of it
    bob.delete(ids["topic 1"])
    assert [m.subject for m in bob.thread(newest(bob, "sent"))] == ["Re: topic 1"]


def test_thread_of_another_users_message_is_answered_as_a_missing_one(server: Running) -> None:
    alice = server.client(ALICE)
    alice.send([CAROL], "carol's", "private")
    carols = newest(server.client(CAROL))
    bob = server.client(BOB)
    before = state(server)
    with pytest.raises(NotFound) as other:
        bob.thread(carols)
    with pytest.raises(NotFound) as missing:
        bob.thread("NoSuchMessage1")
    assert str(other.value) == str(missing.value) == "no such message"
    with pytest.raises(NotFound) as replied:
        replies.reply(bob, carols, "mine now?")
    assert str(replied.value) == "no such message"
    assert state(server) == before  # carol's message was not marked seen or answered


def _send(client: Client, *extra: tuple[str, str]) -> None:
    op = etree.Element(q("Send"))
    msg = element(op, "Message")
    element(msg, "To", BOB)
    element(msg, "Subject", "threaded")
    element(msg, "Body", "x")
    for tag, value in extra:
        element(msg, tag, value)
    client.call(op)


BAD_THREAD_FIELDS = [
    (("Reference", "not-an-id"),),
    (("Reference", "<a@b.test> <c@d.test>"),),  # RFC 5322 style: one id per element here
    (("Reference", "<a@b.test>\n"),),
    (("Reference", ""),),
    (("InReplyTo", "a@b.test"),),
    (("InReplyTo", "<a@b.test>"), ("InReplyTo", "<c@b.test>")),
    (("Reference", "<a@b.test>"), ("Reference", "<a@b.test>")),
    tuple(("Reference", f"<r{n}@b.test>") for n in range(51)),
    (("Reference", "<" + "x" * 300 + "@b.test>"),),
]


@pytest.mark.parametrize("fields", BAD_THREAD_FIELDS)
def test_malformed_references_are_refused_and_nothing_is_stored(
    server: Running, fields: tuple[tuple[str, str], ...]
) -> None:
    alice = server.client(ALICE)
    before = state(server)
    with pytest.raises(RequestInvalid) as caught:
        _send(alice, *fields)
    assert type(caught.value) is RequestInvalid
    assert "InReplyTo" in str(caught.value) or "References" in str(caught.value)
    assert state(server) == before
    _send(alice, ("InReplyTo", "<a@b.test>"), ("Reference", "<a@b.test>"))  # still serving
    assert server.client(BOB).list_threads().threads[0].count == 1


@pytest.mark.parametrize(
    ("operation", "fields"),
    [
        ("ListThreads", (("Limit", "0"),)),
        ("ListThreads", (("Limit", "101"),)),
        ("ListThreads", (("Cursor", "-1"),)),
        ("ListThreads", (("UnreadOnly", "maybe"),)),
        ("ListThreads", (("Folder", "a/b"),)),
        ("GetThread", ()),
        ("GetThread", (("Id", "x" * 65),)),
        ("GetThread", (("Id", "{id}"), ("Limit", "201"))),
        ("GetThread", (("Id", "{id}"), ("Cursor", "1e3"))),
        ("GetThread", (("Id", "{id}"), ("Peek", "yes"))),
    ],
)
def test_thread_operations_refuse_bad_arguments(
    server: Running, operation: str, fields: tuple[tuple[str, str], ...]
) -> None:
    server.client(ALICE).send([BOB], "one", "x")
    bob = server.client(BOB)
    own = newest(bob)
    before = state(server)
    op = etree.Element(q(operation))
    for tag, value in fields:
        element(op, tag, value.format(id=own))
    with pytest.raises(RequestInvalid):
        bob.call(op)
    assert state(server) == before
    assert bob.list_threads().threads[0].count == 1  # still serving


def test_list_threads_pages_list_each_conversation_once(server: Running) -> None:
    alice, carol, bob = server.client(ALICE), server.client(CAROL), server.client(BOB)
    # interleaved: a, b, a, c, b, a (newest last); by newest copy: a, b, c
    order = ["a", "b", "a", "c", "b", "a"]
    for n, name in enumerate(order):
        sender = alice if n % 2 else carol
        root = f"<{name}@localhost>"
        if n == order.index(name):
            sender.send([BOB], name, "x", message_id=root)
        else:
            sender.send([BOB], f"Re: {name}", "x", in_reply_to=root, references=[root])
    for size in (1, 2):
        listed, cursor = [], None
        while True:
            page = bob.list_threads(limit=size, cursor=cursor)
            listed += [(t.headers[0].subject, t.count) for t in page.threads]
            cursor = page.next_cursor
            if not cursor:
                break
        assert listed == [("a", 3), ("b", 2), ("c", 1)], size


def test_bcc_recipients_get_it_and_nobody_else_sees_them(server: Running) -> None:
    alice = server.client(ALICE)
    alice.send([BOB], "quiet", "x", bcc=[CAROL, BOB])  # bob on To is not a blind copy too
    bobs = server.client(BOB).retrieve(newest(server.client(BOB)))
    carols = server.client(CAROL).retrieve(newest(server.client(CAROL)))
    assert bobs.to == carols.to == [BOB] and bobs.bcc == carols.bcc == []
    own = alice.retrieve(newest(alice, "sent"))
    assert own.bcc == [CAROL] and own.as_dict()["bcc"] == [CAROL]
    stored = server.count(
        "SELECT count(*) FROM messages WHERE bcc_json LIKE '%carol%' AND owner<>'alice@localhost'"
    )
    assert stored == 0
    # Bcc alone is no message: a recipient on To or Cc is needed
    with pytest.raises(RequestInvalid):
        alice.send([], "only blind", "x", bcc=[BOB])


def test_forward_keeps_attachments_and_prefixes_once(server: Running, tmp_path: Path) -> None:
    from wsemail.client.attachments import Attachments

    alice, bob, carol = server.client(ALICE), server.client(BOB), server.client(CAROL)
    path = tmp_path / "minutes.txt"
    path.write_bytes(b"the minutes\n" * 1000)
    guid = Attachments(alice).upload(path).guid
    alice.send([BOB], "Fwd: minutes", "see attached", attachments=[guid])
    original = bob.retrieve(newest(bob), peek=True)
    replies.forward(bob, original.id, [CAROL], "FYI", bcc=[ALICE])
    got = carol.retrieve(newest(carol))
    assert got.subject == "Fwd: minutes" and got.bcc == []
    assert got.body.startswith("FYI\n\n---------- Forwarded message ----------\n")
    assert f"From: {ALICE}\n" in got.body and got.body.endswith("see attached")
    assert got.references == [original.message_id] and got.in_reply_to is None
    [ref] = Attachments(carol).list(got.id).refs  # re-uploaded: carol may fetch it
    [first] = Attachments(bob).list(original.id).refs
    assert ref.guid != guid == first.guid and ref.sha256 == first.sha256
    assert ref.name == "minutes.txt"
    fetched = Attachments(carol).fetch(ref, tmp_path / "got.txt")
    assert fetched.read_bytes() == path.read_bytes()
    assert server.client(ALICE).list_headers().headers[0].subject == "Fwd: minutes"  # the Bcc


def test_a_version_7_store_gets_conversations_for_its_mail(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:7], start=1):
        for statement in statements(script):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version={number}")
    for public_id, owner, folder, message_id in (
        ("s1", ALICE, "sent", "<m1@localhost>"),
        ("i1", ALICE, "inbox", "<m1@localhost>"),  # sent to herself: one conversation
        ("b1", BOB, "inbox", "<m1@localhost>"),
        ("b2", BOB, "inbox", "<m2@localhost>"),
    ):
        conn.execute(
            "INSERT INTO messages(id, owner, folder, arrival, message_id, sender, to_json, "
            "cc_json, subject, date, size, body) VALUES (?, ?, ?, ?, ?, 'alice@localhost', "
            "'[]', '[]', 'from before', '2026-01-01T00:00:00Z', 1, 'x')",
            (public_id, owner, folder, folder, message_id),
        )
    conn.close()
    store = SqliteStore(path)
    try:
        rows = store.transact_sync(
            lambda tx: tx.conn.execute(
                "SELECT id, thread, in_reply_to, references_json, bcc_json FROM messages "
                "ORDER BY seq"
            ).fetchall()
        )
        assert rows == [
            ("s1", 1, "", "[]", "[]"),
            ("i1", 1, "", "[]", "[]"),
            ("b1", 3, "", "[]", "[]"),
            ("b2", 4, "", "[]", "[]"),
        ]
        links = store.transact_sync(
            lambda tx: tx.conn.execute("SELECT * FROM thread_links ORDER BY 1, 2").fetchall()
        )
        assert links == [
            (ALICE, "<m1@localhost>", 1),
            (BOB, "<m1@localhost>", 3),
            (BOB, "<m2@localhost>", 4),
        ]
    finally:
        store.close()


def test_rows_stored_another_way_are_linked_by_the_trigger(server: Running) -> None:
    """An importer writing rows itself (thread left 0): the insert trigger links them as
    Tx.add_message does, merges included."""

    def insert(tx: Any, public_id: str, message_id: str, refs: list[str]) -> None:
        tx.conn.execute(
            "INSERT INTO messages(id, owner, folder, arrival, message_id, sender, to_json, "
            "cc_json, subject, date, size, body, in_reply_to, references_json) VALUES "
            "(?, 'bob@localhost', 'inbox', 'inbox', ?, 'x@y.test', '[]', '[]', ?, "
            "'2026-01-01T00:00:00Z', 1, 'x', ?, ?)",
            (public_id, message_id, public_id, refs[-1] if refs else "", json.dumps(refs)),
        )

    store = server.controller.server.store
    store.transact_sync(lambda tx: insert(tx, "r1", "<r1@y.test>", ["<a@y.test>"]))
    store.transact_sync(lambda tx: insert(tx, "b1", "<b@y.test>", []))
    server.client(ALICE).send([BOB], "a", "x", message_id="<a@y.test>")  # the usual way
    bob = server.client(BOB)
    assert sorted(t.count for t in bob.list_threads().threads) == [1, 2]
    store.transact_sync(lambda tx: insert(tx, "m1", "<m@y.test>", ["<a@y.test>", "<b@y.test>"]))
    [conversation] = bob.list_threads().threads
    assert conversation.count == 4
    assert server.count("SELECT count(*) FROM messages WHERE thread=0") == 0


def test_an_exported_conversation_is_one_again_when_imported(
    server: Running, tmp_path: Path
) -> None:
    from wsemail.client import archive

    alice, bob, carol = server.client(ALICE), server.client(BOB), server.client(CAROL)
    alice.send([BOB], "Plan", "Shall we?")
    replies.reply(bob, newest(bob), "We shall.")
    replies.reply(alice, newest(alice), "Good.")
    archive.export(bob, tmp_path / "bob.mbox", "mbox", "inbox")
    items = archive.read_items(tmp_path / "bob.mbox", "mbox")
    archive.import_items(carol, "Archive", list(reversed(items)))  # newest first, even
    [conversation] = carol.list_threads("Archive").threads
    assert [h.subject for h in conversation.headers] == ["Re: Plan", "Plan"]  # import order
    whole = carol.thread(conversation.headers[0].id)
    assert whole[0].references[0] == whole[1].message_id  # "Re: Plan" names "Plan"


def test_the_links_of_a_conversation_go_with_its_last_message(server: Running) -> None:
    alice, bob = server.client(ALICE), server.client(BOB)
    alice.send([BOB], "short-lived", "x")
    replies.reply(bob, newest(bob), "ok")
    links = "SELECT count(*) FROM thread_links WHERE owner='bob@localhost'"
    # the id the reply names (the original's); on PostgreSQL each copy's own id too (on
    # SQLite a copy's own id is found among the copies themselves: schema migration 11)
    own = 1 if server.config.store_url else 0
    assert server.count(links) == 1 + own
    for message_id in (newest(bob), newest(bob, "sent")):
        bob.delete(message_id)
    assert server.count(links) == 1 + own  # in Trash, still his
    for header in bob.list_headers("Trash").headers:
        bob.delete(header.id)
    assert server.count(links) == 0


def test_a_reply_naming_only_a_deleted_message_still_joins_its_conversation(
    server: Running,
) -> None:
    # Bob's reply goes from his mailbox for good while the conversation lives on there
    # (Alice's original): a later message that names only the deleted reply's id
    # (In-Reply-To, no References, as some mail programs send it) still joins it. On
    # SQLite a copy's own id has no link while the copy is there: its deletion leaves one.
    alice, bob = server.client(ALICE), server.client(BOB)
    alice.send([BOB], "Plan", "Shall we?")
    replies.reply(bob, newest(bob), "We shall.")
    sent = newest(bob, "sent")
    reply_id = bob.retrieve(sent).message_id
    bob.delete(sent)  # to Trash
    [trashed] = bob.list_headers("Trash").headers
    bob.delete(trashed.id)  # and gone
    alice.send([BOB], "Late", "See you.", in_reply_to=reply_id)
    assert [m.subject for m in bob.thread(newest(bob))] == ["Plan", "Late"]


def test_an_imported_reply_joins_the_conversation_of_the_copy_it_names(server: Running) -> None:
    # the import path (rows inserted with thread 0, numbered by the insert trigger) finds
    # a copy by its own id, which on SQLite has no link of its own
    from email.message import EmailMessage

    from wsemail.client import archive

    alice, bob = server.client(ALICE), server.client(BOB)
    alice.send([BOB], "Plan", "Shall we?")
    original_id = bob.retrieve(newest(bob)).message_id
    mime = EmailMessage()
    mime["From"], mime["To"], mime["Subject"] = CAROL, BOB, "Re: Plan (from the archive)"
    mime["Message-ID"], mime["In-Reply-To"] = "<archived-1@example.org>", original_id
    mime["Date"] = "Sun, 06 Dec 2026 07:00:00 +0000"
    mime.set_content("I was there too.")
    item = archive.Item(mime.as_bytes(), True, False, False, "archived")
    assert archive.import_items(bob, "Archive", [item]).imported == 1
    [imported] = bob.list_headers("Archive").headers
    subjects = [m.subject for m in bob.thread(imported.id)]
    assert subjects == ["Plan", "Re: Plan (from the archive)"]


# the command line -----------------------------------------------------------------------
def _editor(tmp_path: Path, text: str) -> str:
    """An $EDITOR that writes `text` above what it was given."""
    script = tmp_path / "editor.sh"
    script.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "{text}" | cat - "$1" > "$1.new" && mv "$1.new" "$1"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def _lunch(cli: Cli) -> tuple[str, str]:
    """alice sends bob "Lunch?" with a blind copy to carol: (its MessageId, bob's id)."""
    sent = cli("send", "--to", BOB, "--bcc", CAROL, "-s", "Lunch?", "--body", "Noon?", "--json")
    return json.loads(sent.stdout)["message_id"], newest(cli.server.client(BOB))


def test_cli_reply_from_body_stdin_or_editor_then_list_threads(cli: Cli, tmp_path: Path) -> None:
    _, original = _lunch(cli)
    assert cli("reply", original, "--body", "Yes.", user=BOB).stdout.strip()
    cli("reply", original, "--all", user=BOB, input="And I bring dessert.\n")
    # --edit runs $EDITOR on the quote; what it leaves is the whole body
    edited = _run_with_editor(cli, _editor(tmp_path, "Written in the editor."), original)
    assert edited.returncode == 0, edited.stderr
    listed = cli("list", "--threads").stdout.splitlines()
    assert listed[0] == "== Lunch?  (4 messages, 3 unread)" and len(listed) == 5
    assert all(line.startswith("  ") for line in listed[1:])
    [conversation] = [json.loads(x) for x in cli("list", "--threads", "--json").stdout.splitlines()]
    assert conversation["count"] == 4 and conversation["subject"] == "Lunch?"
    assert [m["subject"] for m in conversation["messages"]] == ["Lunch?"] + ["Re: Lunch?"] * 3
    alice = cli.server.client(ALICE)
    bodies = [m.body for m in alice.thread(newest(alice), peek=True)]
    assert bodies[1].startswith("Yes.\n\nOn ") and bodies[1].endswith("wrote:\n> Noon?\n")
    assert bodies[2].startswith("And I bring dessert.\n\nOn ")
    assert bodies[3].startswith("Written in the editor.\n\n\nOn ")
    answered = json.loads(cli("retrieve", "--peek", "--json", original, user=BOB).stdout)
    assert answered["answered"] is True and answered["seen"] is True


def test_cli_thread_forward_and_bcc(cli: Cli) -> None:
    message_id, original = _lunch(cli)
    replies.reply(cli.server.client(BOB), original, "Yes.")
    shown = cli("thread", newest(cli.server.client(ALICE))).stdout
    assert shown.count("Subject: Re: Lunch?") == 1 and "Bcc: carol@localhost" in shown
    assert "> Noon?" in shown and "Provenance: local" in shown
    lines = [json.loads(x) for x in cli("thread", "--json", original, user=BOB).stdout.splitlines()]
    assert lines[0]["message_id"] == message_id and len(lines) == 2
    assert all(m["provenance"]["status"] == "local" for m in lines)
    assert all("bcc" not in m for m in lines)  # bob never learns of carol's blind copy
    # forward with --to, its text on stdin
    cli("forward", original, "--to", CAROL, user=BOB, input="for you\n")
    carols = [json.loads(x) for x in cli("list", "--json", user=CAROL).stdout.splitlines()]
    assert [m["subject"] for m in carols] == ["Fwd: Lunch?", "Lunch?"]


def _run_with_editor(cli: Cli, editor: str, original: str) -> Any:
    env = {**cli.env(BOB), "EDITOR": editor, "VISUAL": editor}
    return subprocess.run(
        [wsemail_binary(), "reply", original, "--edit"],
        input="",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_cli_refusals_are_one_line(cli: Cli) -> None:
    cli.server.client(ALICE).send([CAROL], "carol's", "x")
    carols = newest(cli.server.client(CAROL))
    before = state(cli.server)
    for args in (
        ("reply", carols, "--body", "hi"),
        ("reply", "NoSuchMessage1", "--body", "hi"),
        ("thread", carols),
        ("forward", carols, "--to", BOB),
    ):
        result = cli(*args, check=False)
        assert (result.returncode, result.stderr) == (4, "wsemail: no such message\n"), args
    mine = newest(cli.server.client(ALICE), "sent")
    result = cli("reply", mine, check=False)  # nothing to say (empty stdin)
    assert result.returncode == 1 and result.stderr.startswith("wsemail: nothing to say")
    assert result.stderr.count("\n") == 1
    result = cli("forward", mine, check=False)
    assert (
        result.returncode == 1
        and result.stderr == "wsemail: no recipient: give --to (repeatable)\n"
    )
    result = cli("send", "--to", BOB, "--bcc", "not an address", "--body", "x", check=False)
    assert result.returncode == 4 and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert state(cli.server) == before
