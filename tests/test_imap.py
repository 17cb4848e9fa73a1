"""IMAP for existing mail programs (issue 19): real clients nobody here wrote — Python's
imaplib and mbsync (isync) syncing a Maildir — against real servers on loopback: sync,
read, flag, move, delete, append, IDLE woken by delivery, UIDVALIDITY/UIDNEXT that never go
back, TLS (implicit and STARTTLS), provenance and attachments shown honestly, and the same
failed-login limits as the SOAP side."""

from __future__ import annotations

import email
import email.policy
import imaplib
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_federation import Federation, start_domain
from test_federation_processes import free_port

from wsemail.client.attachments import Attachments
from wsemail.client.drafts import Drafts
from wsemail.pki import create_root, write_crl
from wsemail.protocol.drafts import SavedDraft
from wsemail.protocol.errors import RateLimited
from wsemail.protocol.message import SEALED_MARKER
from wsemail.server.accounts import set_user
from wsemail.server.config import DEFAULT_PLUGINS
from wsemail.server.imap import Imap
from wsemail.server.pipeline import PluginSpec
from wsemail.server.store import SqliteStore

from conftest import PASSWORD, Running, start_server, wait_for, wsemail_binary


def with_imap(**options: Any) -> list[PluginSpec]:
    return [*DEFAULT_PLUGINS, PluginSpec("imap", 30, {"port": 0, **options})]


def imap_plugin(running: Running) -> Imap:
    for entry in running.controller.server.pipeline.listing():
        if isinstance(entry.plugin, Imap):
            return entry.plugin
    raise AssertionError("imap is not loaded")


def connect(running: Running) -> imaplib.IMAP4:
    host, port = imap_plugin(running).address
    return imaplib.IMAP4(host, port, timeout=10)


def fetched(data: list[Any]) -> bytes:
    """The literal of a one-message FETCH answer."""
    for part in data:
        if isinstance(part, tuple):
            return bytes(part[1])
    raise AssertionError(f"no literal in {data!r}")


@pytest.fixture
def imap_server(tmp_path: Path, store_url: str) -> Iterator[Running]:
    """SQLite; also PostgreSQL for the tests marked both_stores."""
    running = start_server(
        tmp_path / "server", store_url=store_url, plugins=with_imap(idle_poll=60.0)
    )
    yield running
    running.stop()


def folder_of(running: Running, subject: str) -> list[str]:
    rows = running.controller.server.store.transact_sync(
        lambda tx: tx.conn.execute(
            "SELECT folder FROM messages WHERE owner='bob@localhost' AND subject=? ORDER BY seq",
            (subject,),
        ).fetchall()
    )
    return [r[0] for r in rows]


@pytest.mark.both_stores
def test_imaplib_syncs_reads_flags_moves_and_deletes(imap_server: Running) -> None:
    alice = imap_server.client("alice@localhost")
    for n in range(3):
        alice.send(["bob@localhost"], f"note {n}", f"body {n}\nsecond line")
    with connect(imap_server) as imap:
        assert "AUTH=PLAIN" in imap.capabilities and "IDLE" in imap.capabilities
        imap.login("bob@localhost", PASSWORD)
        status, listing = imap.list()
        names = [line.decode() for line in listing if isinstance(line, bytes)]
        assert any(n.endswith('"INBOX"') for n in names)
        assert any("\\Trash" in n and n.endswith('"Trash"') for n in names)
        assert any("\\Sent" in n for n in names)
        status, count = imap.select("INBOX")
        assert status == "OK" and count == [b"3"]
        validity = imap.untagged_responses["UIDVALIDITY"][0]
        status, data = imap.uid("FETCH", "1:*", "(FLAGS ENVELOPE RFC822.SIZE INTERNALDATE)")
        lines = [d for d in data if isinstance(d, bytes)]
        assert len(lines) == 3 and b'"note 0"' in lines[0] and b"UID 1 " in lines[0]
        assert b'((NIL NIL "alice" "localhost"))' in lines[0]
        size = int(re.search(rb"RFC822.SIZE (\d+)", lines[0]).group(1))  # type: ignore[union-attr]

        # reading: PEEK leaves \Seen alone; BODY[] sets it, in the wsemail store too
        status, data = imap.uid("FETCH", "1", "(BODY.PEEK[])")
        whole = fetched(data)
        assert len(whole) == size
        assert b"Subject: note 0\r\n" in whole and b"body 0\r\nsecond line" in whole
        assert b"X-WSEmail-Provenance: local localhost" in whole
        assert (
            imap_server.count(
                "SELECT count(*) FROM messages WHERE owner='bob@localhost' AND seen=1"
            )
            == 0
        )
        status, data = imap.uid("FETCH", "1", "(BODY[TEXT])")
        assert fetched(data) == b"body 0\r\nsecond line\r\n"
        assert (
            imap_server.count(
                "SELECT count(*) FROM messages WHERE owner='bob@localhost' AND seen=1"
            )
            == 1
        )
        status, data = imap.uid("FETCH", "1", "(BODY.PEEK[HEADER.FIELDS (Subject)]<0.7>)")
        assert fetched(data) == b"Subject"
        status, data = imap.uid("FETCH", "1", "(BODYSTRUCTURE)")
        assert b'("TEXT" "PLAIN" ("CHARSET" "utf-8")' in data[0]

        # flags: \Flagged is wsemail's flag; search sees it
        imap.uid("STORE", "2", "+FLAGS", "(\\Flagged \\Answered)")
        bob = imap_server.client("bob@localhost")
        flagged = [h for h in bob.list_headers().headers if h.flagged]
        assert [h.subject for h in flagged] == ["note 1"] and flagged[0].answered
        assert imap.uid("SEARCH", None, "FLAGGED")[1] == [b"2"]
        assert imap.search(None, "UNSEEN")[1] == [b"2 3"]
        assert imap.uid("SEARCH", None, "SUBJECT", '"note 2"')[1] == [b"3"]
        assert imap.uid("SEARCH", None, "OR", "UID", "1", "BODY", "nothing")[1] == [b"1"]

        # moving: MOVE to Archive, the wsemail folder changes; COPYUID names the new UID
        imap.create("Projects")
        status, data = imap.uid("MOVE", "3", "Archive")
        assert status == "OK" and imap.response("EXPUNGE")[1] == [b"3"]
        assert folder_of(imap_server, "note 2") == ["Archive"]
        status, _ = imap.uid("COPY", "2", "Projects")
        assert status == "OK" and folder_of(imap_server, "note 1") == ["inbox", "Projects"]

        # deleting: \Deleted + EXPUNGE puts it in Trash; there, EXPUNGE deletes for good
        imap.uid("STORE", "1", "+FLAGS.SILENT", "(\\Deleted)")
        status, data = imap.expunge()
        assert data == [b"1"]
        assert folder_of(imap_server, "note 0") == ["Trash"]
        imap.select("Trash")
        imap.store("1", "+FLAGS", "(\\Deleted)")
        imap.expunge()
        assert folder_of(imap_server, "note 0") == []

        # new mail appears at NOOP, with the next UID; UIDVALIDITY stays
        imap.select("INBOX")
        alice.send(["bob@localhost"], "note 3", "later")
        imap.noop()
        assert imap.untagged_responses["EXISTS"][-1] == b"2"
        assert imap.uid("SEARCH", None, "ALL")[1] == [b"2 4"]
        imap.select("INBOX")
        assert imap.untagged_responses["UIDVALIDITY"][0] == validity
        imap.logout()
    assert imap_server.client("bob@localhost").list_headers() is not None


@pytest.mark.both_stores
def test_append_to_sent_and_drafts_only(imap_server: Running) -> None:
    draft = (
        b"From: bob@localhost\r\nTo: alice@localhost\r\nSubject: unfinished\r\n"
        b"Message-ID: <draft-1@localhost>\r\n\r\nnot done yet\r\n"
    )
    with connect(imap_server) as imap:
        imap.login("bob@localhost", PASSWORD)
        status, data = imap.append("Drafts", "(\\Draft)", None, draft)
        assert status == "OK" and b"APPENDUID" in data[0]
        imap.select("Drafts")
        assert b"\\Draft" in imap.fetch("1", "(FLAGS)")[1][0]
        # a draft saved again (same Message-ID, new text), the old one deleted: two copies,
        # then the old one in Trash
        again = draft.replace(b"not done yet", b"almost done")
        assert imap.append("Drafts", "(\\Draft)", None, again)[0] == "OK"
        imap.store("1", "+FLAGS", "(\\Deleted)")
        imap.expunge()
        assert folder_of(imap_server, "unfinished") == ["Trash", "Drafts"]
        whole = fetched(imap.fetch("1", "(BODY.PEEK[])")[1])
        assert b"almost done" in whole and b"X-WSEmail-Provenance: draft (" in whole
        # the newest version is a wsemail draft: the TUI and `wsemail drafts` open it
        [saved] = list(Drafts(imap_server.client("bob@localhost")).list())
        assert saved.subject == "unfinished" and saved.to == ["alice@localhost"]
        assert Drafts(imap_server.client("bob@localhost")).get(saved.id).body == "almost done\n"
        # and a draft saved by the TUI (SaveDraft) is a \\Draft message here
        Drafts(imap_server.client("bob@localhost")).save(
            SavedDraft(to=["carol@localhost"], subject="from the tui", body="later")
        )
        imap.noop()
        assert imap.uid("SEARCH", None, "DRAFT", "SUBJECT", '"from the tui"')[1] == [b"3"]
        # a Sent copy of mail the submission port already stored (same Message-ID) is the
        # existing copy, not a second one
        sent = draft.replace(b"draft-1", b"sent-1").replace(b"unfinished", b"was sent")
        assert imap.append("Sent", "(\\Seen)", None, sent)[0] == "OK"
        assert imap.append("Sent", "(\\Seen)", None, sent)[0] == "OK"
        assert folder_of(imap_server, "was sent") == ["sent"]
        before = imap_server.stored()
        assert imap.append("INBOX", None, None, draft)[0] == "NO"
        forged = draft.replace(b"From: bob@", b"From: alice@").replace(b"draft-1", b"d2")
        assert imap.append("Sent", None, None, forged)[0] == "NO"
        assert imap_server.stored() == before
        assert imap.noop()[0] == "OK"


@pytest.mark.parametrize("feed", ["im new-mail feed", "own delivery hook"])
def test_idle_answers_when_mail_is_delivered(tmp_path: Path, feed: str) -> None:
    """IDLE wakes on the delivery itself (the poll is 60 s here): through the `im`
    plug-in's new-mail feed, or without that plug-in through the IMAP plug-in's own hook."""
    plugins = with_imap(idle_poll=60.0)
    if feed == "own delivery hook":
        plugins = [p for p in plugins if p.ref != "im"]
    imap_server = start_server(tmp_path / "s", plugins=plugins)
    try:
        idle_until_delivered(imap_server)
    finally:
        imap_server.stop()


def idle_until_delivered(imap_server: Running) -> None:
    host, port = imap_plugin(imap_server).address
    with socket.create_connection((host, port), timeout=10) as sock:
        stream = sock.makefile("rwb")
        stream.readline()
        for line in (b"a LOGIN bob@localhost {%d}\r\n" % len(PASSWORD),):
            stream.write(line)
            stream.flush()
            assert stream.readline().startswith(b"+")
            stream.write(PASSWORD.encode() + b"\r\n")
            stream.flush()
        assert b"a OK" in stream.readline()
        stream.write(b"b SELECT INBOX\r\n")
        stream.flush()
        while not stream.readline().startswith(b"b OK"):
            pass
        stream.write(b"c IDLE\r\n")
        stream.flush()
        assert stream.readline().startswith(b"+ ")
        imap_server.client("alice@localhost").send(["bob@localhost"], "ping", "pong")
        # the socket's 10 s timeout is well under the fixture's 60 s poll: the delivery woke it
        assert stream.readline() == b"* 1 EXISTS\r\n"
        stream.write(b"DONE\r\n")
        stream.flush()
        assert stream.readline().startswith(b"c OK")


@pytest.mark.both_stores
def test_uidvalidity_and_uidnext_never_go_back(tmp_path: Path, store_url: str) -> None:
    running = start_server(tmp_path / "s", store_url=store_url, plugins=with_imap())
    try:
        alice = running.client("alice@localhost")
        alice.send(["bob@localhost"], "one", "1")
        with connect(running) as imap:
            imap.login("bob@localhost", PASSWORD)
            imap.create("Box")
            imap.select("INBOX")
            imap.uid("MOVE", "1", "Box")
            status, data = imap.status("Box", "(UIDVALIDITY UIDNEXT MESSAGES)")
            first = re.search(rb"UIDVALIDITY (\d+) UIDNEXT (\d+)", data[0])
            assert first is not None and first.group(2) == b"2"
            imap.select("Box")
            imap.uid("MOVE", "1", "INBOX")
            imap.select("INBOX")
            imap.logout()
        data_dir = running.config.data_dir
    finally:
        running.stop()
    # restarted: the state is in the store
    running = start_server(data_dir, store_url=store_url, plugins=with_imap())
    try:
        with connect(running) as imap:
            imap.login("bob@localhost", PASSWORD)
            imap.select("INBOX")
            # moved out and back in: a new UID above every UID the folder ever gave
            assert imap.uid("SEARCH", None, "ALL")[1] == [b"2"]
            imap.delete("Box")
            imap.create("Box")  # the same name again: its UIDs still only go up
            status, data = imap.status("Box", "(UIDVALIDITY UIDNEXT)")
            again = re.search(rb"UIDVALIDITY (\d+) UIDNEXT (\d+)", data[0])
            assert again is not None
            assert again.group(1) == first.group(1) and int(again.group(2)) >= 2
    finally:
        running.stop()


def test_failed_logins_share_the_soap_limit(tmp_path: Path) -> None:
    imap_server = start_server(tmp_path / "s", plugins=with_imap(), failures_per_user=3)
    try:
        limited_logins(imap_server)
    finally:
        imap_server.stop()


def limited_logins(imap_server: Running) -> None:
    for _ in range(imap_server.config.failures_per_user):
        with connect(imap_server) as imap, pytest.raises(imaplib.IMAP4.error) as refused:
            imap.login("bob@localhost", "wrong password")
        assert "AUTHENTICATIONFAILED" in str(refused.value)
    with connect(imap_server) as imap, pytest.raises(imaplib.IMAP4.error) as limited:
        imap.login("bob@localhost", PASSWORD)  # the right password, but not now
    assert "too many failed logins" in str(limited.value)
    with pytest.raises(RateLimited):  # the SOAP side counts the same failures
        imap_server.client("bob@localhost", "wrong again").list_headers()
    with connect(imap_server) as imap:  # someone else is not held up
        assert imap.login("carol@localhost", PASSWORD)[0] == "OK"


def test_mbsync_syncs_a_maildir_both_ways(imap_server: Running, tmp_path: Path) -> None:
    mbsync = shutil.which("mbsync")
    assert mbsync, "mbsync (isync) missing: run scripts/install-system-deps"
    alice = imap_server.client("alice@localhost")
    for n in range(3):
        alice.send(["bob@localhost"], f"sync {n}", f"text {n}")
    host, port = imap_plugin(imap_server).address
    maildir = tmp_path / "Mail"
    maildir.mkdir()
    config = tmp_path / "mbsyncrc"
    config.write_text(
        f"IMAPAccount bob\nHost {host}\nPort {port}\nUser bob@localhost\n"
        f'Pass "{PASSWORD}"\nSSLType None\nAuthMechs PLAIN\n\n'
        "IMAPStore remote\nAccount bob\n\n"
        f"MaildirStore local\nPath {maildir}/\nInbox {maildir}/INBOX\nSubFolders Verbatim\n\n"
        "Channel bob\nFar :remote:\nNear :local:\nPatterns *\nCreate Near\n"
        "SyncState *\nExpunge Both\nSync All\n"
    )

    def sync() -> None:
        done = subprocess.run(
            [mbsync, "-c", str(config), "-a"], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr

    sync()
    mails = sorted((maildir / "INBOX" / "new").iterdir()) + sorted(
        (maildir / "INBOX" / "cur").iterdir()
    )
    assert len(mails) == 3
    texts = sorted(m.read_bytes() for m in mails)
    assert all(b"X-WSEmail-Provenance: local localhost" in t for t in texts)
    assert {d.name for d in maildir.iterdir()} >= {"INBOX", "Archive", "Trash", "Drafts"}

    # locally: one read and flagged, one deleted; the next sync carries it to the server
    read, gone = mails[0], mails[1]
    read.rename(maildir / "INBOX" / "cur" / (read.name.split(":")[0] + ":2,FS"))
    gone.unlink()
    sync()
    bob = imap_server.client("bob@localhost")
    headers = {h.subject: h for h in bob.list_headers().headers}
    assert len(headers) == 2
    assert sum(h.seen and h.flagged for h in headers.values()) == 1
    trash = bob.list_headers(folder="Trash").headers
    assert len(trash) == 1

    # new mail on the server comes down
    alice.send(["bob@localhost"], "sync 3", "text 3")
    sync()
    assert any(b"Subject: sync 3" in m.read_bytes() for m in (maildir / "INBOX" / "new").iterdir())


@pytest.fixture
def tls_fed(tmp_path: Path) -> Iterator[Federation]:
    """a.test, and b.test with IMAP over implicit TLS (the default with a certificate)."""
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    servers = {
        "a.test": start_domain(tmp_path, ca, "a.test"),
        "b.test": start_domain(tmp_path, ca, "b.test", plugins=with_imap()),
    }
    federation = Federation(ca, servers)
    federation.route_all()
    for running in servers.values():
        running.verify = str(ca / "root.pem")
    yield federation
    for running in servers.values():
        running.stop()


def test_relayed_mail_over_tls_shows_provenance_and_attachment_links(
    tls_fed: Federation, tmp_path: Path
) -> None:
    a, b = tls_fed.a, tls_fed.b
    implicit = imap_plugin(b)
    assert implicit.service is not None and implicit.service.tls_mode == "implicit"
    context = ssl.create_default_context(cafile=str(tls_fed.ca / "root.pem"))
    context.check_hostname = False

    path = tmp_path / "report.txt"
    path.write_bytes(b"quarterly numbers\n" * 100)
    alice = a.client("alice@a.test")
    uploaded = Attachments(alice).upload(path)
    alice.send(["bob@b.test"], "the report", "see attached", attachments=[uploaded.guid])
    wait_for(lambda: b.client("bob@b.test").list_headers().headers, "mail at b.test")

    host, port = implicit.address
    with imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=10) as imap:
        imap.login("bob@b.test", PASSWORD)
        imap.select("INBOX", readonly=True)
        whole = fetched(imap.fetch("1", "(BODY.PEEK[])")[1])
        assert b"X-WSEmail-Provenance: verified a.test" in whole
        assert b"report.txt.wsemail-link.txt" in whole
        structure = imap.fetch("1", "(BODYSTRUCTURE)")[1][0]
        assert b'"MIXED"' in structure and b'"ATTACHMENT"' in structure
        link = fetched(imap.fetch("1", "(BODY.PEEK[2])")[1])
        assert uploaded.guid.encode() in link and b"report.txt" in link
        # EXAMINE: nothing can be changed
        assert imap.store("1", "+FLAGS", "(\\Seen)")[0] == "NO"


def test_starttls_listener_refuses_login_before_tls(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    options = {"tls": "starttls", "loopback_plain_login": False}
    running = start_domain(tmp_path, ca, "b.test", plugins=with_imap(**options))
    context = ssl.create_default_context(cafile=str(ca / "root.pem"))
    context.check_hostname = False
    try:
        host, port = imap_plugin(running).address
        with imaplib.IMAP4(host, port, timeout=10) as imap:
            assert "LOGINDISABLED" in imap.capabilities and "STARTTLS" in imap.capabilities
            with pytest.raises(imaplib.IMAP4.error) as refused:
                imap.login("bob@b.test", PASSWORD)
            assert "PRIVACYREQUIRED" in str(refused.value)
            imap.starttls(context)
            assert imap.login("bob@b.test", PASSWORD)[0] == "OK"
            assert imap.select("INBOX")[0] == "OK"
        assert running.count("SELECT count(*) FROM nonces") >= 0
    finally:
        running.stop()


def test_encrypted_mail_is_delivered_as_is(imap_server: Running) -> None:
    sealed = f"{SEALED_MARKER}><e2e:Cipher>c2VjcmV0</e2e:Cipher></e2e:Sealed>"
    imap_server.client("alice@localhost").send(["bob@localhost"], "(encrypted)", sealed)
    with connect(imap_server) as imap:
        imap.login("bob@localhost", PASSWORD)
        imap.select("INBOX")
        whole = fetched(imap.fetch("1", "(BODY.PEEK[])")[1])
        message = email.message_from_bytes(whole, policy=email.policy.default)
        assert message["X-WSEmail-Encrypted"].startswith("yes")
        assert message.get_content_type() == "application/xml"
        assert message.get_content().decode("utf-8") == sealed  # byte for byte


@pytest.mark.both_stores
def test_folder_names_travel_in_modified_utf7(imap_server: Running) -> None:
    with connect(imap_server) as imap:
        imap.login("bob@localhost", PASSWORD)
        assert imap.create('"&ZeVnLIqe- &- Co"')[0] == "OK"  # 日本語 & Co
        listing = b"\n".join(x for x in imap.list()[1] if isinstance(x, bytes))
        assert b'"&ZeVnLIqe- &- Co"' in listing
        assert imap.select('"&ZeVnLIqe- &- Co"')[0] == "OK"
    names = [f.name for f in imap_server.client("bob@localhost").folders()]
    assert "日本語 & Co" in names


def _idle_session(port: int) -> socket.socket:
    """A raw session logged in as bob, INBOX selected, in IDLE (imaplib has no IDLE)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    lines = sock.makefile("rb")
    lines.readline()  # greeting
    for command in (f'a LOGIN bob@localhost "{PASSWORD}"', "b SELECT INBOX"):
        sock.sendall(command.encode() + b"\r\n")
        while not lines.readline().startswith(command[:2].encode()):
            pass
    sock.sendall(b"c IDLE\r\n")
    assert lines.readline().startswith(b"+")
    return sock


def test_serve_imap_port_through_the_real_binary(tmp_path: Path) -> None:
    data_dir = tmp_path / "server"
    data_dir.mkdir()
    store = SqliteStore(data_dir / "wsemail.db")
    set_user(store, "localhost", "bob@localhost", PASSWORD)
    store.close()
    port, imap_port = free_port(), free_port()
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [wsemail_binary(), "serve", "--data-dir", str(data_dir), "--port", str(port),
         "--imap-port", str(imap_port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                imap = imaplib.IMAP4("127.0.0.1", imap_port, timeout=10)
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, "not serving"
                time.sleep(0.1)
        with imap:
            imap.login("bob@localhost", PASSWORD)
            assert imap.select("INBOX") == ("OK", [b"0"])
        idling = [_idle_session(imap_port) for _ in range(3)]  # left open: the server stops
    finally:
        process.terminate()
        code = process.wait(timeout=30)
        log.close()
    for sock in idling:
        sock.close()
    # sessions cut off in IDLE end cleanly: no task of theirs is left pending at the exit
    assert code == 0
    assert "Task was destroyed" not in (tmp_path / "serve.log").read_text()
    for args, words in (
        (["--imap-tls", "sometimes"], "--imap-tls"),
        (["--host", "0.0.0.0"], "loopback"),
    ):
        done = subprocess.run(
            [wsemail_binary(), "serve", "--data-dir", str(data_dir), "--port", str(port),
             "--imap-port", str(imap_port), *args],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode != 0 and "Traceback" not in done.stderr
        assert words in done.stderr


@pytest.mark.both_stores
def test_changes_made_through_soap_reach_an_open_session(imap_server: Running) -> None:
    alice = imap_server.client("alice@localhost")
    for n in range(3):
        alice.send(["bob@localhost"], f"elsewhere {n}", "text")
    bob = imap_server.client("bob@localhost")
    ids = {h.subject: h.id for h in bob.list_headers().headers}
    with connect(imap_server) as imap:
        imap.login("bob@localhost", PASSWORD)
        imap.select("INBOX")
        assert imap.noop()[0] == "OK" and not imap.response("FETCH")[1][0]
        bob.set_flags([ids["elsewhere 2"]], flagged=True)  # as the TUI would
        bob.move([ids["elsewhere 0"]], "Archive")
        imap.noop()
        assert imap.response("EXPUNGE")[1] == [b"1"]
        changed = imap.response("FETCH")[1]
        assert changed == [b"2 (UID 3 FLAGS (\\Flagged))"]
        assert imap.uid("SEARCH", None, "ALL")[1] == [b"2 3"]
        # the message moved in wsemail shows in Archive with a UID of that folder
        imap.select("Archive")
        assert imap.uid("SEARCH", None, "ALL")[1] == [b"1"]


def test_authenticate_plain_with_a_continuation(imap_server: Running) -> None:
    with connect(imap_server) as imap:
        answer = imap.authenticate("PLAIN", lambda _: b"\0bob@localhost\0" + PASSWORD.encode())
        assert answer[0] == "OK"
        assert imap.select("INBOX")[0] == "OK"
    with connect(imap_server) as imap, pytest.raises(imaplib.IMAP4.error) as refused:
        # acting for someone else (an authzid that is not the login) is refused
        imap.authenticate(
            "PLAIN", lambda _: b"alice@localhost\0bob@localhost\0" + PASSWORD.encode()
        )
    assert "AUTHENTICATIONFAILED" in str(refused.value)


def test_two_nodes_hand_out_each_uid_once(tmp_path: Path, pg_url: str) -> None:
    """Two nodes of one domain over one PostgreSQL database, mail arriving at both while an
    IMAP session on each syncs the same folder: every message gets one UID, the same on
    both nodes (the folder's row is locked while UIDs are handed out)."""
    plugins = [
        PluginSpec("relay-policy", 10, {"allow": ["*"]}),
        PluginSpec("size-limit", 20),
        PluginSpec("local-delivery", 1000),
        PluginSpec("sqlite-queue", 1000),
        PluginSpec("imap", 30, {"port": 0}),
    ]
    a = start_server(tmp_path / "a", store_url=pg_url, plugins=plugins)
    b = start_server(tmp_path / "b", store_url=pg_url, users=False, plugins=plugins)
    try:
        sessions = [connect(a), connect(b)]
        for imap in sessions:
            imap.login("bob@localhost", PASSWORD)
        senders = [a.client("alice@localhost"), b.client("carol@localhost")]
        done = threading.Event()
        failures: list[object] = []

        def sync(imap: imaplib.IMAP4) -> None:  # each SELECT hands out the UIDs of what is new
            while not done.is_set():
                status, _ = imap.select("INBOX")
                if status != "OK":
                    failures.append(status)

        syncing = [threading.Thread(target=sync, args=(imap,)) for imap in sessions]
        for thread in syncing:
            thread.start()
        try:
            for n in range(12):
                senders[n % 2].send(["bob@localhost"], f"n{n}", "x")
        finally:
            done.set()
            for thread in syncing:
                thread.join()
        assert failures == []
        seen = []
        for imap in sessions:
            imap.select("INBOX")
            _, data = imap.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            found = {}
            for part in data:
                if isinstance(part, tuple):
                    uid = re.search(rb"UID (\d+)", part[0])
                    assert uid is not None
                    found[int(uid.group(1))] = bytes(part[1]).strip()
            seen.append(found)
            imap.logout()
        assert seen[0] == seen[1] and sorted(seen[0]) == list(range(1, 13))
        assert len(set(seen[0].values())) == 12
    finally:
        b.stop()
        a.stop()
