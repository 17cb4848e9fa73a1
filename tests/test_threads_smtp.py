"""Conversations and blind copies with legacy mail (issue 17): the SMTP gateway keeps the
In-Reply-To and References of Internet mail (unsigned, shown as legacy), outbound legacy
mail carries them, a Bcc to a legacy domain is an envelope of its own, and a mail program
submitting by SMTP gets Bcc and threading too. Real servers, a real legacy SMTP sink and
dnsmasq (`test_smtp`), smtplib on the submission port (`test_smtp_submission`)."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from test_smtp import Sink, gateway, sink, smtp_client
from test_smtp_submission import connect, mail, one

from wsemail.client import replies

from conftest import PASSWORD, Running, wait_for

__all__ = ["gateway", "one", "sink"]  # fixtures shared with test_smtp / test_smtp_submission


def _legacy_answer(in_reply_to: str, references: str) -> bytes:
    mail = EmailMessage()
    mail["From"] = "Dave <dave@legacy.test>"
    mail["To"] = "alice@localhost"
    mail["Subject"] = "Re: Plan"
    mail["Date"] = "Tue, 01 Jul 2025 10:00:00 +0000"
    mail["Message-ID"] = "<answer-1@legacy.test>"
    mail["In-Reply-To"] = in_reply_to
    mail["References"] = references
    mail.set_content("Sounds good.")
    return mail.as_bytes(policy=policy.SMTP)


def test_legacy_mail_threads_both_ways(gateway: Running, sink: tuple[Sink, int]) -> None:
    received = sink[0]
    alice = gateway.client()
    first = alice.send(["dave@legacy.test"], "Plan", "Shall we?", bcc=["eve@legacy.test"])
    wait_for(lambda: len(received.received) == 2, "both envelopes at the legacy server")
    by_rcpt = {tuple(e.rcpt_tos): e for e in received.received}
    assert set(by_rcpt) == {("dave@legacy.test",), ("eve@legacy.test",)}  # Bcc: its own
    for envelope in by_rcpt.values():
        data = envelope.original_content
        assert isinstance(data, bytes) and b"eve@legacy.test" not in data.split(b"\r\n\r\n")[0]
    # the legacy answer: odd ids dropped, wsemail's kept; it joins alice's sent message
    junk = f"<not an id@x> {first.message_id} <a@b> trailing"
    with smtp_client(gateway) as client:
        client.sendmail(
            "dave@legacy.test", ["alice@localhost"], _legacy_answer(first.message_id, junk)
        )
    wait_for(lambda: alice.list_headers().headers, "the legacy answer")
    answer = alice.retrieve(alice.list_headers().headers[0].id)
    assert alice.verify(answer)[0].status == "legacy"
    assert answer.in_reply_to == first.message_id
    assert answer.references == [first.message_id, "<a@b>"]
    [conversation] = alice.list_threads().threads
    assert [h.subject for h in conversation.headers] == ["Plan", "Re: Plan"]
    # alice's reply goes out by SMTP with In-Reply-To and References for Dave's program
    replies.reply(alice, answer.id, "Then it is settled.")
    wait_for(lambda: len(received.received) == 3, "the reply at the legacy server")
    data = received.received[-1].original_content
    assert isinstance(data, bytes)
    parsed = message_from_bytes(data, policy=policy.default)
    assert str(parsed["In-Reply-To"]) == "<answer-1@legacy.test>"
    assert str(parsed["References"]).split() == [
        first.message_id,
        "<a@b>",
        "<answer-1@legacy.test>",
    ]
    assert str(parsed["Subject"]) == "Re: Plan"


def test_a_mail_program_submits_blind_copies_and_replies(one: tuple[Running, Path]) -> None:
    running, ca = one
    bob = running.client("bob@a.test")
    running.client("alice@a.test").send(["bob@a.test"], "Plan", "x", message_id="<p@a.test>")
    message = mail("bob@a.test", ["alice@a.test"], "Re: Plan", "ok\n")
    parsed = message_from_bytes(message, policy=policy.default)
    parsed["In-Reply-To"] = "<p@a.test>"
    parsed["References"] = "<p@a.test>"
    with connect(running, ca) as client:
        client.login("bob@a.test", PASSWORD)
        refused = client.sendmail(
            "bob@a.test", ["alice@a.test", "carol@a.test"], parsed.as_bytes(policy=policy.SMTP)
        )
    assert refused == {}
    alice, carol = running.client("alice@a.test"), running.client("carol@a.test")
    theirs = alice.retrieve(alice.list_headers().headers[0].id)
    assert theirs.to == ["alice@a.test"] and theirs.bcc == [] and theirs.in_reply_to == "<p@a.test>"
    assert carol.retrieve(carol.list_headers().headers[0].id).to == ["alice@a.test"]  # blind
    own = bob.retrieve(bob.list_headers("sent").headers[0].id)
    assert own.bcc == ["carol@a.test"]
    [conversation] = alice.list_threads().threads
    assert conversation.count == 2  # her sent "Plan" and bob's answer
