"""Export to mbox / maildir and import from them (issue 17), through the real server and the
`wsemail` binary: a round trip keeps subjects, bodies and flags; imported mail is marked
imported and never shown as signed; bad input is one line, a non-zero exit, nothing stored."""

from __future__ import annotations

import email.policy
import mailbox
from email.header import decode_header, make_header
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from wsemail.client import archive
from wsemail.protocol.errors import MessageTooLarge, QuotaExceeded, RemoteFault

from conftest import Cli, Running, start_server

pytestmark = pytest.mark.both_stores  # the server fixture: on SQLite and on PostgreSQL

BODIES = {
    "plain": "hello\n",
    "Grüße – ☃ unicode": "no line end at the end",
    "mbox traps": "From the start of a line\n>From quoted\n\n\n",
}


def _mailbox_of_alice(server: Running) -> dict[str, tuple[bool, bool, bool]]:
    """Three messages from bob in alice's inbox with flags; one sent by alice. Returns the
    flags (seen, flagged, answered) by subject."""
    bob, alice = server.client("bob@localhost"), server.client()
    for subject, body in BODIES.items():
        bob.send(["alice@localhost"], subject, body, cc=["carol@localhost"])
    alice.send(["bob@localhost"], "from alice", "sent by alice\n")
    ids = {h.subject: h.id for h in alice.list_headers().headers}
    alice.set_flags([ids["plain"]], seen=True)
    alice.set_flags([ids["mbox traps"]], flagged=True, answered=True)
    return {"plain": (True, False, False), "Grüße – ☃ unicode": (False, False, False)} | {
        "mbox traps": (False, True, True)
    }


def _folder(server: Running, user: str, folder: str) -> dict[str, Any]:
    client = server.client(user)
    found = {}
    for header in client.iter_headers(folder):
        message = client.retrieve(header.id, peek=True)
        proof, _ = client.verify(message)
        found[header.subject] = (
            message.sender,
            message.to,
            message.cc,
            message.body,
            (header.seen, header.flagged, header.answered),
            proof.status,
        )
    return found


def test_mbox_round_trip_into_another_user(server: Running, cli: Cli, tmp_path: Path) -> None:
    flags = _mailbox_of_alice(server)
    path = tmp_path / "alice.mbox"
    out = cli("export", "--mbox", str(path), "--folder", "inbox").stdout
    assert "exported 3 message(s) from 1 folder(s)" in out
    box = mailbox.mbox(path)
    exported = {str(make_header(decode_header(m["Subject"]))): m for m in box}
    box.close()
    assert sorted(exported) == sorted(BODIES)
    assert all(m["X-Wsemail-Folder"] == "inbox" for m in exported.values())
    assert exported["mbox traps"].get_flags() == "FA" and exported["plain"].get_flags() == "RO"

    events = "SELECT count(*) FROM im_new_mail WHERE owner='carol@localhost'"
    arrived = server.count(events)
    out = cli("import", "--mbox", str(path), "--folder", "Old", user="carol@localhost").stdout
    assert server.count(events) == arrived  # imported mail is not new mail: no bell, no hook
    assert out.strip() == "imported 3 message(s) into Old"
    imported = _folder(server, "carol@localhost", "Old")
    assert set(imported) == set(BODIES)
    for subject, body in BODIES.items():
        sender, to, cc, got, got_flags, status = imported[subject]
        assert (sender, to, cc) == ("bob@localhost", ["alice@localhost"], ["carol@localhost"])
        assert got == body and got_flags == flags[subject] and status == "imported"
    again = cli("import", "--mbox", str(path), "--folder", "old", user="carol@localhost").stdout
    assert "imported 0 message(s) into Old (3 imported before, skipped)" in again
    assert server.count("SELECT count(*) FROM messages WHERE owner='carol@localhost'") == 6
    shown = cli(
        "retrieve",
        "--peek",
        server.client("carol@localhost").list_headers("Old").headers[0].id,
        user="carol@localhost",
    ).stdout
    assert "Provenance: imported, NOT signed by anyone" in shown


def test_maildir_round_trip_of_every_folder(server: Running, cli: Cli, tmp_path: Path) -> None:
    flags = _mailbox_of_alice(server)
    root = tmp_path / "alice.maildir"
    cli("export", "--maildir", str(root))
    assert (root / "cur").is_dir() and (root / ".sent" / "cur").is_dir()
    assert {p.name for p in root.iterdir()} >= {"cur", "new", "tmp", ".sent", ".Trash"}
    result = cli("import", "--maildir", str(root), "--folder", "From alice", user="bob@localhost")
    assert "imported 3 message(s) into From alice" in result.stdout
    assert "sub-maildirs not imported" in result.stderr and "sent" in result.stderr
    imported = _folder(server, "bob@localhost", "From alice")
    assert {s: v[4] for s, v in imported.items()} == flags
    assert {s: v[3] for s, v in imported.items()} == BODIES
    cli("import", "--maildir", str(root / ".sent"), "--folder", "Archive", user="bob@localhost")
    (sent,) = _folder(server, "bob@localhost", "Archive").values()
    assert sent[0] == "alice@localhost" and sent[3] == "sent by alice\n" and sent[5] == "imported"


def _mime(sender: str, subject: str, message_id: str, *, html: str, attach: bool) -> bytes:
    mime = EmailMessage(policy=email.policy.default)
    mime["From"] = sender
    mime["To"] = "bob@localhost"
    mime["Subject"] = subject
    mime["Message-ID"] = message_id
    mime["X-Wsemail-Provenance"] = "signed by localhost ✓"  # a claim; never believed
    mime.set_content(html, subtype="html")
    if attach:
        mime.add_attachment(
            b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename="a.pdf"
        )
    return mime.as_bytes()


def test_imported_mail_is_never_taken_for_signed_or_delivered_mail(
    server: Running, tmp_path: Path
) -> None:
    bob = server.client("bob@localhost")
    raw = _mime(
        "alice@localhost",
        "looks local",
        "<same-1@localhost>",
        html='<p>Pay <a href="https://evil.example/x">your bank</a></p>',
        attach=True,
    )
    item = archive.Item(raw, False, False, False, "crafted")
    done = archive.import_items(bob, "Crafted", [item])
    assert (done.imported, done.duplicates) == (1, 0)
    (header,) = bob.list_headers("Crafted").headers
    message = bob.retrieve(header.id)
    proof, _ = bob.verify(message)
    assert proof.status == "imported" and "signed by localhost" not in str(proof)
    assert str(proof).startswith("imported, NOT signed by anyone")
    assert "1 attachment(s) not kept (a.pdf)" in proof.reason
    assert "https://evil.example/x" in message.body and "<a" not in message.body
    assert [h.id for h in bob.search("bank").headers] == [header.id]
    assert server.client().search("bank").headers == []  # the owner's only
    assert server.count("SELECT count(*) FROM queue") == 0
    # the real message with the same Message-ID still arrives, signed as usual
    server.client().send(["bob@localhost"], "the real one", "hi", message_id="<same-1@localhost>")
    (real,) = bob.list_headers().headers
    assert real.subject == "the real one"
    assert bob.verify(bob.retrieve(real.id))[0].status == "local"
    # into another folder it is imported again; into the same one, once
    assert archive.import_items(bob, "Other", [item]).imported == 1
    assert archive.import_items(bob, "crafted", [item, item]).duplicates == 2


def _stored(server: Running) -> Any:
    return server.controller.server.store.transact_sync(
        lambda tx: (
            tx.conn.execute("SELECT id, owner, folder FROM messages ORDER BY seq").fetchall(),
            tx.conn.execute("SELECT owner, name FROM folders ORDER BY 1, 2").fetchall(),
        )
    )


def _all_refused(server: Running, cli: Cli, cases: list[tuple[list[str], int, str]]) -> None:
    before = _stored(server)
    for args, code, words in cases:
        result = cli(*args, check=False)
        assert result.returncode == code, (args, result.stderr)
        assert words in result.stderr and "Traceback" not in result.stderr, result.stderr
        if code != 2:  # a command-line mistake also prints the usage line
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert _stored(server) == before


def test_files_that_are_not_mail_are_refused(server: Running, cli: Cli, tmp_path: Path) -> None:
    _mailbox_of_alice(server)
    text = tmp_path / "notes.txt"
    text.write_text("Dear diary,\nthis is not mail.\n")
    plain_dir = tmp_path / "plain-dir"
    plain_dir.mkdir()
    _all_refused(
        server,
        cli,
        [
            (["import", "--mbox", str(text), "--folder", "X"], 1, "not an mbox file"),
            (["import", "--mbox", str(tmp_path / "missing"), "--folder", "X"], 1, "no such file"),
            (
                ["import", "--maildir", str(tmp_path / "none"), "--folder", "X"],
                1,
                "no such maildir",
            ),
            (["import", "--maildir", str(plain_dir), "--folder", "X"], 1, "not a maildir"),
            (["export", "--mbox", str(text)], 1, "exists"),
        ],
    )


def test_bad_folders_and_options_are_refused(server: Running, cli: Cli, tmp_path: Path) -> None:
    _mailbox_of_alice(server)
    good = tmp_path / "good.mbox"
    cli("export", "--mbox", str(good), "--folder", "inbox")
    _all_refused(
        server,
        cli,
        [
            (["import", "--mbox", str(good), "--folder", "a/b"], 2, "must not contain /"),
            (["import", "--mbox", str(good), "--folder", ".."], 2, "must not be . or contain .."),
            (["import", "--mbox", str(good), "--folder", "Drafts"], 4, "cannot be imported into"),
            (
                ["import", "--mbox", str(good), "--maildir", str(tmp_path), "--folder", "X"],
                2,
                "one of",
            ),
            (
                ["export", "--maildir", str(tmp_path / "m"), "--folder", "nope"],
                4,
                "no folder named",
            ),
        ],
    )
    assert not (tmp_path / "m").exists()


def test_import_limits_refuse_the_whole_request(tmp_path: Path, store_url: str) -> None:
    running = start_server(tmp_path / "s", store_url=store_url, quota_per_user_bytes=3000)
    try:
        bob = running.client("bob@localhost")
        items = [
            archive.Item(
                _mime(
                    "x@y.test",
                    f"n{i}",
                    f"<q{i}@y.test>",
                    html="<p>" + "w " * 600 + "</p>",
                    attach=False,
                ),
                False,
                False,
                False,
                f"n{i}",
            )
            for i in range(3)
        ]
        before = _stored(running)
        with pytest.raises(QuotaExceeded):
            archive.import_batch(bob, "Big", items)
        big = archive.Item(
            b"Subject: big\n\n" + b"x" * ((2 << 20) + 10), False, False, False, "big"
        )
        with pytest.raises(MessageTooLarge):
            archive.import_batch(bob, "Big", [big])
        with pytest.raises(RemoteFault):
            archive.import_batch(bob, "Trash", items[:1])
        assert _stored(running) == before
        assert archive.import_batch(bob, "Big", items[:1]).imported == 1
    finally:
        running.stop()
