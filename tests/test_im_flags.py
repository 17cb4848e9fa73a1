"""The IM flags of a mailbox copy on the SAME server (no live session: the mailbox
fallback) are stored and come back in ListHeaders / Retrieve, through the real CLI and
client against a real server; plain mail carries none."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from rich.cells import cell_len

from wsemail.server.store import MIGRATIONS, SqliteStore
from wsemail.tui.mailbox import INSTANT, markers

from conftest import Cli, Running, wait_for

pytestmark = pytest.mark.both_stores


def test_local_offline_im_keeps_its_flag_in_list_and_retrieve(server: Running, cli: Cli) -> None:
    cli("send", "--to", "bob@localhost", "-s", "plain mail", input="not instant\n")
    cli("im", "send", "bob@localhost", "are you there?")
    headers = [
        json.loads(line) for line in cli("list", "--json", user="bob@localhost").stdout.splitlines()
    ]
    assert [(h["subject"], h.get("instant")) for h in headers] == [
        ("Instant message", True),
        ("plain mail", None),
    ]
    im_id, mail_id = headers[0]["id"], headers[1]["id"]
    [message] = [
        json.loads(line)
        for line in cli("retrieve", "--json", im_id, user="bob@localhost").stdout.splitlines()
    ]
    assert message["instant"] is True and message["body"] == "are you there?"
    assert "delete_if_undeliverable" not in message
    assert message["provenance"]["status"] == "local"
    text = cli("retrieve", im_id, user="bob@localhost").stdout
    assert "Sent as: instant message\n" in text
    assert "Sent as:" not in cli("retrieve", mail_id, user="bob@localhost").stdout
    # the library's headers, as the TUI inbox shows them: the IM marker only on the IM
    page = server.client("bob@localhost").list_headers()
    shown = {h.subject: markers(h) for h in page.headers}
    assert shown["Instant message"].endswith(INSTANT)
    assert not shown["plain mail"].endswith(INSTANT)
    assert {cell_len(cells) for cells in shown.values()} == {4}  # the column stays aligned
    # the sender's own copy keeps its flags too
    sent = server.client("alice@localhost").list_headers("sent").headers
    assert [h.instant for h in sent] == [True, False]


def test_delete_if_undeliverable_flag_is_stored_with_the_copy(server: Running) -> None:
    """A sent copy of an IM with "delete if undeliverable" keeps both flags (the recipient
    has a session, so it is pushed, never kept: the flag shows on the sender's side)."""
    from wsemail.client.im import InstantMessenger

    carol = InstantMessenger(server.client("carol@localhost"))
    stream = carol.listen()
    try:
        alice = InstantMessenger(server.client("alice@localhost"))
        alice.send("carol@localhost", "quick one", delete_if_undeliverable=True)
        client = server.client("alice@localhost")
        wait_for(lambda: client.list_headers("sent").headers, "alice's sent copy")
        [header] = client.list_headers("sent").headers
        assert header.instant and header.delete_if_undeliverable
        assert header.as_dict()["delete_if_undeliverable"] is True
        message = client.retrieve(header.id)
        assert message.instant and message.delete_if_undeliverable
    finally:
        stream.close()
    assert server.count("SELECT count(*) FROM messages WHERE owner='carol@localhost'") == 0


def test_a_database_from_before_the_flags_migrates_and_keeps_its_mail(tmp_path: Path) -> None:
    """A mailbox written at schema version 4 opens with both flags off."""
    path = tmp_path / "old" / "mail.db"
    path.parent.mkdir()
    conn = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:4], start=1):
        for statement in filter(str.strip, script.split(";")):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version={number}")
    conn.execute(
        "INSERT INTO messages(id, owner, folder, message_id, sender, to_json, cc_json, "
        "subject, date, size, body) VALUES ('old1', 'bob@localhost', 'inbox', '<o@x>', "
        "'alice@localhost', '[]', '[]', 'from before', '2026-01-01T00:00:00Z', 1, 'x')"
    )
    conn.close()
    store = SqliteStore(path)
    try:
        rows = store.transact_sync(
            lambda tx: tx.list_headers("bob@localhost", "inbox", 10, None, False)
        )
        assert [(h.subject, h.instant, h.delete_if_undeliverable) for _, h in rows] == [
            ("from before", False, False)
        ]
        version = store.transact_sync(
            lambda tx: tx.conn.execute("PRAGMA user_version").fetchone()[0]
        )
        assert version == len(MIGRATIONS)
    finally:
        store.close()
