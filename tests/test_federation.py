"""Two real domains on loopback over real TLS: signed Deliver transactions, the relay queue,
end-to-end provenance, and every way a transaction can be refused."""

from __future__ import annotations

import copy
import json
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from lxml import etree

from wsemail.core.routing import StaticResolver
from wsemail.pki import create_root, issue_server, list_issued, revoke, write_crl
from wsemail.protocol import soap
from wsemail.protocol.errors import RevocationUnavailable
from wsemail.protocol.soap import SOAP, q
from wsemail.server.store import QueueRow

from conftest import PASSWORD, Running, fault_subcode, inbox, start_server, wait_for, wsemail_binary


@dataclass
class Federation:
    ca: Path
    servers: dict[str, Running]

    @property
    def a(self) -> Running:
        return self.servers["a.test"]

    @property
    def b(self) -> Running:
        return self.servers["b.test"]

    def route_all(self) -> None:
        routes = {d: [r.url] for d, r in self.servers.items()}
        for running in self.servers.values():
            federation = running.controller.server.federation
            assert federation is not None
            federation.resolver = StaticResolver(routes)


def start_domain(
    tmp: Path, ca: Path, domain: str, *, identity: Path | None = None, **settings: object
) -> Running:
    """`domain`'s server in tmp/DOMAIN with the federation identity in tmp/DOMAIN-identity
    (issued on first use), or `identity` (another node of a domain started before)."""
    identity = identity or tmp / f"{domain}-identity"
    if not identity.exists():
        issue_server(ca, domain, identity)
    return start_server(
        tmp / domain,
        domain=domain,
        identity_dir=identity,
        trust_roots=[ca / "root.pem"],
        crls=[ca / "crl.pem"],
        tls_cert=identity / "server.pem",
        tls_key=identity / "server.key",
        **{"retry_base": 0.2, "retry_max": 0.5, "relay_poll": 0.1, **settings},
    )


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
        for client in running.clients:  # clients hold connections to both servers
            client.close()
    for running in servers.values():
        running.stop()


def queued(running: Running) -> int:
    return running.count("SELECT count(*) FROM queue")


def test_mail_crosses_domains_signed_and_checked_by_the_reader(fed: Federation) -> None:
    alice = fed.a.client("alice@a.test")
    alice.send(["bob@b.test", "carol@a.test"], "Across", "Hello from a.test", cc=["carol@b.test"])
    wait_for(lambda: inbox(fed.b, "bob@b.test") == ["Across"], "bob's copy")
    assert inbox(fed.b, "carol@b.test") == ["Across"] and inbox(fed.a, "carol@a.test") == ["Across"]
    assert queued(fed.a) == 0

    env = {
        "WSEMAIL_SERVER": fed.b.url,
        "WSEMAIL_USER": "bob@b.test",
        "WSEMAIL_PASSWORD": PASSWORD,
        "WSEMAIL_CACERT": str(fed.ca / "root.pem"),
        "WSEMAIL_TRUST_ROOTS": str(fed.ca / "root.pem"),
        "PATH": "/usr/bin:/bin",
        "WSEMAIL_TLS_NAME": "b.test",
    }
    ids = subprocess.run(
        [wsemail_binary(), "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    got = subprocess.run(
        [wsemail_binary(), "retrieve", "--json"],
        env=env,
        input=json.loads(ids)["id"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    message = json.loads(got.stdout)
    assert message["provenance"] == {"status": "verified", "signer": "a.test", "reason": ""}
    assert message["from"] == "alice@a.test" and message["body"] == "Hello from a.test"

    # the local copy is vouched for by the reader's own server, not by a signature
    carol = fed.a.client("carol@a.test")
    carol.trust_roots = [fed.ca / "root.pem"]
    proof, _ = carol.verify(carol.retrieve(carol.list_headers().headers[0].id))
    assert proof.status == "local"


def test_messages_for_one_domain_travel_in_one_transaction(fed: Federation) -> None:
    relay = fed.a.controller.server.relay
    assert relay is not None
    before = relay.attempts
    store = fed.a.controller.server.store
    alice = fed.a.client("alice@a.test")
    for n in range(5):
        alice.send(["bob@b.test"], f"batch {n}")
    wait_for(lambda: len(inbox(fed.b, "bob@b.test")) == 5, "five messages")
    assert relay.attempts - before <= 5
    assert (
        store.transact_sync(lambda tx: tx.conn.execute("SELECT count(*) FROM queue").fetchone()[0])
        == 0
    )


def _transaction(
    fed: Federation,
    recipients: list[str],
    subject: str = "crafted",
    date: str = "2026-11-25T12:00:00Z",
) -> bytes:
    """A Deliver a.test's relay would send, without sending it."""
    from wsemail.protocol.message import Message

    message = Message(
        id="",
        message_id=f"<{subject}-{time.time_ns()}@a.test>",
        folder="sent",
        sender="alice@a.test",
        to=recipients,
        cc=[],
        subject=subject,
        date=date,
        size=1,
        seen=True,
        body="b",
    )
    holder = etree.Element("holder")
    row = QueueRow(
        1,
        message.message_id,
        "alice@a.test",
        "b.test",
        etree.tostring(message.to_xml(holder)),
        recipients,
        0,
        time.time(),
    )
    relay = fed.a.controller.server.relay
    assert relay is not None
    return relay.transaction("b.test", [row])


def post(running: Running, data: bytes) -> httpx.Response:
    context = ssl.create_default_context(cafile=str(running.verify))
    with httpx.Client(verify=context, timeout=10) as http:
        return http.post(
            running.url,
            content=data,
            headers={"content-type": soap.CONTENT_TYPE},
            extensions={"sni_hostname": running.config.domain},
        )


def stored(running: Running) -> tuple[int, int]:
    return running.count("SELECT count(*) FROM messages"), running.count(
        "SELECT count(*) FROM deliveries"
    )


def assert_refused(
    running: Running, response: httpx.Response, status: int, subcode: str, before: tuple[int, int]
) -> None:
    assert response.status_code == status, response.text
    assert fault_subcode(response) == subcode
    assert stored(running) == before
    running.client("carol@b.test").list_headers()


def test_a_retry_after_a_lost_answer_delivers_once(fed: Federation) -> None:
    first = _transaction(fed, ["bob@b.test"], "once")
    assert post(fed.b, first).status_code == 200
    # the sender never saw the answer: it signs the same message again and retries
    root = etree.fromstring(first)
    again = _transaction(fed, ["bob@b.test"], "unused")
    retry_root = etree.fromstring(again)
    signed = root.find(f".//{q('SignedMessage')}")
    retry_op = retry_root.find(f".//{q('Deliver')}")
    assert signed is not None and retry_op is not None
    retry_op.remove(retry_op.find(q("SignedMessage")))  # type: ignore[arg-type]
    retry_op.append(copy.deepcopy(signed))
    for sig in retry_root.findall(".//{http://www.w3.org/2000/09/xmldsig#}Signature"):
        if sig.getparent().tag != q("SignedMessage"):  # type: ignore[union-attr]
            sig.getparent().remove(sig)  # type: ignore[union-attr]
    fed.a.controller.server.federation.signer.sign_envelope(retry_root)  # type: ignore[union-attr]
    response = post(fed.b, soap.serialize(retry_root))
    assert response.status_code == 200 and b'Status="duplicate"' in response.content
    assert inbox(fed.b, "bob@b.test") == ["once"]


def test_a_replayed_transaction_is_refused(fed: Federation) -> None:
    data = _transaction(fed, ["bob@b.test"])
    assert post(fed.b, data).status_code == 200
    before = stored(fed.b)
    assert_refused(fed.b, post(fed.b, data), 401, "wsemail:Replay", before)


def test_a_wrapped_body_is_refused(fed: Federation) -> None:
    before = stored(fed.b)
    root = etree.fromstring(_transaction(fed, ["bob@b.test"]))
    body = root.find(q("Body", SOAP))
    header = root.find(q("Header", SOAP))
    assert body is not None and header is not None
    forged = copy.deepcopy(body)
    forged.find(f".//{q('Recipient')}").text = "carol@b.test"  # type: ignore[union-attr]
    header.append(body)  # the signed Body moves into a header, same Id
    root.append(forged)
    assert_refused(fed.b, post(fed.b, etree.tostring(root)), 401, "wsse:FailedCheck", before)
    # the same with the forged Body under a fresh Id
    root = etree.fromstring(_transaction(fed, ["bob@b.test"]))
    body = root.find(q("Body", SOAP))
    forged = copy.deepcopy(body)
    forged.set(
        "{http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd}Id",
        "forged",
    )
    root.find(q("Header", SOAP)).append(body)  # type: ignore[union-attr]
    root.append(forged)
    assert_refused(fed.b, post(fed.b, etree.tostring(root)), 401, "wsse:FailedCheck", before)


def test_tampered_content_is_refused(fed: Federation) -> None:
    before = stored(fed.b)
    data = _transaction(fed, ["bob@b.test"]).replace(b">b</", b">evil</")
    assert_refused(fed.b, post(fed.b, data), 401, "wsse:FailedCheck", before)


def test_a_transaction_for_another_domain_is_refused(fed: Federation) -> None:
    before = stored(fed.b)
    relay = fed.a.controller.server.relay
    assert relay is not None
    data = _transaction(fed, ["bob@b.test"]).replace(
        b"<w:Destination>b.test</w:Destination>", b"<w:Destination>c.test</w:Destination>", 1
    )
    # re-signed by a.test for c.test: a real signature, the wrong destination
    root = etree.fromstring(data)
    for sig in root.findall(
        f"{q('Header', SOAP)}//{{http://www.w3.org/2000/09/xmldsig#}}Signature"
    ):
        sig.getparent().remove(sig)  # type: ignore[union-attr]
    fed.a.controller.server.federation.signer.sign_envelope(root)  # type: ignore[union-attr]
    assert_refused(fed.b, post(fed.b, soap.serialize(root)), 403, "wsemail:Forbidden", before)


def test_a_server_may_not_sign_for_another_domains_sender(fed: Federation) -> None:
    before = stored(fed.b)
    from wsemail.protocol.message import Message

    relay = fed.a.controller.server.relay
    assert relay is not None
    message = Message(
        id="",
        message_id="<spoof@c.test>",
        folder="sent",
        sender="mallory@c.test",
        to=["bob@b.test"],
        cc=[],
        subject="spoof",
        date="2026-11-25T12:00:00Z",
        size=1,
        seen=True,
        body="b",
    )
    row = QueueRow(
        1,
        message.message_id,
        "mallory@c.test",
        "b.test",
        etree.tostring(message.to_xml(etree.Element("h"))),
        ["bob@b.test"],
        0,
        time.time(),
    )
    data = relay.transaction("b.test", [row])
    assert_refused(fed.b, post(fed.b, data), 403, "wsse:SecurityTokenUnavailable", before)


def test_a_server_from_an_untrusted_root_is_refused(fed: Federation, tmp_path: Path) -> None:
    rogue_ca = tmp_path / "rogue"
    create_root(rogue_ca)
    write_crl(rogue_ca)
    issue_server(rogue_ca, "a.test", tmp_path / "rogue-a")
    from wsemail.pki import ServerIdentity
    from wsemail.protocol.dsig import Signer

    identity = ServerIdentity.load(tmp_path / "rogue-a")
    federation = fed.a.controller.server.federation
    assert federation is not None
    real = federation.signer
    federation.signer = Signer(identity.key, identity.cert)
    try:
        data = _transaction(fed, ["bob@b.test"])
    finally:
        federation.signer = real
    before = stored(fed.b)
    assert_refused(fed.b, post(fed.b, data), 403, "wsse:SecurityTokenUnavailable", before)


def test_unknown_recipient_bounces_once_and_the_rest_is_delivered(fed: Federation) -> None:
    alice = fed.a.client("alice@a.test")
    alice.send(["bob@b.test", "nobody@b.test"], "Partly")
    wait_for(lambda: inbox(fed.a, "alice@a.test"), "the bounce")
    assert inbox(fed.b, "bob@b.test") == ["Partly"]
    bounce = alice.retrieve(alice.list_headers().headers[0].id)
    assert bounce.sender == "mailer-daemon@a.test" and bounce.subject == "Undeliverable: Partly"
    assert "nobody@b.test" in bounce.body and "bob@b.test" not in bounce.body.split("\n")[0]
    time.sleep(0.5)
    assert len(inbox(fed.a, "alice@a.test")) == 1  # one bounce, not one per retry
    assert queued(fed.a) == 0


def test_revoked_sender_is_refused_and_the_message_bounces(fed: Federation) -> None:
    serial = next(
        r.serial for r in list_issued(fed.ca) if r.domain == "a.test" and r.kind == "server"
    )
    revoke(fed.ca, serial)
    write_crl(fed.ca)
    fed.a.client("alice@a.test").send(["bob@b.test"], "After revocation")
    wait_for(lambda: inbox(fed.a, "alice@a.test"), "the bounce")
    assert inbox(fed.b, "bob@b.test") == []


def test_stale_crl_fails_closed_then_delivers_after_refresh(fed: Federation) -> None:
    old = datetime.now(UTC) - timedelta(days=10)
    write_crl(fed.ca, days=1, now=old)  # next update 9 days ago: nothing can be checked
    federation = fed.b.controller.server.federation
    assert federation is not None
    federation.refresh_crls()
    with pytest.raises(RevocationUnavailable):
        federation.server_signer(fed.a.controller.server.federation.identity.cert)  # type: ignore[union-attr]
    fed.a.client("alice@a.test").send(["bob@b.test"], "Fail closed")
    wait_for(lambda: fed.a.count("SELECT attempts FROM queue") >= 1, "a deferred attempt")
    assert inbox(fed.b, "bob@b.test") == []
    assert inbox(fed.a, "alice@a.test") == []  # deferred, not bounced
    write_crl(fed.ca)  # the CA publishes a fresh CRL
    wait_for(lambda: inbox(fed.b, "bob@b.test") == ["Fail closed"], "delivery after refresh")
    assert inbox(fed.a, "alice@a.test") == []


def test_unreachable_domain_is_retried_then_bounced_after_the_lifetime(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    a = start_domain(tmp_path, ca, "a.test", lifetime=1.0)
    try:
        federation = a.controller.server.federation
        assert federation is not None
        federation.resolver = StaticResolver({"b.test": ["https://127.0.0.1:9/wsemail"]})
        a.client("alice@a.test").send(["bob@b.test"], "Nowhere")
        wait_for(lambda: a.count("SELECT max(attempts) FROM queue") or 0, "a retry")
        wait_for(lambda: inbox(a, "alice@a.test"), "the bounce")
        notice = a.client("alice@a.test").list_headers().headers[0]
        assert (
            notice.sender == "mailer-daemon@a.test" and a.count("SELECT count(*) FROM queue") == 0
        )
    finally:
        a.stop()


def test_queue_survives_a_restart(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    a = start_domain(tmp_path, ca, "a.test", routes={"b.test": ["https://127.0.0.1:9/wsemail"]})
    a.client("alice@a.test").send(["bob@b.test"], "Kept")
    wait_for(lambda: a.count("SELECT max(attempts) FROM queue") or 0, "a failed attempt")
    a.stop()
    b = start_domain(tmp_path, ca, "b.test")
    a = start_domain(tmp_path, ca, "a.test", routes={"b.test": [b.url]})
    try:
        wait_for(lambda: inbox(b, "bob@b.test") == ["Kept"], "delivery after restart")
        assert inbox(a, "alice@a.test") == [] and a.count("SELECT count(*) FROM queue") == 0
    finally:
        a.stop()
        b.stop()


def test_domains_found_by_dns_srv_with_failover(tmp_path: Path) -> None:
    from test_routing import Dnsmasq

    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    b = start_domain(tmp_path, ca, "b.test")
    port = b.url.split(":")[2].split("/")[0]
    dns = Dnsmasq(
        tmp_path / "dnsmasq.log",
        [
            "--local=/test/",
            "--local-ttl=60",
            "--srv-host=_wsemail._tcp.b.test,localhost,9,5,10",  # preferred, but down
            f"--srv-host=_wsemail._tcp.b.test,localhost,{port},10,10",
        ],
        probe="probe.test",
    )
    dns.start()
    a = start_domain(tmp_path, ca, "a.test", dns_nameservers=["127.0.0.1"], dns_port=dns.port)
    try:
        a.client("alice@a.test").send(["bob@b.test", "nobody@nowhere.test"], "Via SRV")
        wait_for(lambda: inbox(b, "bob@b.test") == ["Via SRV"], "delivery via SRV")
        # nowhere.test has no SRV record: a permanent failure, bounced at once
        wait_for(lambda: inbox(a, "alice@a.test"), "the bounce for nowhere.test")
        bounce = a.client("alice@a.test").list_headers().headers[0]
        assert bounce.subject == "Undeliverable: Via SRV"
    finally:
        a.stop()
        b.stop()
        dns.stop()


def _resign(
    fed: Federation,
    data: bytes,
    *,
    key: object = None,
    cert: object = None,
    refs: str = "both",
    algorithm: str = "ecdsa-sha256",
    digest: str = "sha256",
) -> bytes:
    """Strip the hop signature of a crafted transaction and sign it again differently."""
    from signxml.algorithms import SignatureConstructionMethod
    from signxml.signer import XMLSigner

    from wsemail.protocol.dsig import DS, EXC_C14N, WSU_ID

    identity = fed.a.controller.server.federation.identity  # type: ignore[union-attr]
    root = etree.fromstring(data)
    security = root.find(f"{q('Header', SOAP)}/{{{soap.WSSE}}}Security")
    assert security is not None
    security.remove(security.find(f"{{{DS}}}Signature"))  # type: ignore[arg-type]
    body = root.find(q("Body", SOAP))
    stamp = security.find(f"{{{soap.WSU}}}Timestamp")
    assert body is not None and stamp is not None
    uris = {"both": [body, stamp], "body": [body], "timestamp": [stamp]}[refs]
    signer = XMLSigner(
        method=SignatureConstructionMethod.detached,
        signature_algorithm=algorithm,
        digest_algorithm=digest,
        c14n_algorithm=EXC_C14N,
    )
    signature = signer.sign(
        root,
        key=key or identity.key,
        cert=[cert or identity.cert],
        reference_uri=[f"#{n.get(WSU_ID)}" for n in uris],
        id_attribute="Id",
    )
    security.append(signature)
    return etree.tostring(root)


def test_a_forged_body_reusing_the_signed_id_under_another_attribute_is_refused(
    fed: Federation,
) -> None:
    before = stored(fed.b)
    root = etree.fromstring(_transaction(fed, ["bob@b.test"]))
    body = root.find(q("Body", SOAP))
    assert body is not None
    from wsemail.protocol.dsig import WSU_ID

    forged = copy.deepcopy(body)
    del forged.attrib[WSU_ID]
    forged.set("Id", body.get(WSU_ID) or "")  # same value, plain Id attribute
    forged.find(f".//{q('Recipient')}").text = "carol@b.test"  # type: ignore[union-attr]
    root.find(q("Header", SOAP)).append(body)  # type: ignore[union-attr]
    root.append(forged)
    assert_refused(fed.b, post(fed.b, etree.tostring(root)), 401, "wsse:FailedCheck", before)


def test_a_second_signature_is_refused(fed: Federation) -> None:
    before = stored(fed.b)
    root = etree.fromstring(_transaction(fed, ["bob@b.test"]))
    security = root.find(f"{q('Header', SOAP)}/{{{soap.WSSE}}}Security")
    signature = security.find("{http://www.w3.org/2000/09/xmldsig#}Signature")  # type: ignore[union-attr]
    security.append(copy.deepcopy(signature))  # type: ignore[union-attr,arg-type]
    assert_refused(fed.b, post(fed.b, etree.tostring(root)), 401, "wsse:FailedCheck", before)


@pytest.mark.parametrize("refs", ["body", "timestamp"])
def test_a_signature_that_omits_the_body_or_the_timestamp_is_refused(
    fed: Federation, refs: str
) -> None:
    before = stored(fed.b)
    data = _resign(fed, _transaction(fed, ["bob@b.test"]), refs=refs)
    assert_refused(fed.b, post(fed.b, data), 401, "wsse:FailedCheck", before)


def test_sha1_signatures_are_refused(fed: Federation) -> None:
    # signxml will not even sign with SHA-1; name the SHA-1 algorithms in a real signature
    before = stored(fed.b)
    data = _transaction(fed, ["bob@b.test"])
    data = data.replace(b"xmldsig-more#ecdsa-sha256", b"xmldsig-more#ecdsa-sha1").replace(
        b"xmlenc#sha256", b"xmldsig#sha1"
    )
    assert b"ecdsa-sha1" in data and b"xmldsig#sha1" in data
    response = post(fed.b, data)
    assert_refused(fed.b, response, 401, "wsse:FailedCheck", before)
    assert b"SHA1" in response.content or b"sha1" in response.content


def _self_signed(domain: str) -> tuple[object, object]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from wsemail.pki import WSEMAIL_SERVER_ROLE

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, WSEMAIL_SERVER_ROLE]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


@pytest.mark.parametrize("kind", ["expired", "not-yet-valid", "self-signed", "user"])
def test_unacceptable_signing_certificates_are_refused(
    fed: Federation, tmp_path: Path, kind: str
) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    from wsemail.pki import ServerIdentity

    if kind in ("expired", "not-yet-valid"):
        when = datetime.now(UTC) + (
            timedelta(days=-30) if kind == "expired" else timedelta(days=30)
        )
        issue_server(fed.ca, "a.test", tmp_path / kind, days=2, now=when)
        identity = ServerIdentity.load(tmp_path / kind)
        key, cert = identity.key, identity.cert
    elif kind == "self-signed":
        key, cert = _self_signed("a.test")
    else:  # a user's certificate, issued by a.test's issuing CA, signing as a server
        user_key = ec.generate_private_key(ec.SECP256R1())
        identity = fed.a.controller.server.federation.identity  # type: ignore[union-attr]
        cert = identity.issue_user_cert(
            "alice@a.test", user_key.public_key(), lifetime=timedelta(hours=1)
        )
        key = user_key
    before = stored(fed.b)
    data = _resign(fed, _transaction(fed, ["bob@b.test"]), key=key, cert=cert)
    response = post(fed.b, data)
    assert response.status_code in (401, 403), response.text
    assert fault_subcode(response) in ("wsse:SecurityTokenUnavailable", "wsse:FailedCheck")
    assert stored(fed.b) == before
    fed.b.client("carol@b.test").list_headers()


def test_receiver_down_then_back_gets_each_message_once(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    b = start_domain(tmp_path, ca, "b.test")
    url = b.url
    b.stop()  # down: the sender retries with backoff
    a = start_domain(tmp_path, ca, "a.test", routes={"b.test": [url]})
    try:
        for n in range(3):
            a.client("alice@a.test").send(["bob@b.test"], f"while down {n}")
        wait_for(lambda: (a.count("SELECT min(attempts) FROM queue") or 0) >= 2, "retries")
        port = int(url.split(":")[2].split("/")[0])
        b = start_domain(tmp_path, ca, "b.test", port=port)  # back on the same address
        wait_for(lambda: len(inbox(b, "bob@b.test")) == 3, "delivery after the outage")
        time.sleep(0.5)
        assert sorted(inbox(b, "bob@b.test")) == [f"while down {n}" for n in range(3)]
        assert inbox(a, "alice@a.test") == [] and a.count("SELECT count(*) FROM queue") == 0
    finally:
        a.stop()
        b.stop()


def test_a_send_wakes_the_relay_without_waiting_for_the_poll(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    b = start_domain(tmp_path, ca, "b.test")
    a = start_domain(tmp_path, ca, "a.test", routes={"b.test": [b.url]}, relay_poll=3600.0)
    try:
        a.client("alice@a.test").send(["bob@b.test"], "Right away")
        wait_for(lambda: inbox(b, "bob@b.test") == ["Right away"], "a woken relay", 20)
    finally:
        a.stop()
        b.stop()


# --- outside review (issue 24): the signed Timestamp's Expires, strict formats, key usage ----


def _restamp(fed: Federation, data: bytes, created: str, expires: str | None) -> bytes:
    """The crafted transaction with another signed Timestamp (signed again by a.test)."""
    root = etree.fromstring(data)
    stamp = root.find(f".//{{{soap.WSU}}}Timestamp")
    assert stamp is not None
    stamp.find(f"{{{soap.WSU}}}Created").text = created  # type: ignore[union-attr]
    old = stamp.find(f"{{{soap.WSU}}}Expires")
    assert old is not None
    if expires is None:
        stamp.remove(old)
    else:
        old.text = expires
    return _resign(fed, etree.tostring(root))


def _at(seconds: float, now: datetime | None = None) -> str:
    from wsemail.protocol.auth import timestamp

    return timestamp((now or datetime.now(UTC)) + timedelta(seconds=seconds))


@pytest.mark.parametrize(
    "created,expires,status,subcode",
    [
        (-200, -100, 401, "wsse:MessageExpired"),  # expired 100 s ago (allowance: 60 s)
        (0, -30, 401, "wsse:MessageExpired"),  # expires before it was created
        (0, 0, 401, "wsse:MessageExpired"),  # expires when created
        ("20261202T142744Z", 300, 400, "wsse:InvalidSecurity"),  # ISO 8601 basic format
        ("2026-W49-3T14:27:44Z", 300, 400, "wsse:InvalidSecurity"),  # week date
        (0, "20991202T142744Z", 400, "wsse:InvalidSecurity"),
        ("0001-01-01T00:00:00+01:00", 300, 401, "wsse:MessageExpired"),  # overflows in UTC
        (0, "9999-12-31T23:59:59-01:00", 401, "wsse:MessageExpired"),
    ],
)
def test_a_deliver_with_an_expired_or_malformed_signed_timestamp_is_refused(
    fed: Federation, created: object, expires: object, status: int, subcode: str
) -> None:
    before = stored(fed.b)
    now = datetime.now(UTC)  # one clock reading: "expires when created" must be the same ms
    data = _restamp(
        fed,
        _transaction(fed, ["bob@b.test"]),
        created if isinstance(created, str) else _at(float(created), now),  # type: ignore[arg-type]
        expires if isinstance(expires, str) else _at(float(expires), now),  # type: ignore[arg-type]
    )
    response = post(fed.b, data)
    assert b"Traceback" not in response.content
    assert_refused(fed.b, response, status, subcode, before)


def test_a_deliver_within_the_clock_skew_allowance_is_delivered(fed: Federation) -> None:
    # Expires 30 s ago is inside the 60 s allowance; no Expires at all is accepted too
    for expires in (_at(-30), None):
        data = _restamp(fed, _transaction(fed, ["bob@b.test"], "skew"), _at(-60), expires)
        response = post(fed.b, data)
        assert response.status_code == 200, response.text
        assert b'Status="delivered"' in response.content


@pytest.mark.parametrize("usage", ["key-agreement-only", "none"])
def test_a_server_certificate_without_digital_signature_usage_is_refused(
    fed: Federation, usage: str
) -> None:
    from wsemail.pki._common import read_key

    from certs import key_usage, reissue

    identity = fed.a.controller.server.federation.identity  # type: ignore[union-attr]
    root_key = read_key(fed.ca / "root.key")
    ku = key_usage(key_agreement=True) if usage == "key-agreement-only" else None
    cert = reissue(identity.cert, root_key, ku)  # type: ignore[arg-type]
    before = stored(fed.b)
    data = _resign(fed, _transaction(fed, ["bob@b.test"]), cert=cert)
    response = post(fed.b, data)
    assert_refused(fed.b, response, 403, "wsse:SecurityTokenUnavailable", before)
    assert b"digitalSignature" in response.content


@pytest.mark.parametrize("date", ["0001-01-01T00:00:00+01:00", "20261125T120000Z", "yesterday"])
def test_a_relayed_message_whose_date_is_not_an_xsd_datetime_is_refused(
    fed: Federation, date: str
) -> None:
    # what the receiving clients sort and show: a date they cannot read is refused at the door
    before = stored(fed.b)
    response = post(fed.b, _transaction(fed, ["bob@b.test"], date=date))
    assert_refused(fed.b, response, 400, "wsemail:InvalidRequest", before)
