"""Conversations, replies, forwards and blind copies between two real domains over TLS
(issue 17): In-Reply-To and References travel inside what the sending server signs, so a
relay cannot re-thread a message; a Bcc recipient's signed form is its own."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import replace
from pathlib import Path

from lxml import etree
from test_federation import Federation, assert_refused, fed, post, stored  # noqa: F401 -- fed: a fixture

from wsemail.client import replies
from wsemail.client.attachments import Attachments
from wsemail.client.mail import Client
from wsemail.protocol.message import Message
from wsemail.protocol.soap import q
from wsemail.server.store import QueueRow

from conftest import PASSWORD, Running, wait_for, wsemail_binary


def reader(fed: Federation, running: Running, user: str) -> Client:  # noqa: F811
    client = running.client(user)
    client.set_trust_roots([fed.ca / "root.pem"])
    return client


def arrived(client: Client, count: int, folder: str = "inbox") -> list[str]:
    """Wait until `client` has `count` messages in `folder`; their ids, newest first."""
    wait_for(lambda: len(client.list_headers(folder).headers) >= count, f"{count} messages")
    return [h.id for h in client.list_headers(folder).headers]


def signed_xml(running: Running, owner: str) -> list[bytes]:
    """The stored signed forms of `owner`'s copies, oldest first."""
    return running.controller.server.store.transact_sync(
        lambda tx: [
            bytes(r[0])
            for r in tx.conn.execute(
                "SELECT signed_xml FROM messages WHERE owner=? AND signed_xml IS NOT NULL "
                "ORDER BY seq",
                (owner,),
            )
        ]
    )


def test_thread_headers_survive_relay_with_signatures_intact(fed: Federation) -> None:  # noqa: F811
    alice, bob = reader(fed, fed.a, "alice@a.test"), reader(fed, fed.b, "bob@b.test")
    first = alice.send(["bob@b.test"], "Plan", "Shall we?")
    [original] = arrived(bob, 1)
    proof, theirs = bob.verify(bob.retrieve(original))
    assert (proof.status, theirs.in_reply_to, theirs.references) == ("verified", None, [])
    answer = replies.reply(bob, original, "We shall.")
    [reply_id] = arrived(alice, 1)
    proof, got = alice.verify(alice.retrieve(reply_id))
    assert (proof.status, proof.signer) == ("verified", "b.test"), proof.reason
    assert got.in_reply_to == first.message_id and got.references == [first.message_id]
    assert got.subject == "Re: Plan" and "> Shall we?" in got.body
    # what a.test stored is what b.test signed: the ids are inside the signed Content
    [record] = signed_xml(fed.a, "alice@a.test")
    content = etree.fromstring(record).find(q("Content"))
    assert content is not None and content.findtext(q("InReplyTo")) == first.message_id
    assert [r.text for r in content.findall(q("Reference"))] == [first.message_id]
    # a reply to the reply: both mailboxes hold one conversation
    replies.reply(alice, reply_id, "Good.")
    latest = arrived(bob, 2)[0]
    proof, third = bob.verify(bob.retrieve(latest))
    assert proof.status == "verified", proof.reason
    assert third.references == [first.message_id, answer.message_id]
    for client, size in ((alice, 3), (bob, 3)):
        [conversation] = client.list_threads().threads
        assert conversation.count == size
        whole = client.thread(latest if client is bob else reply_id)
        assert [m.subject for m in whole] == ["Plan", "Re: Plan", "Re: Plan"]
        assert all(client.verify(m)[0].status in ("verified", "local") for m in whole)


def _deliver(fed: Federation, references: list[str]) -> bytes:  # noqa: F811
    """A Deliver a.test's relay would send of a message answering `references`."""
    message = Message(
        id="",
        message_id=f"<answer-{time.time_ns()}@a.test>",
        folder="sent",
        sender="alice@a.test",
        to=["bob@b.test"],
        cc=[],
        subject="Re: crafted",
        date="2026-11-25T12:00:00Z",
        size=1,
        seen=True,
        body="b",
        in_reply_to=references[-1],
        references=references,
    )
    holder = etree.Element("holder")
    payload = etree.tostring(message.to_xml(holder))
    row = QueueRow(1, message.message_id, "alice@a.test", "b.test", payload, ["bob@b.test"], 0, 0)
    relay = fed.a.controller.server.relay
    assert relay is not None
    return relay.transaction("b.test", [row])


def test_a_relay_that_rethreads_a_message_is_refused_and_nothing_is_stored(
    fed: Federation,  # noqa: F811
) -> None:
    data = _deliver(fed, ["<first@a.test>", "<plan@a.test>"])
    assert b"&lt;plan@a.test&gt;</w:Reference>" in data and b"<w:InReplyTo>" in data
    before = stored(fed.b)
    for forged in (
        data.replace(b"&lt;plan@a.test&gt;</w:Reference>", b"&lt;other@a.test&gt;</w:Reference>"),
        data.replace(b"<w:Reference>&lt;first@a.test&gt;</w:Reference>", b""),
        data.replace(b"<w:InReplyTo>&lt;plan@a.test&gt;", b"<w:InReplyTo>&lt;other@a.test&gt;"),
    ):
        assert forged != data
        assert_refused(fed.b, post(fed.b, forged), 401, "wsse:FailedCheck", before)
    assert fed.b.count("SELECT count(*) FROM thread_links") == 0
    assert post(fed.b, data).status_code == 200  # the untouched one is taken
    # the two ids it names (its own is found among the copies: schema migration 11)
    assert fed.b.count("SELECT count(*) FROM thread_links") == 2


def test_a_server_signing_malformed_references_is_refused(fed: Federation) -> None:  # noqa: F811
    before = stored(fed.b)
    for references in (["not-an-id"], [f"<r{n}@a.test>" for n in range(51)]):
        data = _deliver(fed, references)
        assert_refused(fed.b, post(fed.b, data), 400, "wsemail:InvalidRequest", before)


def test_tampered_references_fail_the_readers_provenance_check(fed: Federation) -> None:  # noqa: F811
    alice, bob = reader(fed, fed.a, "alice@a.test"), reader(fed, fed.b, "bob@b.test")
    alice.send(["bob@b.test"], "Plan", "Shall we?")
    [original] = arrived(bob, 1)
    replies.reply(bob, original, "We shall.")
    [reply_id] = arrived(alice, 1)
    message = alice.retrieve(reply_id)
    assert alice.verify(message)[0].status == "verified"
    for changed in (
        replace(message, references=["<elsewhere@a.test>"]),
        replace(message, references=[]),
        replace(message, in_reply_to="<elsewhere@a.test>"),
        replace(message, in_reply_to=None),
    ):
        proof, shown = alice.verify(changed)
        assert proof.status == "failed", proof
    # a server that rewrites its stored copy: the reader's check fails, the content is hidden
    store = fed.a.controller.server.store

    def rethread(tx: object) -> int:
        conn = tx.conn  # type: ignore[attr-defined]
        seq, record = conn.execute(
            "SELECT seq, signed_xml FROM messages WHERE id=?", (reply_id,)
        ).fetchone()
        forged = bytes(record).replace(b"</w:InReplyTo>", b"x</w:InReplyTo>", 1)
        assert forged != bytes(record)
        return int(
            conn.execute("UPDATE messages SET signed_xml=? WHERE seq=?", (forged, seq)).rowcount
        )

    assert store.transact_sync(rethread) == 1
    env = {
        "WSEMAIL_SERVER": fed.a.url,
        "WSEMAIL_USER": "alice@a.test",
        "WSEMAIL_PASSWORD": PASSWORD,
        "WSEMAIL_CACERT": str(fed.ca / "root.pem"),
        "WSEMAIL_TRUST_ROOTS": str(fed.ca / "root.pem"),
        "WSEMAIL_TLS_NAME": "a.test",
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [wsemail_binary(), "thread", "--json", reply_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "signature check FAILED for 1 message(s)" in result.stderr
    sent, shown = [json.loads(line) for line in result.stdout.splitlines()]
    assert sent["provenance"]["status"] == "local" and sent["body"] == "Shall we?"
    assert shown["id"] == reply_id and shown["provenance"]["status"] == "failed"
    assert "We shall" not in shown["body"] and shown["subject"] == "(hidden)"
    refused = subprocess.run(
        [wsemail_binary(), "reply", reply_id, "--body", "x"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "will not answer" in refused.stderr
    assert len(alice.list_headers("sent").headers) == 1  # nothing was sent


def test_bcc_across_domains_never_shows_in_a_to_recipients_signed_form(
    fed: Federation,  # noqa: F811
) -> None:
    alice = reader(fed, fed.a, "alice@a.test")
    alice.send(["bob@b.test"], "Quiet", "for bob", bcc=["carol@b.test", "carol@a.test"])
    bob, carol = reader(fed, fed.b, "bob@b.test"), reader(fed, fed.b, "carol@b.test")
    [bobs] = arrived(bob, 1)
    [carols] = arrived(carol, 1)
    [record] = signed_xml(fed.b, "bob@b.test")
    assert b"carol" not in record  # neither blind copy, in the form a.test signed for bob
    root = etree.fromstring(record)
    assert [r.text for r in root.findall(q("Recipient"))] == ["bob@b.test"]
    row = fed.b.count(
        "SELECT count(*) FROM messages WHERE owner='bob@b.test' AND "
        "(to_json || cc_json || bcc_json || body) LIKE '%carol%'"
    )
    assert row == 0
    proof, seen_by_bob = bob.verify(bob.retrieve(bobs))
    assert proof.status == "verified" and seen_by_bob.bcc == [] and seen_by_bob.cc == []
    # carol's own signed form names her alone; the content shows To bob, no Bcc
    [theirs] = signed_xml(fed.b, "carol@b.test")
    assert [r.text for r in etree.fromstring(theirs).findall(q("Recipient"))] == ["carol@b.test"]
    proof, seen_by_carol = carol.verify(carol.retrieve(carols))
    assert proof.status == "verified", proof.reason
    assert seen_by_carol.to == ["bob@b.test"] and seen_by_carol.bcc == []
    # the local blind copy, and the sender's own copy, which alone names them
    local = fed.a.client("carol@a.test")
    assert local.retrieve(local.list_headers().headers[0].id).to == ["bob@b.test"]
    own = alice.retrieve(alice.list_headers("sent").headers[0].id)
    assert own.bcc == ["carol@b.test", "carol@a.test"]
    # bob's reply to all goes to alice alone
    replies.reply(bob, bobs, "ok", to_all=True)
    [answer] = arrived(alice, 1)
    assert alice.retrieve(answer).cc == []


def test_forward_across_domains_carries_the_attachments(fed: Federation, tmp_path: Path) -> None:  # noqa: F811
    alice = reader(fed, fed.a, "alice@a.test")
    path = tmp_path / "plans.bin"
    path.write_bytes(bytes(range(256)) * 400)
    upload = Attachments(alice).upload(path)
    alice.send(["bob@b.test"], "plans", "attached", attachments=[upload.guid])
    bob = reader(fed, fed.b, "bob@b.test")
    [original] = arrived(bob, 1)
    replies.forward(bob, original, ["alice@a.test"], "back to you, with the file")
    wait_for(lambda: len(alice.list_headers().headers) == 1, "the forward")
    box = Attachments(alice)
    listing = box.list(alice.list_headers().headers[0].id)
    assert listing.provenance.status == "verified" and listing.provenance.signer == "b.test"
    assert listing.message.subject == "Fwd: plans"
    [ref] = listing.refs
    assert ref.server == "b.test" and ref.name == "plans.bin" and ref.sha256 == upload.sha256
    fetched = box.fetch(ref, tmp_path / "again.bin")
    assert fetched.read_bytes() == path.read_bytes()
