"""Relayed messages name the sending server's certificate by digest: the Deliver hop
signature embeds it once, each message's own signature names it by dsig11:X509Digest, and
the receiver resolves that digest to the hop's verified certificate only. Per-message
signatures that embed the certificate (older senders) are still taken. Two real TLS
domains on loopback (`start_domain` from test_federation)."""

from __future__ import annotations

import base64
import copy
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from lxml import etree
from test_federation import Federation, assert_refused, post, start_domain, stored

from wsemail.pki import ServerIdentity, create_root, issue_server, write_crl
from wsemail.protocol import soap
from wsemail.protocol.dsig import DS, DSIG11, Signer, cert_digest, reference_certificate
from wsemail.protocol.message import Message
from wsemail.protocol.soap import SOAP, WSSE, q
from wsemail.server.federation import Federation as ServerFederation
from wsemail.server.relay import Relay
from wsemail.server.store import QueueRow

from conftest import Running, inbox, wait_for


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


def federation_of(running: Running) -> ServerFederation:
    federation = running.controller.server.federation
    assert federation is not None
    return federation


def relay_of(running: Running) -> Relay:
    relay = running.controller.server.relay
    assert relay is not None
    return relay


def cert_text(running: Running) -> bytes:
    """The base64 of a server's certificate, as an embedding signature carries it."""
    der = federation_of(running).identity.cert.public_bytes(serialization.Encoding.DER)
    return base64.b64encode(der)


def batch(fed: Federation, subjects: list[str]) -> bytes:
    """The Deliver a.test's relay would send for one message per subject to bob@b.test."""
    rows = []
    for n, subject in enumerate(subjects):
        message = Message(
            id="",
            message_id=f"<{subject}-{time.time_ns()}@a.test>",
            folder="sent",
            sender="alice@a.test",
            to=["bob@b.test"],
            cc=[],
            subject=subject,
            date="2026-11-25T12:00:00Z",
            size=1,
            seen=True,
            body=f"body of {subject}",
        )
        payload = etree.tostring(message.to_xml(etree.Element("holder")))
        rows.append(
            QueueRow(
                n + 1,
                message.message_id,
                "alice@a.test",
                "b.test",
                payload,
                ["bob@b.test"],
                0,
                time.time(),
            )
        )
    return relay_of(fed.a).transaction("b.test", rows)


def resigned(
    fed: Federation, data: bytes, sign: Callable[[int, etree._Element], etree._Element]
) -> bytes:
    """`data` with each message signed again by `sign(index, unsigned form)` and a fresh
    hop signature by a.test's real key."""
    root = etree.fromstring(data)
    op = root.find(f"{q('Body', SOAP)}/{q('Deliver')}")
    security = root.find(f"{q('Header', SOAP)}/{q('Security', WSSE)}")
    assert op is not None and security is not None
    for n, signed in enumerate(op.findall(q("SignedMessage"))):
        form = copy.deepcopy(signed)
        form.remove(form.find(q("Signature", DS)))  # type: ignore[arg-type]
        op.replace(signed, sign(n, form))
    security.remove(security.find(q("Signature", DS)))  # type: ignore[arg-type]
    federation_of(fed.a).signer.sign_envelope_fast(root)
    return soap.serialize(root)


def digests_in(data: bytes) -> list[bytes]:
    root = etree.fromstring(data)
    return [base64.b64decode(node.text or "") for node in root.iter(q("X509Digest", DSIG11))]


def certificates(running: Running) -> int:
    return running.count("SELECT count(*) FROM certificates")


def reads_verified(running: Running, fed: Federation, subjects: list[str]) -> None:
    """bob's client verifies every message (compact provenance, certificate by digest)."""
    bob = running.client("bob@b.test")
    bob.trust_roots = [fed.ca / "root.pem"]
    seen: list[str] = []
    for header in bob.list_headers().headers:
        if header.subject not in subjects:
            continue
        proof, message = bob.verify(bob.retrieve(header.id))
        assert (proof.status, proof.signer) == ("verified", "a.test"), proof.reason
        assert message.sender == "alice@a.test" and message.subject == header.subject
        seen.append(header.subject)
    assert sorted(seen) == sorted(subjects)


def test_a_relayed_batch_carries_the_certificate_once(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    relay = relay_of(fed.a)
    sent: list[bytes] = []
    build = relay.transaction

    def recording(domain: str, rows: list[QueueRow]) -> bytes:
        data = build(domain, rows)
        sent.append(data)  # exactly the bytes the relay posts
        return data

    monkeypatch.setattr(relay, "transaction", recording)
    alice = fed.a.client("alice@a.test")
    for n in range(3):
        alice.send(["bob@b.test"], f"digest {n}")
    wait_for(lambda: len(inbox(fed.b, "bob@b.test")) == 3, "three relayed messages")
    a_cert, a_digest = cert_text(fed.a), cert_digest(federation_of(fed.a).identity.cert)
    assert sent
    for data in sent:
        messages = data.count(b"<w:SignedMessage")
        assert messages >= 1 and data.count(a_cert) == 1  # the hop signature's only
        assert digests_in(data) == [a_digest] * messages

    # a batch of several messages: still one certificate, one digest per message
    subjects = ["many 0", "many 1", "many 2", "many 3"]
    data = batch(fed, subjects)
    assert data.count(a_cert) == 1 and digests_in(data) == [a_digest] * 4
    response = post(fed.b, data)
    assert response.status_code == 200 and response.content.count(b'Status="delivered"') == 4
    # stored as before: the signed form embeds the certificate; GetCertificate knows it
    records = fed.b.controller.server.store.transact_sync(
        lambda tx: [
            r[0]
            for r in tx.conn.execute("SELECT signed_xml FROM messages WHERE owner = 'bob@b.test'")
        ]
    )
    assert len(records) == 7 and all(r.count(a_cert) == 1 for r in records)
    assert all(b"X509Digest" not in r for r in records)
    reads_verified(fed.b, fed, subjects + [f"digest {n}" for n in range(3)])


def test_per_message_signatures_embedding_the_certificate_are_still_taken(
    fed: Federation,
) -> None:
    signer = federation_of(fed.a).signer
    subjects = ["older 0", "older 1"]
    # an older sender: signxml's enveloped signature with the certificate embedded
    data = resigned(fed, batch(fed, subjects), lambda n, form: signer.sign_element(form))
    embedded = list(etree.fromstring(data).iter(q("X509Certificate", DS)))
    assert len(embedded) == 3 and digests_in(data) == []
    response = post(fed.b, data)
    assert response.status_code == 200 and response.content.count(b'Status="delivered"') == 2
    assert sorted(inbox(fed.b, "bob@b.test")) == subjects
    reads_verified(fed.b, fed, subjects)


def _other_a_key(fed: Federation, tmp_path: Path, form: etree._Element) -> etree._Element:
    """Signed by a second valid a.test server certificate, named by its digest."""
    issue_server(fed.ca, "a.test", tmp_path / "a-second")
    other = ServerIdentity.load(tmp_path / "a-second")
    return Signer(other.key, other.cert).sign_element_fast(form, embed=False)


def _b_key(fed: Federation, tmp_path: Path, form: etree._Element) -> etree._Element:
    """Re-signed with b.test's own key, naming b.test's certificate by digest."""
    return federation_of(fed.b).signer.sign_element_fast(form, embed=False)


def _a_key_b_digest(fed: Federation, tmp_path: Path, form: etree._Element) -> etree._Element:
    """Signed with a.test's real key, but naming b.test's certificate by digest."""
    signed = federation_of(fed.a).signer.sign_element_fast(form, embed=False)
    signature = signed.find(q("Signature", DS))
    assert signature is not None
    reference_certificate(signature, federation_of(fed.b).identity.cert)
    return signed


@pytest.mark.parametrize("forge", [_other_a_key, _b_key, _a_key_b_digest])
def test_a_message_naming_another_certificate_is_refused(
    fed: Federation,
    tmp_path: Path,
    forge: Callable[[Federation, Path, etree._Element], etree._Element],
) -> None:
    a_signer = federation_of(fed.a).signer
    before, known = stored(fed.b), certificates(fed.b)
    # the first message is fine, the second names another certificate than the hop's
    data = resigned(
        fed,
        batch(fed, ["fine", "forged"]),
        lambda n, form: (
            a_signer.sign_element_fast(form, embed=False) if n == 0 else forge(fed, tmp_path, form)
        ),
    )
    assert len(set(digests_in(data))) == 2
    # refused like a bad signature: the whole transaction, nothing stored
    assert_refused(fed.b, post(fed.b, data), 401, "wsse:FailedCheck", before)
    assert certificates(fed.b) == known and inbox(fed.b, "bob@b.test") == []
    # and the server still takes a good batch
    response = post(fed.b, batch(fed, ["after"]))
    assert response.status_code == 200 and inbox(fed.b, "bob@b.test") == ["after"]
