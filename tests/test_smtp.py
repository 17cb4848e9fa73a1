"""The SMTP gateway with real SMTP peers on loopback: Python's smtplib into our listener,
our outbound delivery into a real aiosmtpd server, DKIM checked by dkimpy, and every way
the gateway refuses to become a relay or a spoofing channel."""

from __future__ import annotations

import hashlib
import json
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dkim
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from lxml import etree
from test_routing import Dnsmasq
from typer.testing import CliRunner

from wsemail.cli import domain as domain_cli
from wsemail.client.attachments import Attachments
from wsemail.client.mail import Client
from wsemail.core.routing import StaticResolver
from wsemail.protocol.message import AttachmentRef, attachment_refs
from wsemail.protocol.soap import element, q
from wsemail.server.attachments import OnDemandAttachments
from wsemail.server.config import DEFAULT_PLUGINS
from wsemail.server.pipeline import PluginSpec
from wsemail.server.smtp import dkim_keys
from wsemail.server.smtp.plugins import SmtpInbound

from certs import make_tls_files
from conftest import Cli, Running, start_server, wait_for

INBOUND = "wsemail.server.smtp.plugins:SmtpInbound"
OUTBOUND = "wsemail.server.smtp.plugins:SmtpOutbound"


# a legacy mail server on loopback (aiosmtpd), with STARTTLS and scripted RCPT answers ---
@dataclass
class Sink:
    received: list[Envelope] = field(default_factory=list)
    tls_sessions: int = 0
    answers: dict[str, str] = field(default_factory=dict)  # recipient -> RCPT reply

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        answer = self.answers.get(address)
        if answer:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if session.ssl:
            self.tls_sessions += 1
        self.received.append(envelope)
        return "250 OK"


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[tuple[Sink, int]]:
    (tmp_path / "sink-tls").mkdir()
    _, cert, key = make_tls_files(tmp_path / "sink-tls")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = Sink()
    controller = Controller(handler, hostname="127.0.0.1", port=0, tls_context=context)
    # aiosmtpd's own controller needs a fixed port: find a free one
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        controller.port = probe.getsockname()[1]
    controller.start()
    yield handler, controller.port
    controller.stop()


def mail_dns(tmp: Path, txt: dict[str, str] | None = None, *options: str) -> Dnsmasq:
    """A real DNS server (dnsmasq on loopback) for the gateway: legacy.test's MX, and the
    TXT records in `txt` (SPF policies, DKIM keys, DMARC policies; long ones are served as
    several strings); NXDOMAIN for every other name."""
    server = Dnsmasq(
        tmp / "dnsmasq.log",
        [
            "--local=/#/",
            "--local-ttl=1",
            "--mx-host=legacy.test,mx.legacy.test,10",
            "--host-record=mx.legacy.test,127.0.0.1",
            *(f"--txt-record={name},{value}" for name, value in (txt or {}).items()),
            *options,
        ],
        probe="probe.test",
    )
    server.start()
    return server


def start_gateway(
    tmp: Path,
    sink_port: int | None = None,
    outbound: dict[str, Any] | None = None,
    dns_options: tuple[str, ...] = (),
    store_url: str = "",
    **inbound: Any,
) -> Running:
    """A localhost server with both SMTP plug-ins resolving through a real dnsmasq (`txt`:
    its TXT records); b.test is a federated wsemail domain."""
    dns = mail_dns(tmp, inbound.pop("txt", {}), *dns_options)
    plugins = [
        *DEFAULT_PLUGINS,
        PluginSpec(INBOUND, 50, {"port": 0, "dns_timeout": 2, **inbound}),
        PluginSpec(
            OUTBOUND,
            60,
            {"mx_port": sink_port or 9, "timeout": 5, **(outbound or {})},
        ),
    ]
    try:
        running = start_server(
            tmp / "server",
            plugins=plugins,
            retry_base=0.2,
            retry_max=0.5,
            relay_poll=0.1,
            dns_nameservers=["127.0.0.1"],
            dns_port=dns.port,
            store_url=store_url,
        )
    except BaseException:
        dns.stop()
        raise
    running.dns = dns  # type: ignore[attr-defined]
    federation = running.controller.server.federation
    assert federation is not None
    federation.resolver = StaticResolver({"b.test": ["https://127.0.0.1:9/wsemail"]})
    attachments_plugin(running).public_url = running.url  # port 0: known once bound
    return running


def attachments_plugin(running: Running) -> OnDemandAttachments:
    for entry in running.controller.server.pipeline.listing():
        if isinstance(entry.plugin, OnDemandAttachments):
            return entry.plugin
    raise AssertionError("attachments is not loaded")


def inbound_plugin(running: Running) -> SmtpInbound:
    for entry in running.controller.server.pipeline.listing():
        if isinstance(entry.plugin, SmtpInbound):
            return entry.plugin
    raise AssertionError("smtp-inbound is not loaded")


def smtp_client(running: Running) -> smtplib.SMTP:
    host, port = inbound_plugin(running).address
    return smtplib.SMTP(host, port, timeout=10)


def stop(running: Running) -> None:
    for entry in running.controller.server.pipeline.listing():
        close = getattr(entry.plugin, "close", None)
        if close is not None:
            close()
    running.stop()
    dns = getattr(running, "dns", None)
    if dns is not None:
        dns.stop()


@pytest.fixture
def gateway(tmp_path: Path, sink: tuple[Sink, int], store_url: str) -> Iterator[Running]:
    running = start_gateway(tmp_path, sink[1], store_url=store_url)
    yield running
    stop(running)


def legacy_mail(sender: str, to: str, subject: str = "Hello", body: str = "Hi Bob") -> bytes:
    mail = EmailMessage()
    mail["From"] = f"Carol <{sender}>"
    mail["To"] = to
    mail["Subject"] = subject
    mail["Date"] = "Tue, 01 Jul 2025 10:00:00 +0000"
    mail["Message-ID"] = "<legacy-1@example.net>"
    mail.set_content(body)
    return mail.as_bytes(policy=policy.SMTP)


def assert_still_answers(running: Running) -> None:
    with smtp_client(running) as client:
        assert client.noop()[0] == 250


# inbound ----------------------------------------------------------------------------------
def test_smtp_client_mail_lands_in_local_mailbox_with_legacy_provenance(tmp_path: Path) -> None:
    signing_key = dkim_keys.ensure_key(tmp_path / "example-net", "example.net")
    txt = {
        "wsemail._domainkey.example.net": dkim_keys.public_record(signing_key),
        "example.net": "v=spf1 ip4:127.0.0.1 -all",
        "_dmarc.example.net": "v=DMARC1; p=reject; adkim=s",
    }
    running = start_gateway(tmp_path, txt=txt)
    try:
        mail = EmailMessage()
        mail["From"] = "Carol <carol@example.net>"
        mail["To"] = "bob@localhost"
        mail["Subject"] = "Quarterly =?utf-8?q?r=C3=A9sum=C3=A9?="
        mail["Date"] = "Tue, 01 Jul 2025 10:00:00 +0200"
        mail["Message-ID"] = "<q3-report@example.net>"
        mail.set_content("Dear Bob,\nthe figures are attached.\n")
        mail.add_attachment(
            b"%PDF-1.4 tiny", maintype="application", subtype="pdf", filename="q3.pdf"
        )
        data = dkim_keys.sign(mail.as_bytes(), "example.net", signing_key)
        with smtp_client(running) as client:
            refused = client.sendmail("carol@example.net", ["bob@localhost"], data)
        assert refused == {}

        bob = running.client("bob@localhost")
        [header] = bob.list_headers().headers
        assert (header.sender, header.subject) == ("carol@example.net", "Quarterly résumé")
        proof, message = bob.verify(bob.retrieve(header.id))
        assert message.body.startswith("Dear Bob,\nthe figures are attached.\n")
        assert "q3.pdf (application/pdf, 13 bytes)" in message.body
        assert message.date == "2025-07-01T08:00:00Z"
        assert message.message_id == "<q3-report@example.net>"
        assert proof.status == "legacy" and proof.signer is None
        assert proof.dmarc == "pass"
        assert proof.reason == (
            "received by SMTP from 127.0.0.1; DKIM pass (d=example.net); SPF pass (example.net);"
            " DMARC pass (example.net, p=reject)"
        )
        cli = Cli(running, tmp_path)
        shown = cli("retrieve", header.id, user="bob@localhost").stdout
        headline = "Provenance: legacy email, DMARC pass, NOT signed by a wsemail server"
        assert f"{headline}: {proof.reason}\n" in shown
        as_json = json.loads(cli("retrieve", "--json", header.id, user="bob@localhost").stdout)
        assert as_json["provenance"] == {
            "status": "legacy",
            "signer": None,
            "reason": proof.reason,
            "dmarc": "pass",
        }
    finally:
        stop(running)


@pytest.mark.both_stores
def test_unsigned_legacy_mail_records_dkim_and_spf_none(gateway: Running) -> None:
    with smtp_client(gateway) as client:
        client.sendmail(
            "dan@example.org",
            ["carol@localhost"],
            legacy_mail("dan@example.org", "carol@localhost"),
        )
    carol = gateway.client("carol@localhost")
    [header] = carol.list_headers().headers
    proof, message = carol.verify(carol.retrieve(header.id))
    assert message.body == "Hi Bob\n"
    assert proof.status == "legacy"
    assert "DKIM none" in proof.reason and "SPF none" in proof.reason


def test_html_only_mail_is_read_as_its_text(gateway: Running) -> None:
    mail = EmailMessage()
    mail["From"] = "Dan <dan@example.org>"
    mail["To"] = "carol@localhost"
    mail["Subject"] = "Newsletter"
    mail.set_content(
        "<html><head><title>T</title><style>p {color: red}</style>"
        '<link rel="stylesheet" href="http://127.0.0.1:9/remote.css"></head><body>'
        "<h1>News &amp; notes</h1><p>First   line,<br>second line.</p>"
        "<script>alert('x')</script><ul><li>one</li><li>two</li></ul>"
        '<p>Pay <a href="https://bank.example.net/login">your bank</a> now</p>'
        "<pre>  a   b\n    c</pre>"
        '<img src="http://127.0.0.1:9/track.png" alt="logo"></body></html>',
        subtype="html",
    )
    with smtp_client(gateway) as client:
        client.sendmail("dan@example.org", ["carol@localhost"], mail.as_bytes())
    carol = gateway.client("carol@localhost")
    [header] = carol.list_headers().headers
    body = carol.retrieve(header.id).body
    assert body == (
        "# News & notes\n\nFirst line,\nsecond line.\n\n  * one\n  * two\n\n"
        "Pay [your bank](https://bank.example.net/login) now\n\n"
        "      a   b\n        c\n\nlogo\n"
    )
    assert "alert" not in body and "color" not in body and "remote.css" not in body


def test_gateway_refuses_relaying_and_unknown_users_at_rcpt(gateway: Running) -> None:
    with smtp_client(gateway) as client:
        client.ehlo()
        assert client.mail("dan@example.org")[0] == 250
        code, text = client.rcpt("eve@elsewhere.test")
        assert code == 550 and b"relaying denied" in text
        code, text = client.rcpt("nobody@localhost")
        assert code == 550 and b"5.1.1" in text
        client.rset()
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.sendmail(
                "dan@example.org",
                ["eve@elsewhere.test", "nobody@localhost"],
                legacy_mail("dan@example.org", "eve@elsewhere.test"),
            )
        answers = {r: code for r, (code, _) in refused.value.recipients.items()}
        assert answers == {"eve@elsewhere.test": 550, "nobody@localhost": 550}
    assert gateway.stored() == (0, 0) and gateway.count("SELECT count(*) FROM queue") == 0
    assert_still_answers(gateway)


def test_gateway_refuses_oversized_mail(tmp_path: Path) -> None:
    running = start_gateway(tmp_path, max_bytes=2000)
    try:
        big = legacy_mail("dan@example.org", "bob@localhost", body=("x" * 70 + "\n") * 80)
        with smtp_client(running) as client:  # declared with SIZE: refused at MAIL
            with pytest.raises(smtplib.SMTPSenderRefused) as caught:
                client.sendmail("dan@example.org", ["bob@localhost"], big)
            assert caught.value.smtp_code == 552
        with smtp_client(running) as client:  # undeclared: refused after DATA
            client.helo()
            assert client.mail("dan@example.org")[0] == 250
            assert client.rcpt("bob@localhost")[0] == 250
            code, _ = client.data(big)
            assert code == 552
        assert running.stored()[0] == 0
        assert_still_answers(running)
    finally:
        stop(running)


@pytest.mark.parametrize(
    ("mail_from", "header_from", "refused_at"),
    [
        ("alice@localhost", "alice@localhost", smtplib.SMTPSenderRefused),  # our own domain
        ("alice@b.test", "alice@b.test", smtplib.SMTPSenderRefused),  # a wsemail domain
        # honest envelope, forged header: refused once the header is read, after DATA
        ("dan@example.org", "alice@localhost", smtplib.SMTPDataError),
        ("dan@example.org", "ceo@b.test", smtplib.SMTPDataError),
    ],
)
def test_gateway_refuses_forged_wsemail_senders(
    gateway: Running, mail_from: str, header_from: str, refused_at: type[smtplib.SMTPException]
) -> None:
    with smtp_client(gateway) as client:
        with pytest.raises(refused_at) as caught:
            client.sendmail(mail_from, ["bob@localhost"], legacy_mail(header_from, "bob@localhost"))
        assert caught.value.smtp_code == 550
        assert b"wsemail domain" in caught.value.smtp_error
    assert gateway.stored()[0] == 0
    assert_still_answers(gateway)


def test_gateway_rate_limits_each_peer(tmp_path: Path) -> None:
    running = start_gateway(tmp_path, rate=2, window=600)
    try:
        mail = legacy_mail("dan@example.org", "bob@localhost")
        with smtp_client(running) as client:
            client.sendmail("dan@example.org", ["bob@localhost"], mail)
            client.sendmail(
                "dan@example.org", ["bob@localhost"], mail.replace(b"legacy-1", b"legacy-2")
            )
            with pytest.raises(smtplib.SMTPSenderRefused) as caught:
                client.sendmail("dan@example.org", ["bob@localhost"], mail)
            assert caught.value.smtp_code == 450
        assert running.stored()[0] == 2
    finally:
        stop(running)


# attachments across the gateway -----------------------------------------------------------
def mail_with_attachments(files: list[tuple[str, bytes, str]], msgid: str = "att-1") -> bytes:
    mail = EmailMessage()
    mail["From"] = "Carol <carol@example.net>"
    mail["To"] = "bob@localhost"
    mail["Subject"] = "Files"
    mail["Date"] = "Tue, 01 Jul 2025 10:00:00 +0000"
    mail["Message-ID"] = f"<{msgid}@example.net>"
    mail.set_content("Two files for you.\n")
    for name, data, media in files:
        maintype, subtype = media.split("/")
        mail.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return mail.as_bytes(policy=policy.SMTP)


def listed(client: Client, message_id: str) -> list[AttachmentRef]:
    """The attachments a mailbox owner's server lists for a message in that mailbox (the
    `List` request of the attachments extension)."""
    request = etree.Element(q("List"))
    element(request, "MessageId", message_id)
    answer = client.extension("attachments", request)
    return [] if answer is None else attachment_refs(answer)


def blob_files(running: Running) -> tuple[list[str], list[str]]:
    root = running.config.data_dir / "attachments"
    return sorted(p.name for p in (root / "blobs").iterdir()), sorted(
        p.name for p in (root / "tmp").iterdir()
    )


def fetch_all(running: Running, user: str, tmp: Path) -> dict[str, bytes]:
    client = running.client(user)
    [header] = client.list_headers().headers
    message = client.retrieve(header.id)
    box = Attachments(client)
    got: dict[str, bytes] = {}
    listing = box.list(header.id)  # the ordinary client path: legacy mail lists via own server
    assert listing.provenance.status == "legacy"
    assert [r.guid for r in listing.refs] == [r.guid for r in listed(client, message.message_id)]
    for ref in listing.refs:
        got[ref.name] = box.fetch(ref, tmp / ref.guid).read_bytes()
    return got


@pytest.mark.both_stores
def test_smtp_mail_with_two_attachments_keeps_both_for_bob(
    gateway: Running, tmp_path: Path
) -> None:
    pdf = b"%PDF-1.4 " + bytes(range(256)) * 40
    png = b"\x89PNG\r\n\x1a\n" + b"\x00\xff" * 3000
    with smtp_client(gateway) as client:
        refused = client.sendmail(
            "carol@example.net",
            ["bob@localhost"],
            mail_with_attachments(
                [("report.pdf", pdf, "application/pdf"), ("chart.png", png, "image/png")]
            ),
        )
    assert refused == {}
    bob = gateway.client("bob@localhost")
    [header] = bob.list_headers().headers
    proof, message = bob.verify(bob.retrieve(header.id))
    assert proof.status == "legacy"
    assert "[attachment: report.pdf (application/pdf, 10249 bytes)]" in message.body
    refs = sorted(listed(bob, message.message_id), key=lambda r: r.name, reverse=True)
    assert [(r.name, r.media_type, r.size) for r in refs] == [
        ("report.pdf", "application/pdf", len(pdf)),
        ("chart.png", "image/png", len(png)),
    ]
    assert [r.sha256 for r in refs] == [hashlib.sha256(d).hexdigest() for d in (pdf, png)]
    assert all(r.server == "localhost" and r.url == gateway.url for r in refs)
    assert fetch_all(gateway, "bob@localhost", tmp_path) == {"report.pdf": pdf, "chart.png": png}
    assert listed(gateway.client("carol@localhost"), message.message_id) == []  # not hers
    if gateway.config.store_url:  # the bytes are chunk rows every node reads
        stored = gateway.controller.server.store.transact_sync(
            lambda tx: sorted({r[0] for r in tx.conn.execute("SELECT guid FROM attachment_chunks")})
        )
        assert stored == sorted(r.guid for r in refs)
    else:
        assert blob_files(gateway) == (sorted(r.guid for r in refs), [])


def test_traversal_file_names_are_harmless(gateway: Running, tmp_path: Path) -> None:
    evil = b"#!/bin/sh\necho owned\n"
    with smtp_client(gateway) as client:
        client.sendmail(
            "carol@example.net",
            ["bob@localhost"],
            mail_with_attachments(
                [
                    ("../../../../tmp/evil.sh", evil, "application/x-sh"),
                    ("..\\..\\boot.ini", b"[boot]", "application/octet-stream"),
                    ("..", b"dots", "application/octet-stream"),
                ]
            ),
        )
    bob = gateway.client("bob@localhost")
    [header] = bob.list_headers().headers
    refs = listed(bob, bob.retrieve(header.id).message_id)
    assert sorted(r.name for r in refs) == ["attachment", "boot.ini", "evil.sh"]
    blobs, tmp = blob_files(gateway)
    assert blobs == sorted(r.guid for r in refs) and tmp == []
    assert all(len(name) == 32 and set(name) <= set("0123456789abcdef") for name in blobs)
    assert not (tmp_path.parent / "evil.sh").exists()
    assert fetch_all(gateway, "bob@localhost", tmp_path)["evil.sh"] == evil


def test_oversized_attachment_refuses_the_message_and_stores_nothing(tmp_path: Path) -> None:
    running = start_gateway(tmp_path, max_attachment_bytes=4000)
    try:
        data = mail_with_attachments(
            [
                ("small.bin", b"s" * 100, "application/octet-stream"),
                ("big.bin", b"b" * 5000, "application/octet-stream"),
            ]
        )
        with smtp_client(running) as client:
            with pytest.raises(smtplib.SMTPDataError) as caught:
                client.sendmail("carol@example.net", ["bob@localhost"], data)
        assert caught.value.smtp_code == 552 and b"5.3.4" in caught.value.smtp_error
        assert running.stored() == (0, 0)
        assert running.count("SELECT count(*) FROM attachment_blobs") == 0
        assert blob_files(running) == ([], [])
        assert_still_answers(running)
    finally:
        stop(running)


def test_refused_delivery_removes_the_attachment_files(tmp_path: Path) -> None:
    """Refused inside the unit of work, after the files were written: a bounce-style mail
    (MAIL FROM:<>, no From header) from a peer calling itself "localhost" would land under
    mailer-daemon@localhost, which the delivery check refuses; no file and no row remain."""
    running = start_gateway(tmp_path)
    try:
        mail = mail_with_attachments([("a.bin", b"a" * 300, "application/octet-stream")])
        mail = mail.replace(b"From: Carol <carol@example.net>\r\n", b"")
        host, port = inbound_plugin(running).address
        with smtplib.SMTP(host, port, local_hostname="localhost", timeout=10) as client:
            with pytest.raises(smtplib.SMTPDataError) as caught:
                client.sendmail("", ["bob@localhost"], mail)
        assert caught.value.smtp_code == 550 and b"local sender" in caught.value.smtp_error
        assert running.stored() == (0, 0)
        assert running.count("SELECT count(*) FROM attachment_blobs") == 0
        assert blob_files(running) == ([], [])
        assert_still_answers(running)
    finally:
        stop(running)


def test_a_reused_message_id_never_joins_another_messages_attachments(gateway: Running) -> None:
    first = mail_with_attachments([("one.txt", b"one", "text/plain")], msgid="same")
    second = mail_with_attachments([("two.txt", b"two", "text/plain")], msgid="same")
    with smtp_client(gateway) as client:
        client.sendmail("carol@example.net", ["bob@localhost"], first)
        client.sendmail("dan@example.org", ["bob@localhost"], second)
    bob = gateway.client("bob@localhost")
    ids = [bob.retrieve(h.id).message_id for h in bob.list_headers().headers]
    assert len(set(ids)) == 2 and "<same@example.net>" in ids
    assert sorted([r.name for r in listed(bob, i)] for i in ids) == [["one.txt"], ["two.txt"]]


# outbound ---------------------------------------------------------------------------------
def dkim_txt(data_dir: Path) -> bytes:
    """The DKIM record as `wsemail domain dns` prints it, as a DNS answer would carry it."""
    result = CliRunner().invoke(
        domain_cli.app, ["dns", "--data-dir", str(data_dir), "--domain", "localhost"]
    )
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if "._domainkey." in x)
    assert line.startswith("wsemail._domainkey.localhost. ")
    return "".join(line.split('"')[1::2]).encode()


@pytest.mark.both_stores
def test_mail_to_a_domain_without_srv_goes_out_by_smtp_dkim_signed(
    gateway: Running, sink: tuple[Sink, int]
) -> None:
    received = sink[0]
    gateway.client().send(
        ["dave@legacy.test"], "Über SMTP", "Hello legacy world\n", cc=["bob@localhost"]
    )
    wait_for(lambda: received.received, "the legacy server to receive the message")
    [envelope] = received.received
    assert envelope.mail_from == "alice@localhost" and envelope.rcpt_tos == ["dave@legacy.test"]
    assert received.tls_sessions == 1  # STARTTLS was offered and used
    data = envelope.original_content
    assert isinstance(data, bytes) and data.startswith(b"DKIM-Signature:")
    record = dkim_txt(gateway.config.data_dir)
    names: list[bytes] = []

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        names.append(name)
        return record if name == b"wsemail._domainkey.localhost." else None

    assert dkim.verify(data, dnsfunc=dnsfunc)
    assert names == [b"wsemail._domainkey.localhost."]
    tampered = data.replace(b"Hello legacy", b"Hello altered")
    assert not dkim.verify(tampered, dnsfunc=dnsfunc)

    from email import message_from_bytes

    parsed = message_from_bytes(data, policy=policy.default)
    assert str(parsed["Subject"]) == "Über SMTP" and str(parsed["Cc"]) == "bob@localhost"
    assert parsed.get_content().replace("\r\n", "\n") == "Hello legacy world\n"
    wait_for(lambda: gateway.count("SELECT count(*) FROM queue") == 0, "the queue to empty")


def test_permanent_smtp_failure_bounces_and_temporary_defers(
    gateway: Running, sink: tuple[Sink, int]
) -> None:
    received = sink[0]
    received.answers = {
        "nobody@legacy.test": "550 5.1.1 no such mailbox",
        "later@legacy.test": "451 4.3.0 try again later",
    }
    alice = gateway.client()
    alice.send(["nobody@legacy.test"], "To nobody")
    wait_for(
        lambda: [h.subject for h in alice.list_headers().headers] == ["Undeliverable: To nobody"],
        "the bounce",
    )
    bounce = alice.retrieve(alice.list_headers().headers[0].id)
    assert "550 5.1.1 no such mailbox" in bounce.body

    alice.send(["later@legacy.test"], "Later")
    wait_for(
        lambda: (
            gateway.count("SELECT coalesce(max(attempts), 0) FROM queue WHERE state='deferred'")
            >= 2
        ),
        "two deferred attempts",
    )
    assert "451" in str(
        gateway.controller.server.store.transact_sync(
            lambda tx: tx.conn.execute("SELECT last_error FROM queue").fetchone()[0]
        )
    )
    assert [h.subject for h in alice.list_headers().headers] == ["Undeliverable: To nobody"]
    received.answers.clear()  # the legacy server recovers: the retry delivers
    wait_for(lambda: gateway.count("SELECT count(*) FROM queue") == 0, "the retry")
    assert [e.rcpt_tos for e in received.received] == [["later@legacy.test"]]


@pytest.mark.both_stores
def test_each_recipient_keeps_its_own_state_in_the_queue(
    gateway: Running, sink: tuple[Sink, int]
) -> None:
    """One message, three answers: 250 is delivered once and never re-sent, 550 bounces,
    451 stays in the durable queue row alone and is retried until the peer takes it."""
    received = sink[0]
    received.answers = {
        "nobody@legacy.test": "550 5.1.1 no such mailbox",
        "later@legacy.test": "451 4.2.1 mailbox busy, try again later",
    }
    alice = gateway.client()
    alice.send(["ok@legacy.test", "later@legacy.test", "nobody@legacy.test"], "Three ways")
    wait_for(lambda: alice.list_headers().headers, "the bounce for nobody@")
    [bounce] = alice.list_headers().headers
    body = alice.retrieve(bounce.id).body
    assert "nobody@legacy.test" in body and "550 5.1.1 no such mailbox" in body
    assert "later@legacy.test" not in body and "ok@legacy.test" not in body
    wait_for(
        lambda: gateway.count("SELECT coalesce(max(attempts), 0) FROM queue") >= 2,
        "two attempts for later@",
    )
    rows = gateway.controller.server.store.transact_sync(
        lambda tx: tx.conn.execute(
            "SELECT recipients_json, state, last_error FROM queue"
        ).fetchall()
    )
    [(recipients, state, error)] = rows
    assert (json.loads(recipients), state) == (["later@legacy.test"], "deferred")
    assert "451 4.2.1 mailbox busy" in error
    assert [e.rcpt_tos for e in received.received] == [["ok@legacy.test"]]  # not re-sent
    received.answers.clear()
    wait_for(lambda: gateway.count("SELECT count(*) FROM queue") == 0, "the retry")
    assert [e.rcpt_tos for e in received.received] == [["ok@legacy.test"], ["later@legacy.test"]]
    assert len(alice.list_headers().headers) == 1  # one bounce, for nobody@ only


def test_unreachable_legacy_domain_defers_and_no_mx_bounces(tmp_path: Path) -> None:
    running = start_gateway(tmp_path, sink_port=9)  # nothing listens on port 9
    try:
        alice = running.client()
        alice.send(["dave@legacy.test"], "Nobody home")
        wait_for(
            lambda: running.count("SELECT count(*) FROM queue WHERE state='deferred'") == 1,
            "a deferral",
        )
        alice.send(["x@nomx.test"], "No MX")
        wait_for(
            lambda: "Undeliverable: No MX" in [h.subject for h in alice.list_headers().headers],
            "the bounce",
        )
    finally:
        stop(running)


def test_domain_dns_prints_the_records_to_publish(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        domain_cli.app,
        ["dns", "--data-dir", str(tmp_path), "--domain", "a.test", "--smtp-ip", "192.0.2.7"],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith('wsemail._domainkey.a.test. 3600 IN TXT "v=DKIM1; k=rsa; p=')
    assert lines[1:] == [
        'a.test. 3600 IN TXT "v=spf1 ip4:192.0.2.7 mx -all"',
        "_wsemail._tcp.a.test. 3600 IN SRV 10 10 443 mail.a.test.",
        "a.test. 3600 IN MX 10 mail.a.test.",
    ]
    again = CliRunner().invoke(
        domain_cli.app, ["dns", "--data-dir", str(tmp_path), "--domain", "a.test"]
    )
    assert again.output.splitlines()[0] == lines[0]  # the key is made once


def test_serve_smtp_port_accepts_internet_mail_for_local_users(tmp_path: Path) -> None:
    """The real `wsemail serve --smtp-port` process: smtplib in, the CLI's client out."""
    import signal
    import smtplib
    import subprocess

    from test_federation_processes import free_port

    from wsemail.client.mail import Client

    from conftest import PASSWORD, wsemail_binary

    data = tmp_path / "data"
    subprocess.run(
        [
            wsemail_binary(),
            "user",
            "add",
            "bob@localhost",
            "--password-stdin",
            "--data-dir",
            str(data),
        ],
        input=PASSWORD + "\n",
        text=True,
        check=True,
        capture_output=True,
        timeout=60,
    )
    port, smtp_port = free_port(), free_port()
    dns = mail_dns(tmp_path, {"example.net": "v=spf1 ip4:127.0.0.1 -all"})
    (data / "server.toml").write_text(
        f'port = {port}\n[dns]\nnameservers = ["127.0.0.1"]\nport = {dns.port}\n'
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [wsemail_binary(), "serve", "--data-dir", str(data), "--smtp-port", str(smtp_port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "serving" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
            smtp.sendmail(
                "someone@example.net",
                ["bob@localhost"],
                b"From: someone@example.net\r\nTo: bob@localhost\r\n"
                b"Subject: From the Internet\r\n\r\nPlain old mail.\r\n",
            )
        with Client(f"http://127.0.0.1:{port}/wsemail", "bob@localhost", PASSWORD) as bob:
            header = bob.list_headers().headers[0]
            proof, message = bob.verify(bob.retrieve(header.id))
        assert message.subject == "From the Internet" and proof.status == "legacy"
        assert proof.reason.endswith("SPF pass (example.net); DMARC none (example.net)")
    finally:
        proc.send_signal(signal.SIGTERM)
        dns.stop()
        assert proc.wait(timeout=20) == 0


def sent_upload(running: Running, tmp: Path, data: bytes, name: str) -> None:
    path = tmp / name
    path.write_bytes(data)
    alice = running.client()
    upload = Attachments(alice).upload(path, media_type="application/pdf")
    alice.send(["dave@legacy.test"], "With a file", "See attached.\n", attachments=[upload.guid])


def received_mail(sink: Sink, running: Running) -> tuple[bytes, EmailMessage]:
    from email import message_from_bytes

    wait_for(lambda: sink.received, "the legacy server to receive the message")
    [envelope] = sink.received
    data = envelope.original_content
    assert isinstance(data, bytes)
    record = dkim_txt(running.config.data_dir)
    assert dkim.verify(data, dnsfunc=lambda name, timeout=5: record)
    parsed = message_from_bytes(data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return data, parsed


def test_attachment_goes_out_by_smtp_as_a_mime_part_dkim_signed(
    gateway: Running, sink: tuple[Sink, int], tmp_path: Path
) -> None:
    pdf = b"%PDF-1.7 " + bytes(range(256)) * 64
    sent_upload(gateway, tmp_path, pdf, "plan.pdf")
    _, parsed = received_mail(sink[0], gateway)
    assert parsed.is_multipart() and parsed.get_content_type() == "multipart/mixed"
    [part] = list(parsed.iter_attachments())
    assert part.get_filename() == "plan.pdf" and part.get_content_type() == "application/pdf"
    assert part.get_payload(decode=True) == pdf
    body = parsed.get_body(preferencelist=("plain",))
    assert body is not None and "See attached." in str(body.get_content())
    wait_for(lambda: gateway.count("SELECT count(*) FROM queue") == 0, "the queue to empty")


def test_attachment_above_the_threshold_goes_out_as_a_link(
    tmp_path: Path, sink: tuple[Sink, int]
) -> None:
    running = start_gateway(tmp_path, sink[1], outbound={"attach_max_bytes": 1000})
    try:
        big = b"x" * 5000
        sent_upload(running, tmp_path, big, "big.pdf")
        _, parsed = received_mail(sink[0], running)
        assert list(parsed.iter_attachments()) == []
        text = str(parsed.get_content()).replace("\r\n", "\n")
        assert "big.pdf (application/pdf, 5000 bytes)" in text
        assert hashlib.sha256(big).hexdigest() in text and running.url in text
    finally:
        stop(running)
