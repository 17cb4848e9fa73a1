"""Certificate login and the password MAC go through one authentication path: a replayed
request is refused with the same fault for both, nothing is stored, and both nonces live in
the one durable replay table under the user's address (on a real TLS server)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from lxml import etree
from test_usercerts import Fed, two_domains

from wsemail.client.usercerts import CertificateClient
from wsemail.protocol import soap
from wsemail.protocol.soap import q

from conftest import Running, fault_subcode


@pytest.fixture
def fed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fed]:
    with two_domains(tmp_path, monkeypatch) as federation:
        yield federation


def _send(to: str, subject: str) -> etree._Element:
    op = etree.Element(q("Send"))
    message = etree.SubElement(op, q("Message"))
    for tag, text in (("To", to), ("Subject", subject), ("Body", "hello")):
        etree.SubElement(message, q(tag)).text = text
    return op


def _poster(running: Running) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(running.verify))
    return httpx.Client(
        verify=context, timeout=10, headers={"content-type": "application/soap+xml"}
    )


def test_a_replayed_certificate_request_gets_the_mac_replay_fault_and_stores_nothing(
    fed: Fed,
) -> None:
    a = fed.a
    login = CertificateClient(a.url, fed.key("alice@a.test"), verify=a.verify, tls_name="a.test")
    a.clients.append(login)
    mac = a.client("alice@a.test")
    by_certificate = login.signed_request(_send("bob@a.test", "by certificate"))
    env, header, body = soap.new_envelope()
    body.append(_send("bob@a.test", "by password"))
    mac.credentials.sign(header, body)
    by_password = soap.serialize(env)
    sni = {"sni_hostname": "a.test"}
    with _poster(a) as http:
        for data in (by_certificate, by_password):
            assert http.post(a.url, content=data, extensions=sni).status_code == 200
        before = a.stored()
        faults = []
        for data in (by_certificate, by_password):
            replay = http.post(a.url, content=data, extensions=sni)
            assert b"Traceback" not in replay.content
            faults.append((replay.status_code, fault_subcode(replay)))
        assert faults == [(401, "wsemail:Replay"), (401, "wsemail:Replay")]
        assert a.stored() == before  # no message, no nonce row
    # both first copies were stored once, and both nonces sit in the one replay table
    # under the user's address
    subjects = sorted(h.subject for h in fed.client("bob@a.test").list_headers().headers)
    assert subjects == ["by certificate", "by password"]
    assert a.count("SELECT count(*) FROM nonces WHERE principal='alice@a.test'") >= 2
    assert a.count("SELECT count(*) FROM nonces WHERE principal LIKE 'cert:%'") == 0
    assert login.list_headers("sent").headers  # the server still serves both kinds
    assert mac.list_headers("sent").headers


def test_certificate_login_is_refused_where_only_the_mac_is_taken(fed: Fed) -> None:
    """A CertificateCall is a core request: a plug-in operation that needs the password MAC
    is never reachable through it, and an unknown carried operation is refused."""
    a = fed.a
    login = CertificateClient(a.url, fed.key("alice@a.test"), verify=a.verify, tls_name="a.test")
    a.clients.append(login)
    before = a.stored()
    sni = {"sni_hostname": "a.test"}
    with _poster(a) as http:
        for inner in ("FetchAttachment", "GetSalt", "Deliver"):
            refused = http.post(
                a.url, content=login.signed_request(etree.Element(q(inner))), extensions=sni
            )
            assert refused.status_code == 400, refused.text
            assert fault_subcode(refused) == "wsemail:InvalidRequest"
    assert a.stored() == before
    assert login.list_headers().headers == []
