"""Compact provenance on Retrieve (issue 9): a relayed message travels to its reader with
only Origin, Destination, the recipients and the sending server's signature, the
certificate named by digest and fetched once from the reader's own server. Real servers:
two TLS domains on loopback (`fed` from test_federation)."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree
from test_federation import Federation, start_domain

from wsemail.client.mail import Client
from wsemail.pki import create_root, issue_server, write_crl
from wsemail.protocol.dsig import DSIG11
from wsemail.protocol.message import Message
from wsemail.protocol.soap import q

from conftest import PASSWORD, Running, inbox, wait_for

BODY = "compact provenance " * 54  # 1,026 bytes


class Recording(httpx.HTTPTransport):
    """A real HTTP transport that keeps every exchange (request body, response)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.exchanges: list[tuple[bytes, httpx.Response]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        response.read()
        self.exchanges.append((request.content, response))
        return response

    def calls(self, operation: bytes) -> list[httpx.Response]:
        return [r for body, r in self.exchanges if b"<w:" + operation in body]


def wire_size(response: httpx.Response) -> int:
    """HTTP/1.1 bytes of an answer: status line, header lines, blank line, body."""
    head = len(f"HTTP/1.1 {response.status_code} {response.reason_phrase}\r\n")
    head += sum(len(k) + 2 + len(v) + 2 for k, v in response.headers.raw)
    return head + 2 + len(response.content)


def reader(
    running: Running, ca: Path, user: str, *, trusting: bool = True
) -> tuple[Client, Recording]:
    transport = Recording(verify=ssl.create_default_context(cafile=str(ca / "root.pem")))
    client = Client(
        running.url,
        user,
        PASSWORD,
        transport=transport,
        trust_roots=[ca / "root.pem"] if trusting else None,
        tls_name=running.config.domain,
    )
    running.clients.append(client)
    return client, transport


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[Federation]:
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    servers = {d: start_domain(tmp_path, ca, d) for d in ("a.test", "b.test")}
    federation = Federation(ca, servers)
    federation.route_all()
    yield federation
    for running in servers.values():
        running.stop()


def relayed(fed: Federation, count: int = 1) -> list[str]:
    """alice@a.test sends bob@b.test `count` 1 KB messages; their ids in bob's inbox."""
    alice = fed.a.client("alice@a.test")
    for n in range(count):
        alice.send(["bob@b.test"], f"relayed {n}", BODY)
    wait_for(lambda: len(inbox(fed.b, "bob@b.test")) == count, "the relayed copies")
    return [h.id for h in fed.b.client("bob@b.test").list_headers().headers]


def test_a_relayed_1kb_retrieve_is_under_3kb_and_verifies(fed: Federation) -> None:
    [message_id] = relayed(fed)
    # as the test bed measures it: the answer itself, without a signed-answer header
    bob, wire = reader(fed.b, fed.ca, "bob@b.test", trusting=False)
    message = bob.retrieve(message_id)
    [answer] = wire.calls(b"Retrieve")
    assert wire_size(answer) < 3000, wire_size(answer)
    assert b"X509Certificate" not in answer.content and b"X509Digest" in answer.content
    assert answer.content.count(BODY.encode()) == 1  # the body travels once
    bob.trust_roots = [fed.ca / "root.pem"]
    proof, trusted = bob.verify(message)
    assert (proof.status, proof.signer) == ("verified", "a.test"), proof.reason
    assert trusted.body == BODY and trusted.sender == "alice@a.test"


def _compact(message: Message) -> etree._Element:
    assert message.signed_xml is not None
    root = etree.fromstring(message.signed_xml)
    assert root.tag == q("CompactProvenance")
    return root


def test_a_tampered_compact_provenance_reads_failed(fed: Federation) -> None:
    [message_id] = relayed(fed)
    bob, _ = reader(fed.b, fed.ca, "bob@b.test")
    message = bob.retrieve(message_id)

    def failed(changed: Message) -> str:
        proof, shown = bob.verify(changed)
        assert proof.status == "failed", proof
        return proof.reason

    failed(replace(message, body=BODY.replace("compact", "Compact", 1)))
    failed(replace(message, subject="relayed 1"))
    failed(replace(message, sender="mallory@a.test"))
    for tag, value in (("Recipient", "carol@b.test"), ("Origin", "c.test")):
        root = _compact(message)
        node = root.find(q(tag))
        assert node is not None
        node.text = value
        failed(replace(message, signed_xml=etree.tostring(root)))
    # a digest this server never saw: the server answers NotFound, the check fails
    root = _compact(message)
    digest = root.find(f".//{{{DSIG11}}}X509Digest")
    assert digest is not None
    digest.text = base64.b64encode(b"\x01" * 32).decode()
    assert "digest" in failed(replace(message, signed_xml=etree.tostring(root)))
    # the untouched message still verifies
    assert bob.verify(message)[0].status == "verified"


def test_a_server_answering_another_certificate_is_caught(fed: Federation, tmp_path: Path) -> None:
    [message_id] = relayed(fed)
    other = tmp_path / "c-identity"
    issue_server(fed.ca, "c.test", other)
    cert = x509.load_pem_x509_certificate((other / "server.pem").read_bytes())
    der = cert.public_bytes(serialization.Encoding.DER)
    fed.b.controller.server.store.transact_sync(
        lambda tx: tx.conn.execute("UPDATE certificates SET der=?", (der,))
    )
    bob, _ = reader(fed.b, fed.ca, "bob@b.test")
    proof, _ = bob.verify(bob.retrieve(message_id))
    assert proof.status == "failed" and "another certificate" in proof.reason
    assert fed.b.client("bob@b.test").list_headers().headers  # the server still answers


def test_the_certificate_is_fetched_once_for_many_messages(fed: Federation) -> None:
    ids = relayed(fed, 5)
    assert fed.b.count("SELECT count(*) FROM certificates") == 1
    bob, wire = reader(fed.b, fed.ca, "bob@b.test")
    for message_id in ids:
        proof, _ = bob.verify(bob.retrieve(message_id))
        assert proof.status == "verified", proof.reason
    assert len(wire.calls(b"GetCertificate")) == 1
    # a record kept before certificates were stored: Retrieve puts it back, still verified
    fed.b.controller.server.store.transact_sync(
        lambda tx: tx.conn.execute("DELETE FROM certificates")
    )
    fresh, wire = reader(fed.b, fed.ca, "bob@b.test")
    assert fresh.verify(fresh.retrieve(ids[0]))[0].status == "verified"
    assert len(wire.calls(b"GetCertificate")) == 1


def test_odd_text_survives_the_rebuild(fed: Federation) -> None:
    body = "héllo\r\nwörld ✓ <tag> & \t tab\n\n  trailing  "
    fed.a.client("alice@a.test").send(
        ["bob@b.test"], "ünïcode & <signs>", body, cc=["carol@a.test"]
    )
    wait_for(lambda: inbox(fed.b, "bob@b.test"), "the relayed copy")
    bob, _ = reader(fed.b, fed.ca, "bob@b.test")
    proof, shown = bob.verify(bob.retrieve(bob.list_headers().headers[0].id))
    assert proof.status == "verified", proof.reason
    assert (shown.body, shown.subject, shown.cc) == (body, "ünïcode & <signs>", ["carol@a.test"])
