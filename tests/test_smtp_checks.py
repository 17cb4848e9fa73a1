"""What the SMTP gateway checks on legacy mail, against records served by a real DNS server
(dnsmasq on loopback): SPF (pyspf, RFC 7208 limits), DKIM (pass, fail, a tampered body,
a key that is not a key, a DNS timeout), DMARC (policy, organisational domain, alignment),
and how hostile content is read (malformed HTML, 10 MB of nesting, non-UTF-8 parts). Every
outcome is a recorded result or a temporary 451: never a traceback, never a permanent
refusal for a temporary cause."""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from test_smtp import assert_still_answers, smtp_client, start_gateway, stop

from wsemail.server.smtp import dkim_keys, spf
from wsemail.server.smtp.mime import MAX_HTML
from wsemail.server.smtp.mx import MailDns

from conftest import Running, wait_for

LONG_SPF = "v=spf1 " + " ".join(f"ip4:192.0.2.{i}" for i in range(1, 45)) + " ip4:127.0.0.1 -all"
BAD_KEY = "v=DKIM1; k=rsa; p=bm90IGEga2V5IGF0IGFsbA=="  # base64 of "not a key at all"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="module")
def blackhole() -> Iterator[int]:
    """A UDP port that takes DNS queries and never answers (a DNS timeout)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, keys: Path, blackhole: int) -> Iterator[Running]:
    key = dkim_keys.ensure_key(keys, "signed.example")
    txt = {
        "signed.example": "v=spf1 ip4:127.0.0.1 -all",
        "wsemail._domainkey.signed.example": dkim_keys.public_record(key),
        "_dmarc.signed.example": "v=DMARC1; p=reject",
        "spoof.example": "v=spf1 ip4:192.0.2.1 -all",
        "_dmarc.spoof.example": "v=DMARC1; p=reject",
        "orgfall.example": "v=spf1 -all",
        "mail.orgfall.example": "v=spf1 ip4:127.0.0.1 -all",
        "_dmarc.orgfall.example": "v=DMARC1; p=reject; sp=quarantine; aspf=r",
        "badkey.example": "v=spf1 ip4:127.0.0.1 -all",
        "wsemail._domainkey.badkey.example": BAD_KEY,
        "loop.example": "v=spf1 include:loop2.example -all",
        "loop2.example": "v=spf1 include:loop.example -all",
        "long.example": LONG_SPF,
        "void.example": "v=spf1 a:n1.void.example a:n2.void.example a:n3.void.example -all",
    }
    running = start_gateway(
        tmp_path_factory.mktemp("gw"),
        txt=txt,
        dns_options=("--log-queries", f"--server=/slow.example/127.0.0.1#{blackhole}"),
    )
    yield running
    stop(running)


def mail(sender: str, subject: str, body: str = "Hello Bob\n", **headers: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "bob@localhost"
    message["Subject"] = subject
    message["Message-ID"] = f"<{subject.replace(' ', '-')}@test>"
    for name, value in headers.items():
        message[name] = value
    message.set_content(body)
    return message


def deliver(running: Running, mail_from: str, data: bytes) -> None:
    with smtp_client(running) as client:
        assert client.sendmail(mail_from, ["bob@localhost"], data) == {}


def received(running: Running, subject: str) -> tuple[str, str | None, str]:
    """(provenance reason, DMARC, body) of the message `subject` in bob's inbox."""
    bob = running.client("bob@localhost")
    wait_for(lambda: subject in [h.subject for h in bob.list_headers().headers], subject)
    header = next(h for h in bob.list_headers().headers if h.subject == subject)
    proof, message = bob.verify(bob.retrieve(header.id))
    assert proof.status == "legacy"
    return proof.reason, proof.dmarc, message.body


def signed(keys: Path, message: EmailMessage) -> bytes:
    key = dkim_keys.ensure_key(keys, "signed.example")
    return dkim_keys.sign(message.as_bytes(), "signed.example", key)


# SPF, DKIM and DMARC ---------------------------------------------------------------------
def test_signed_aligned_mail_passes_spf_dkim_and_dmarc(gw: Running, keys: Path) -> None:
    deliver(gw, "carol@signed.example", signed(keys, mail("carol@signed.example", "All pass")))
    reason, dmarc, _ = received(gw, "All pass")
    assert reason == (
        "received by SMTP from 127.0.0.1; DKIM pass (d=signed.example); "
        "SPF pass (signed.example); DMARC pass (signed.example, p=reject)"
    )
    assert dmarc == "pass"


def test_tampered_body_fails_dkim_and_dmarc_still_passes_on_aligned_spf(
    gw: Running, keys: Path
) -> None:
    data = signed(keys, mail("carol@signed.example", "Tampered", "Pay 10 EUR\n"))
    deliver(gw, "carol@signed.example", data.replace(b"Pay 10 EUR", b"Pay 99 EUR"))
    reason, dmarc, body = received(gw, "Tampered")
    assert "DKIM fail (d=signed.example)" in reason and "SPF pass (signed.example)" in reason
    assert body.strip() == "Pay 99 EUR" and dmarc == "pass"


def test_forged_from_fails_spf_and_dmarc_and_is_shown_as_such(gw: Running) -> None:
    deliver(gw, "ceo@spoof.example", mail("ceo@spoof.example", "Wire money").as_bytes())
    reason, dmarc, _ = received(gw, "Wire money")
    assert reason == (
        "received by SMTP from 127.0.0.1; DKIM none; SPF fail (spoof.example); "
        "DMARC fail (spoof.example, p=reject)"
    )
    assert dmarc == "fail"


def test_dmarc_policy_of_the_organisational_domain_applies_to_subdomains(gw: Running) -> None:
    deliver(gw, "x@mail.orgfall.example", mail("x@mail.orgfall.example", "Subdomain").as_bytes())
    reason, dmarc, _ = received(gw, "Subdomain")
    assert "SPF pass (mail.orgfall.example)" in reason
    assert "DMARC pass (mail.orgfall.example, p=quarantine)" in reason and dmarc == "pass"


def test_no_dmarc_policy_is_none(gw: Running) -> None:
    deliver(gw, "dan@nopolicy.example", mail("dan@nopolicy.example", "No policy").as_bytes())
    reason, dmarc, _ = received(gw, "No policy")
    assert reason.endswith("DKIM none; SPF none (nopolicy.example); DMARC none (nopolicy.example)")
    assert dmarc == "none"


def test_a_dkim_key_that_is_not_a_key_is_permerror(gw: Running) -> None:
    message = mail("eve@badkey.example", "Bad key")
    key = dkim_keys.ensure_key(gw.config.data_dir / "other", "badkey.example")
    deliver(gw, "eve@badkey.example", dkim_keys.sign(message.as_bytes(), "badkey.example", key))
    reason, dmarc, _ = received(gw, "Bad key")
    assert "DKIM permerror (d=badkey.example)" in reason and "SPF pass" in reason
    assert dmarc == "none"


def test_dns_timeout_fetching_a_dkim_key_is_a_temporary_451(gw: Running) -> None:
    before = gw.stored()
    message = mail("eve@slow.example", "Slow DNS")
    key = dkim_keys.ensure_key(gw.config.data_dir / "other", "slow.example")
    data = dkim_keys.sign(message.as_bytes(), "slow.example", key)
    with smtp_client(gw) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("eve@slow.example", ["bob@localhost"], data)
    assert refused.value.smtp_code == 451
    assert refused.value.smtp_error.startswith(b"4.4.3 cannot check")
    assert gw.stored() == before
    assert_still_answers(gw)


def test_spf_include_loop_is_permerror_within_ten_lookups(gw: Running) -> None:
    deliver(gw, "x@loop.example", mail("x@loop.example", "Loop").as_bytes())
    reason, _, _ = received(gw, "Loop")
    assert "SPF permerror (loop.example)" in reason
    log = (gw.dns.log).read_text()  # type: ignore[attr-defined]
    lookups = [line for line in log.splitlines() if "query[TXT] loop" in line]
    assert 2 <= len(lookups) <= 11


def test_spf_void_lookups_beyond_two_are_permerror(gw: Running) -> None:
    deliver(gw, "x@void.example", mail("x@void.example", "Void").as_bytes())
    reason, _, _ = received(gw, "Void")
    assert "SPF permerror (void.example)" in reason


def test_a_600_character_spf_record_in_several_strings_is_read_whole(gw: Running) -> None:
    assert len(LONG_SPF) > 600
    deliver(gw, "x@long.example", mail("x@long.example", "Long").as_bytes())
    reason, _, _ = received(gw, "Long")
    assert "SPF pass (long.example)" in reason


@pytest.mark.parametrize(
    ("ip", "sender", "expected"),
    [
        ("::ffff:127.0.0.1", "x@signed.example", "pass"),  # an IPv4-mapped IPv6 peer
        ("127.0.0.1", "x@mx24.example", "pass"),  # mx/24
        ("127.0.1.1", "x@mx24.example", "fail"),
        ("127.0.0.1", "x@ptr.example", "pass"),  # ptr
        ("127.0.0.2", "x@ptr.example", "fail"),
    ],
)
def test_spf_mechanisms_through_real_dns(
    tmp_path: Path, ip: str, sender: str, expected: str
) -> None:
    from test_smtp import mail_dns

    dns = mail_dns(
        tmp_path,
        {
            "signed.example": "v=spf1 ip4:127.0.0.1 -all",
            "mx24.example": "v=spf1 mx/24 -all",
            "ptr.example": "v=spf1 ptr -all",
        },
        "--mx-host=mx24.example,mail.mx24.example,10",
        "--host-record=mail.mx24.example,127.0.0.9",
        "--ptr-record=1.0.0.127.in-addr.arpa,host.ptr.example",
        "--host-record=host.ptr.example,127.0.0.1",
    )
    try:
        resolver = MailDns(nameservers=["127.0.0.1"], port=dns.port, timeout=2)
        result = spf.check(resolver, ip, sender, "helo.example")
        assert (result.result, result.domain) == (expected, sender.split("@")[1])
    finally:
        dns.stop()


# content ---------------------------------------------------------------------------------
def test_malformed_html_gives_its_text_as_far_as_it_goes(gw: Running) -> None:
    message = mail("dan@nopolicy.example", "Unclosed")
    message.set_content(
        '<p>Pay <a href="https://bank.example.net/">your bank</a> <b>now<div><table><tr><td>cell',
        subtype="html",
    )
    deliver(gw, "dan@nopolicy.example", message.as_bytes())
    _, _, body = received(gw, "Unclosed")
    assert body == "Pay [your bank](https://bank.example.net/) now\n\ncell\n"


def test_ten_megabytes_of_nesting_gives_the_text_before_it(gw: Running) -> None:
    lines = ["<p>Before the <a href='https://x.example/'>flood</a></p>"]
    lines += ["<div>" * 150] * 13_000  # 9.75 MB of open elements, no closing tag
    head = (
        "From: dan@nopolicy.example\r\nTo: bob@localhost\r\nSubject: Nesting\r\n"
        "Message-ID: <nesting@test>\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    )
    data = (head + "\r\n".join(lines) + "\r\nthe end\r\n").encode()
    assert len(data) > 9_700_000
    deliver(gw, "dan@nopolicy.example", data)
    _, _, body = received(gw, "Nesting")
    assert body.startswith("Before the [flood](https://x.example/)\n")
    assert body.endswith(f"[HTML cut after {MAX_HTML} characters]\n")


def test_non_utf8_parts_are_decoded_by_their_charset_or_with_replacement(gw: Running) -> None:
    for subject, charset in (("Latin", "iso-8859-1"), ("Unknown charset", "x-no-such-charset")):
        head = (
            f"From: dan@nopolicy.example\r\nTo: bob@localhost\r\nSubject: {subject}\r\n"
            f"Content-Type: text/plain; charset={charset}\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n"
        )
        deliver(gw, "dan@nopolicy.example", head.encode() + b"caf\xe9 cr\xe8me\r\n")
    assert received(gw, "Latin")[2] == "café crème\n"
    assert received(gw, "Unknown charset")[2] == "caf\ufffd cr\ufffdme\n"
