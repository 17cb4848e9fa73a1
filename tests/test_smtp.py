"""The SMTP gateway with real SMTP peers on loopback: Python's smtplib into our listener,
our outbound delivery into a real aiosmtpd server, DKIM checked by dkimpy, and every way
the gateway refuses to become a relay or a spoofing channel."""

from __future__ import annotations

import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dkim
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from typer.testing import CliRunner

from wsemail.cli import domain as domain_cli
from wsemail.server.config import DEFAULT_PLUGINS
from wsemail.server.pipeline import PluginSpec
from wsemail.server.routing import StaticResolver
from wsemail.server.smtp import dkim_keys
from wsemail.server.smtp.plugins import SmtpInbound

from certs import make_tls_files
from conftest import Cli, Running, start_server

INBOUND = "wsemail.server.smtp.plugins:SmtpInbound"
OUTBOUND = "wsemail.server.smtp.plugins:SmtpOutbound"


def wait_for(condition: Callable[[], object], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


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


def start_gateway(tmp: Path, sink_port: int | None = None, **inbound: Any) -> Running:
    """A localhost server with both SMTP plug-ins; b.test is a federated wsemail domain."""
    txt = inbound.pop("txt", {})
    plugins = [
        *DEFAULT_PLUGINS,
        PluginSpec(INBOUND, 50, {"port": 0, "use_dns": False, "txt": txt, **inbound}),
        PluginSpec(
            OUTBOUND,
            60,
            {
                "mx": {"legacy.test": [f"127.0.0.1:{sink_port or 9}"]},
                "use_dns": False,
                "timeout": 5,
            },
        ),
    ]
    running = start_server(
        tmp / "server", plugins=plugins, retry_base=0.2, retry_max=0.5, relay_poll=0.1
    )
    federation = running.controller.server.federation
    assert federation is not None
    federation.resolver = StaticResolver({"b.test": ["https://127.0.0.1:9/wsemail"]})
    return running


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


@pytest.fixture
def gateway(tmp_path: Path, sink: tuple[Sink, int]) -> Iterator[Running]:
    running = start_gateway(tmp_path, sink[1])
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
        assert "DKIM pass (d=example.net)" in proof.reason and "SPF pass" in proof.reason
        assert "NOT signed by a wsemail server" in str(proof)
        shown = Cli(running, tmp_path)("retrieve", header.id, user="bob@localhost").stdout
        assert "Provenance: legacy email, NOT signed by a wsemail server" in shown
    finally:
        stop(running)


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


def test_gateway_refuses_relaying_and_unknown_users_at_rcpt(gateway: Running) -> None:
    with smtp_client(gateway) as client:
        client.ehlo()
        assert client.mail("dan@example.org")[0] == 250
        code, text = client.rcpt("eve@elsewhere.test")
        assert code == 550 and b"relaying denied" in text
        code, text = client.rcpt("nobody@localhost")
        assert code == 550 and b"5.1.1" in text
        client.rset()
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail(
                "dan@example.org",
                ["eve@elsewhere.test", "nobody@localhost"],
                legacy_mail("dan@example.org", "eve@elsewhere.test"),
            )
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
    ("mail_from", "header_from"),
    [
        ("alice@localhost", "alice@localhost"),  # our own domain
        ("alice@b.test", "alice@b.test"),  # a federated wsemail domain
        ("dan@example.org", "alice@localhost"),  # honest envelope, forged header
        ("dan@example.org", "ceo@b.test"),
    ],
)
def test_gateway_refuses_forged_wsemail_senders(
    gateway: Running, mail_from: str, header_from: str
) -> None:
    with smtp_client(gateway) as client:
        with pytest.raises((smtplib.SMTPSenderRefused, smtplib.SMTPDataError)) as caught:
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
    assert parsed.get_content().replace("\r\n", "\n") == "Hello legacy world\n"  # type: ignore[attr-defined]
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

    from wsemail.client import Client

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
    (data / "server.toml").write_text(f"port = {port}\n")
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
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
