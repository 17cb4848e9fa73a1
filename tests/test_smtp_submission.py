"""SMTP submission (RFC 6409) for legacy mail programs: Python's smtplib logs in with AUTH
after STARTTLS and sends through real wsemail servers on loopback; the mail takes the path
of a SOAP Send (local delivery, signed relay to another wsemail domain); every refusal
leaves nothing stored and the server still answers."""

from __future__ import annotations

import base64
import json
import os
import signal
import smtplib
import ssl
import subprocess
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dkim
import pytest
from test_federation import Federation, start_domain
from test_federation_processes import free_port, run
from test_smtp import Sink, attachments_plugin, mail_dns, sink

__all__ = ["sink"]  # the legacy SMTP server fixture, shared with test_smtp

from wsemail.client.attachments import Attachments
from wsemail.pki import create_root, write_crl
from wsemail.protocol.errors import PluginError, RateLimited
from wsemail.server.accounts import set_user
from wsemail.server.config import DEFAULT_PLUGINS
from wsemail.server.pipeline import PluginSpec
from wsemail.server.smtp import dkim_keys
from wsemail.server.smtp.plugins import SmtpSubmission

from conftest import PASSWORD, Running, inbox, start_server, wait_for, wsemail_binary

SUBMISSION = "wsemail.server.smtp.plugins:SmtpSubmission"


def with_submission(**options: Any) -> list[PluginSpec]:
    return [*DEFAULT_PLUGINS, PluginSpec(SUBMISSION, 55, {"port": 0, **options})]


def submission_plugin(running: Running) -> SmtpSubmission:
    for entry in running.controller.server.pipeline.listing():
        if isinstance(entry.plugin, SmtpSubmission):
            return entry.plugin
    raise AssertionError("smtp-submission is not loaded")


def connect(running: Running, ca: Path, *, tls: bool = True) -> smtplib.SMTP:
    """smtplib on the submission port, after STARTTLS checked against the federation root
    (the certificate names the mail domain, not 127.0.0.1: the chain is what is checked)."""
    host, port = submission_plugin(running).address
    client = smtplib.SMTP(host, port, timeout=10)
    client.ehlo("mua.example")
    if tls:
        context = ssl.create_default_context(cafile=str(ca / "root.pem"))
        context.check_hostname = False
        client.starttls(context=context)
        client.ehlo("mua.example")
    return client


def auth(client: smtplib.SMTP, user: str, password: str, mechanism: str = "PLAIN") -> None:
    """One AUTH attempt (smtplib's `login` tries every mechanism in turn)."""
    client.user, client.password = user, password
    method = client.auth_plain if mechanism == "PLAIN" else client.auth_login
    client.auth(mechanism, method, initial_response_ok=mechanism == "PLAIN")


def mail(sender: str, to: list[str], subject: str, body: str, cc: list[str] | None = None) -> bytes:
    message = EmailMessage()
    message["From"] = f"Alice <{sender}>"
    message["To"] = ", ".join(to)
    if cc:
        message["Cc"] = ", ".join(cc)
    message["Subject"] = subject
    message["Message-ID"] = f"<{subject.replace(' ', '-').lower()}@mua.example>"
    message.set_content(body)
    return message.as_bytes(policy=policy.SMTP)


def stored(running: Running) -> tuple[int, int, int, int]:
    """(messages, nonces, queue rows, attachment rows): what a refusal leaves unchanged."""
    messages, nonces = running.stored()
    return (
        messages,
        nonces,
        running.count("SELECT count(*) FROM queue"),
        running.count("SELECT count(*) FROM attachment_blobs"),
    )


def assert_still_answers(running: Running, ca: Path) -> None:
    with connect(running, ca) as client:
        assert client.noop()[0] == 250
    assert running.client("bob@a.test").list_headers() is not None


@pytest.fixture
def sub_fed(tmp_path: Path) -> Iterator[Federation]:
    """a.test (with the submission port) and b.test, federated over TLS."""
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    servers = {
        # relay_poll 60: a.test's relay must be woken by the submission (another thread)
        "a.test": start_domain(tmp_path, ca, "a.test", plugins=with_submission(), relay_poll=60.0),
        "b.test": start_domain(tmp_path, ca, "b.test"),
    }
    federation = Federation(ca, servers)
    federation.route_all()
    for running in servers.values():
        running.verify = str(ca / "root.pem")
    yield federation
    for running in servers.values():
        running.stop()


@pytest.fixture
def one(tmp_path: Path) -> Iterator[tuple[Running, Path]]:
    """a.test alone, with a small submission size limit and a low failure limit."""
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    plugins = [  # the listener takes 4 KiB, the Send pipeline's size limit 1 KB
        PluginSpec("size-limit", 20, {"max_bytes": 1000}) if s.ref == "size-limit" else s
        for s in with_submission(max_bytes=4096)
    ]
    running = start_domain(tmp_path, ca, "a.test", plugins=plugins, failures_per_user=3)
    yield running, ca
    running.stop()


def test_mail_program_submits_to_local_and_federated_users(sub_fed: Federation) -> None:
    a, b = sub_fed.a, sub_fed.b
    with connect(a, sub_fed.ca) as client:
        client.login("alice@a.test", PASSWORD)  # smtplib picks AUTH PLAIN
        refused = client.sendmail(
            "alice@a.test",
            ["bob@a.test", "bob@b.test"],
            mail("alice@a.test", ["bob@a.test", "bob@b.test"], "Via Thunderbird", "Hi Bob\n"),
        )
    assert refused == {}
    assert inbox(a, "bob@a.test") == ["Via Thunderbird"]
    wait_for(lambda: inbox(b, "bob@b.test") == ["Via Thunderbird"], "bob@b.test's copy")

    reader = b.client("bob@b.test")
    reader.trust_roots = [sub_fed.ca / "root.pem"]
    proof, message = reader.verify(reader.retrieve(reader.list_headers().headers[0].id))
    assert str(proof) == "signed by a.test ✓"
    assert message.sender == "alice@a.test" and message.body == "Hi Bob\n"
    assert message.to == ["bob@a.test", "bob@b.test"]
    assert message.message_id == "<via-thunderbird@mua.example>"
    local = a.client("bob@a.test")
    local.trust_roots = [sub_fed.ca / "root.pem"]
    proof, _ = local.verify(local.retrieve(local.list_headers().headers[0].id))
    assert proof.status == "local"
    sent = a.client("alice@a.test").list_headers(folder="sent").headers
    assert [h.subject for h in sent] == ["Via Thunderbird"]

    # AUTH LOGIN (the other mechanism mail programs use), Cc kept as Cc
    with connect(a, sub_fed.ca) as client:
        client.user, client.password = "alice@a.test", PASSWORD
        assert client.auth("LOGIN", client.auth_login, initial_response_ok=False)[0] == 235
        client.sendmail(
            "alice@a.test",
            ["carol@a.test", "carol@b.test"],
            mail("alice@a.test", ["carol@a.test"], "Login too", "Hi Carol\n", cc=["carol@b.test"]),
        )
    assert inbox(a, "carol@a.test") == ["Login too"]
    wait_for(lambda: inbox(b, "carol@b.test") == ["Login too"], "carol@b.test's copy")
    got = b.client("carol@b.test")
    message = got.retrieve(got.list_headers().headers[0].id)
    assert (message.to, message.cc) == (["carol@a.test"], ["carol@b.test"])


def test_submission_without_auth_is_refused(one: tuple[Running, Path]) -> None:
    running, ca = one
    before = stored(running)
    with connect(running, ca) as client:
        code, _ = client.mail("alice@a.test")
        assert code == 530
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail(
                "alice@a.test", ["bob@a.test"], mail("alice@a.test", ["bob@a.test"], "x", "y")
            )
        assert refused.value.smtp_code == 530
    assert stored(running) == before
    assert_still_answers(running, ca)


def test_wrong_password_and_unknown_user_get_the_same_answer(one: tuple[Running, Path]) -> None:
    running, ca = one
    before = stored(running)
    answers = set()
    with connect(running, ca) as client:
        for mechanism in ("PLAIN", "LOGIN"):
            for user, password in (("alice@a.test", "wrong password"), ("nobody@a.test", PASSWORD)):
                with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
                    auth(client, user, password, mechanism)
                answers.add((failed.value.smtp_code, failed.value.smtp_error))
    assert answers == {(535, b"5.7.8 Authentication credentials invalid")}
    assert stored(running) == before
    status = running.client("admin@a.test").extension("smtp-submission")
    assert status is not None
    counts = {k: status.get(k) for k in ("submitted", "refused", "authFailed")}
    assert counts == {"submitted": "0", "refused": "0", "authFailed": "4"}
    assert_still_answers(running, ca)


def test_failed_auth_is_rate_limited_per_user_like_soap(one: tuple[Running, Path]) -> None:
    running, ca = one
    with connect(running, ca) as client:
        for _ in range(3):
            with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
                auth(client, "carol@a.test", "wrong password")
            assert failed.value.smtp_code == 535
        # now even the right password waits from this address, over SMTP and SOAP alike
        with pytest.raises(smtplib.SMTPAuthenticationError) as limited:
            auth(client, "carol@a.test", PASSWORD)
        assert limited.value.smtp_code == 454
    with pytest.raises(Exception, match="too many failed"):
        running.client("carol@a.test").list_headers()
    assert_still_answers(running, ca)  # other users are not locked out


def test_auth_before_starttls_is_refused(one: tuple[Running, Path]) -> None:
    running, ca = one
    before = stored(running)
    with connect(running, ca, tls=False) as client:
        assert not client.has_extn("auth") and client.has_extn("starttls")
        token = base64.b64encode(f"\0alice@a.test\0{PASSWORD}".encode()).decode()
        code, reply = client.docmd("AUTH", f"PLAIN {token}")
        assert code == 538 and b"Encryption required" in reply
        assert client.mail("alice@a.test")[0] == 530
    assert stored(running) == before
    assert_still_answers(running, ca)


def test_mail_from_or_header_from_another_address_is_refused(one: tuple[Running, Path]) -> None:
    running, ca = one
    before = stored(running)
    with connect(running, ca) as client:
        client.login("alice@a.test", PASSWORD)
        for sender in ("bob@a.test", "ceo@example.net"):
            with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                client.sendmail(sender, ["bob@a.test"], mail(sender, ["bob@a.test"], "x", "y"))
            assert refused.value.smtp_code == 553
        with pytest.raises(smtplib.SMTPDataError) as forged:
            client.sendmail(
                "alice@a.test", ["bob@a.test"], mail("bob@a.test", ["bob@a.test"], "x", "y")
            )
        assert forged.value.smtp_code == 550 and b"From header" in forged.value.smtp_error
    assert stored(running) == before
    assert_still_answers(running, ca)


def test_oversized_and_unknown_recipients_are_refused(one: tuple[Running, Path]) -> None:
    running, ca = one
    before = stored(running)
    with connect(running, ca) as client:
        client.login("alice@a.test", PASSWORD)
        with pytest.raises(smtplib.SMTPSenderRefused) as too_big:  # SIZE= on MAIL
            client.sendmail(
                "alice@a.test",
                ["bob@a.test"],
                mail("alice@a.test", ["bob@a.test"], "big", "x" * 8000),
            )
        assert too_big.value.smtp_code == 552
        client.rset()
        with pytest.raises(smtplib.SMTPDataError) as over_limit:  # the size-limit processor
            client.sendmail(
                "alice@a.test",
                ["bob@a.test"],
                mail("alice@a.test", ["bob@a.test"], "big", "x" * 2000),
            )
        assert (
            over_limit.value.smtp_code == 552
            and b"exceeds the limit" in over_limit.value.smtp_error
        )
        with pytest.raises(smtplib.SMTPRecipientsRefused) as unknown:
            client.sendmail(
                "alice@a.test", ["nobody@a.test"], mail("alice@a.test", ["nobody@a.test"], "x", "y")
            )
        assert unknown.value.recipients["nobody@a.test"][0] == 550
    assert stored(running) == before
    assert_still_answers(running, ca)


def test_submission_to_the_internet_goes_out_by_smtp_with_the_attachment(
    tmp_path: Path, sink: tuple[Sink, int]
) -> None:
    """An Internet recipient takes the queue's SMTP fallback (DKIM-signed); a MIME
    attachment becomes alice's on-demand attachment, attached for dave and fetched by bob."""
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    outbound = PluginSpec("smtp-outbound", 60, {"mx_port": sink[1], "timeout": 5})
    dns = mail_dns(tmp_path)  # legacy.test: no _wsemail._tcp SRV, an MX on loopback
    running = start_domain(
        tmp_path,
        ca,
        "a.test",
        plugins=[*with_submission(), outbound],
        dns_nameservers=["127.0.0.1"],
        dns_port=dns.port,
    )
    try:
        attachments_plugin(running).public_url = running.url  # port 0: known once bound
        pdf = b"%PDF-1.7 " + bytes(range(256)) * 16
        message = EmailMessage()
        message["From"] = "alice@a.test"
        message["To"] = "dave@legacy.test, bob@a.test"
        message["Subject"] = "Plan attached"
        message.set_content("See the plan.\n")
        message.add_attachment(pdf, maintype="application", subtype="pdf", filename="plan.pdf")
        with connect(running, ca) as client:
            client.login("alice@a.test", PASSWORD)
            assert client.send_message(message) == {}

        wait_for(lambda: sink[0].received, "the legacy server to receive the message")
        [envelope] = sink[0].received
        assert envelope.mail_from == "alice@a.test" and envelope.rcpt_tos == ["dave@legacy.test"]
        data = envelope.original_content
        assert isinstance(data, bytes)
        record = dkim_keys.public_record(dkim_keys.ensure_key(running.config.data_dir, "a.test"))
        assert dkim.verify(data, dnsfunc=lambda name, timeout=5: record)
        parsed = message_from_bytes(data, policy=policy.default)
        assert isinstance(parsed, EmailMessage) and str(parsed["Subject"]) == "Plan attached"
        [part] = list(parsed.iter_attachments())
        assert part.get_filename() == "plan.pdf" and part.get_content() == pdf

        bob = running.client("bob@a.test")
        [header] = bob.list_headers().headers
        box = Attachments(bob)
        [ref] = box.list(header.id).refs
        assert (ref.name, ref.media_type, ref.size) == ("plan.pdf", "application/pdf", len(pdf))
        assert box.fetch(ref, tmp_path / "plan.pdf").read_bytes() == pdf
    finally:
        running.stop()
        dns.stop()


def test_refused_submission_with_an_attachment_leaves_no_file(tmp_path: Path) -> None:
    """The relay policy refuses an Internet recipient: the attachment written before the
    Send unit of work is removed again, no row, no message."""
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    plugins = [
        PluginSpec("relay-policy", 10, {"allow": []}) if s.ref == "relay-policy" else s
        for s in with_submission()
    ]
    running = start_domain(tmp_path, ca, "a.test", plugins=plugins)
    try:
        before = stored(running)
        message = EmailMessage()
        message["From"] = "alice@a.test"
        message["To"] = "dave@legacy.test"
        message["Subject"] = "Nope"
        message.set_content("x\n")
        message.add_attachment(b"%PDF", maintype="application", subtype="pdf", filename="a.pdf")
        with connect(running, ca) as client:
            client.login("alice@a.test", PASSWORD)
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.send_message(message)
        assert refused.value.smtp_code == 550 and b"relaying denied" in refused.value.smtp_error
        assert stored(running) == before
        assert list((running.config.data_dir / "attachments" / "blobs").iterdir()) == []
        assert_still_answers(running, ca)
    finally:
        running.stop()


def test_a_submitted_attachment_over_the_users_quota_is_refused(tmp_path: Path) -> None:
    """[quota] per_user_bytes holds for attachments submitted by SMTP too: 552 5.2.2,
    nothing written, no row, no message."""
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    running = start_domain(
        tmp_path, ca, "a.test", plugins=with_submission(), quota_per_user_bytes=1000
    )
    try:
        before = stored(running)
        message = EmailMessage()
        message["From"] = "alice@a.test"
        message["To"] = "bob@a.test"
        message["Subject"] = "Too much"
        message.set_content("x\n")
        message.add_attachment(bytes(1500), maintype="application", subtype="pdf", filename="a.pdf")
        with connect(running, ca) as client:
            client.login("alice@a.test", PASSWORD)
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.send_message(message)
        assert refused.value.smtp_code == 552 and b"attachment quota" in refused.value.smtp_error
        assert stored(running) == before
        assert list((running.config.data_dir / "attachments" / "blobs").iterdir()) == []
        assert_still_answers(running, ca)
    finally:
        running.stop()


def test_insecure_auth_is_for_loopback_tests_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        SmtpSubmission(host="0.0.0.0", insecure_auth=True)  # noqa: S104 -- refused
    running = start_server(tmp_path / "plain", plugins=with_submission(insecure_auth=True))
    try:
        host, port = submission_plugin(running).address
        with smtplib.SMTP(host, port, timeout=10) as client:  # no TLS: loopback and asked for
            client.login("alice@localhost", PASSWORD)
            client.sendmail(
                "alice@localhost",
                ["bob@localhost"],
                mail("alice@localhost", ["bob@localhost"], "Plain", "Hi\n"),
            )
        assert inbox(running, "bob@localhost") == ["Plain"]
    finally:
        running.stop()
    with pytest.raises(PluginError, match="TLS certificate"):
        start_server(tmp_path / "plain2", plugins=with_submission())


def test_serve_submission_port_takes_mail_from_a_mail_program(tmp_path: Path) -> None:
    """The real `wsemail serve --submission-port` process set up with `wsemail ca`:
    smtplib logs in after STARTTLS, the CLI reads the message."""
    ca = tmp_path / "ca"
    run("ca", "init", "--ca-dir", str(ca))
    run("ca", "crl", "--ca-dir", str(ca))
    data = tmp_path / "a.test"
    run("ca", "issue-server", "a.test", "--ca-dir", str(ca), "--out", str(data / "fed"))
    port, submission = free_port(), free_port()
    (data / "server.toml").write_text(
        f'domain = "a.test"\nport = {port}\n'
        '[tls]\ncert = "fed/server.pem"\nkey = "fed/server.key"\n'
        '[federation]\nidentity = "fed"\ntrust_roots = ["fed/root.pem"]\n'
        f'crls = ["{ca / "crl.pem"}"]\n'
    )
    for user in ("alice@a.test", "bob@a.test"):
        run("user", "add", user, "--password-stdin", "--data-dir", str(data), input=PASSWORD + "\n")
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                wsemail_binary(),
                "serve",
                "--data-dir",
                str(data),
                "--submission-port",
                str(submission),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "serving" in log.read_text() or proc.poll() is not None, "serve")
        assert proc.poll() is None, log.read_text()
        context = ssl.create_default_context(cafile=str(ca / "root.pem"))
        context.check_hostname = False
        with smtplib.SMTP("127.0.0.1", submission, timeout=10) as client:
            client.starttls(context=context)
            client.login("alice@a.test", PASSWORD)
            client.sendmail(
                "alice@a.test",
                ["bob@a.test"],
                mail("alice@a.test", ["bob@a.test"], "From a mail program", "Hello Bob\n"),
            )
        env = {
            **os.environ,
            "WSEMAIL_SERVER": f"https://127.0.0.1:{port}/wsemail",
            "WSEMAIL_USER": "bob@a.test",
            "WSEMAIL_PASSWORD": PASSWORD,
            "WSEMAIL_CACERT": str(ca / "root.pem"),
            "WSEMAIL_TLS_NAME": "a.test",
        }
        listed = json.loads(run("list", "--json", env=env))
        assert listed["subject"] == "From a mail program" and listed["from"] == "alice@a.test"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_failed_auth_is_rate_limited_per_peer_across_names(tmp_path: Path) -> None:
    """Guessing many names from one address: the per-peer limit, shared with SOAP."""
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    running = start_domain(tmp_path, ca, "a.test", plugins=with_submission(), failures_per_peer=3)
    try:
        before = stored(running)
        with connect(running, ca) as client:
            for name in ("x@a.test", "y@a.test", "z@a.test"):
                with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
                    auth(client, name, "guess guess")
                assert failed.value.smtp_code == 535
            with pytest.raises(smtplib.SMTPAuthenticationError) as limited:
                auth(client, "alice@a.test", PASSWORD)
            assert limited.value.smtp_code == 454
        assert stored(running) == before
        with pytest.raises(RateLimited):  # the same limit as the SOAP endpoint's
            running.client("bob@a.test").list_headers()
    finally:
        running.stop()


def test_a_password_changed_after_auth_ends_the_right_to_send(one: tuple[Running, Path]) -> None:
    running, ca = one
    with connect(running, ca) as client:
        auth(client, "alice@a.test", PASSWORD)
        client.sendmail(
            "alice@a.test", ["bob@a.test"], mail("alice@a.test", ["bob@a.test"], "1", "a")
        )
        before = stored(running)
        set_user(
            running.controller.server.store,
            "a.test",
            "alice@a.test",
            "another password",
            create=False,
        )
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail(
                "alice@a.test", ["bob@a.test"], mail("alice@a.test", ["bob@a.test"], "2", "b")
            )
        assert refused.value.smtp_code == 554 and b"log in again" in refused.value.smtp_error
    assert stored(running) == before and inbox(running, "bob@a.test") == ["1"]
    assert_still_answers(running, ca)
