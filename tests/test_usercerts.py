"""User certificates and Send Encrypted between two real TLS domains on loopback: keys
issued by the home server and kept encrypted on the device, the directory and its checks,
end-to-end encrypted and signed mail that servers store and relay as ciphertext only, and
certificate login."""

from __future__ import annotations

import copy
import json
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from stores import another_store, on_store
from test_federation import start_domain

from wsemail.client.mail import Client
from wsemail.client.usercerts import (
    CertificateClient,
    Directory,
    NoCertificate,
    Published,
    UserKey,
    accept,
    keystore,
    new_private_key,
    open_sealed,
    request_certificate,
    revoke,
    send_encrypted,
)
from wsemail.client.usercerts.sealed import Envelope, seal
from wsemail.client.usercerts.xmlenc import KeyPair, decrypt_element, encrypt_element
from wsemail.pki import ServerIdentity, create_root, write_crl
from wsemail.protocol.errors import (
    MessageExpired,
    RevocationUnavailable,
    SignatureInvalid,
    UntrustedSigner,
    UsageError,
)
from wsemail.protocol.message import Message
from wsemail.protocol.soap import q
from wsemail.server.config import DEFAULT_PLUGINS
from wsemail.server.store import Tx

from certs import key_usage
from conftest import Running, fault_subcode, wait_for

PLUGINS = list(DEFAULT_PLUGINS)
SUBJECT = "Quarterly plans zebra-umbrella"
BODY = "the launch code is 4711-walrus-secret"


@dataclass
class Fed:
    ca: Path
    servers: dict[str, Running]

    @property
    def a(self) -> Running:
        return self.servers["a.test"]

    @property
    def b(self) -> Running:
        return self.servers["b.test"]

    def running(self, address: str) -> Running:
        return self.servers[address.rpartition("@")[2]]

    def client(self, address: str) -> Client:
        return self.running(address).client(address)

    def key(self, address: str) -> UserKey:
        """A key pair and a certificate from the user's home server, stored on the device."""
        user_key = request_certificate(self.client(address), new_private_key())
        keystore.save(user_key)
        return user_key

    def directory(self) -> Directory:
        return Directory([self.ca / "root.pem"], {d: r.url for d, r in self.servers.items()})


@contextmanager
def two_domains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stores: tuple[str, str] = ("", "")
) -> Iterator[Fed]:
    """a.test and b.test with the usercerts plug-in, routed to each other, keys on disk
    under tmp_path (also used by tests/test_usercerts_attachments.py); `stores`: a.test's
    and b.test's store URLs ("" SQLite)."""
    monkeypatch.setenv("WSEMAIL_KEYS_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("WSEMAIL_KEY_PASSPHRASE", "device passphrase")
    monkeypatch.setenv("WSEMAIL_DIRECTORY_CACHE", str(tmp_path / "directory-cache"))
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    servers = {
        d: start_domain(tmp_path, ca, d, **on_store(url, PLUGINS))
        for d, url in zip(("a.test", "b.test"), stores, strict=True)
    }
    from test_federation import Federation

    Federation(ca, servers).route_all()
    try:
        yield Fed(ca, servers)
    finally:
        for running in servers.values():
            running.stop()


@pytest.fixture
def fed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str, request: pytest.FixtureRequest
) -> Iterator[Fed]:
    stores = (store_url, another_store(store_url, request))
    with two_domains(tmp_path, monkeypatch, stores) as federation:
        yield federation


def db_bytes(running: Running) -> bytes:
    path = running.config.db_path
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_encrypted_signed_mail_crosses_domains_as_ciphertext_only(fed: Fed) -> None:
    alice_key, bob_key = fed.key("alice@a.test"), fed.key("bob@b.test")
    carol_key = fed.key("carol@b.test")
    wire: list[bytes] = []
    server_b = fed.b.controller.server
    dispatch = server_b.dispatch

    async def recording(data: bytes, peer: str) -> etree._Element:
        wire.append(data)
        return await dispatch(data, peer)

    server_b.dispatch = recording  # type: ignore[method-assign]
    alice = fed.client("alice@a.test")
    with fed.directory() as directory:
        sent = send_encrypted(
            alice,
            keystore.load("alice@a.test"),
            directory,
            ["bob@b.test"],
            SUBJECT,
            BODY,
            sign=True,
        )
        bob = fed.client("bob@b.test")
        bob.trust_roots = [fed.ca / "root.pem"]
        wait_for(lambda: bob.list_headers().headers, "bob's copy")
        stored = bob.retrieve(bob.list_headers().headers[0].id)
        proof, verified = bob.verify(stored)
        opened = open_sealed(verified, bob_key, directory)
        assert (proof.status, proof.signer) == ("verified", "a.test")
        assert (opened.subject, opened.body) == (SUBJECT, BODY)
        assert (opened.signed, opened.signer) == (True, "alice@a.test")
        # the sender reads her own sent copy
        own = alice.retrieve(sent.id)
        assert open_sealed(own, alice_key, directory).body == BODY
        # a third user cannot decrypt, even holding the stored bytes
        with pytest.raises(SignatureInvalid, match="not encrypted for any of your"):
            open_sealed(verified, carol_key, directory)
    assert any(b"Deliver" in d for d in wire)
    for secret in (SUBJECT.encode(), BODY.encode(), b"zebra", b"walrus"):
        assert secret not in b"".join(wire)
        assert secret not in db_bytes(fed.a) and secret not in db_bytes(fed.b)
    assert stored.subject == "(encrypted message)" and stored.to == ["bob@b.test"]


def test_a_recipient_without_a_certificate_stops_the_send(fed: Fed) -> None:
    alice_key = fed.key("alice@a.test")
    fed.key("bob@b.test")
    before = fed.a.stored()
    with fed.directory() as directory, pytest.raises(UsageError, match="carol@b.test"):
        send_encrypted(
            fed.client("alice@a.test"),
            alice_key,
            directory,
            ["bob@b.test", "carol@b.test"],
            SUBJECT,
            BODY,
        )
    assert fed.a.stored()[0] == before[0]
    assert fed.a.count("SELECT count(*) FROM queue") == 0


def _published(
    fed: Fed, address: str, cert: x509.Certificate, issuer: x509.Certificate
) -> Published:
    with fed.directory() as directory:
        crls = directory.fetch("bob@b.test").crls
    return Published(address, cert, issuer, crls)


def test_the_directory_refuses_untrusted_certificates(fed: Fed, tmp_path: Path) -> None:
    fed.key("bob@b.test")
    roots = [x509.load_pem_x509_certificate((fed.ca / "root.pem").read_bytes())]
    a_id = ServerIdentity.load(tmp_path / "a.test-identity")
    b_id = ServerIdentity.load(tmp_path / "b.test-identity")
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    now = datetime.now(UTC)
    good = _published(
        fed,
        "bob@b.test",
        b_id.issue_user_cert(
            "bob@b.test", key, lifetime=timedelta(days=30), now=now, encryption=True
        ),
        b_id.issuing_cert,
    )
    accept(roots, "bob@b.test", good)
    # issued by a.test's issuing CA for a b.test address (name constraints refuse it)
    with pytest.raises(UntrustedSigner):
        b_cert = good.cert
        wrong = x509.CertificateBuilder(
            issuer_name=a_id.issuing_cert.subject,
            subject_name=b_cert.subject,
            public_key=key,
            serial_number=x509.random_serial_number(),
            not_valid_before=b_cert.not_valid_before_utc,
            not_valid_after=b_cert.not_valid_after_utc,
            extensions=list(b_cert.extensions),
        ).sign(a_id.issuing_key, hashes.SHA256())
        accept(roots, "bob@b.test", Published("bob@b.test", wrong, a_id.issuing_cert, good.crls))
    # expired
    old = b_id.issue_user_cert(
        "bob@b.test",
        key,
        lifetime=timedelta(days=1),
        now=now - timedelta(days=10),
        encryption=True,
    )
    with pytest.raises(UntrustedSigner):
        accept(roots, "bob@b.test", Published("bob@b.test", old, b_id.issuing_cert, good.crls))
    # self-signed
    own = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bob@b.test")])
    selfie = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(own.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name("bob@b.test")]), False)
        .sign(own, hashes.SHA256())
    )
    with pytest.raises(UntrustedSigner):
        accept(roots, "bob@b.test", Published("bob@b.test", selfie, selfie, good.crls))
    # no current user CRL: fail closed
    with pytest.raises(RevocationUnavailable):
        accept(roots, "bob@b.test", Published("bob@b.test", good.cert, b_id.issuing_cert, ()))
    # answered for someone else
    with pytest.raises(UntrustedSigner):
        accept(roots, "carol@b.test", good)


@pytest.mark.both_stores
def test_a_revoked_certificate_is_neither_published_nor_accepted(fed: Fed) -> None:
    bob_key = fed.key("bob@b.test")
    with fed.directory() as directory:
        assert directory.certificate("bob@b.test") == bob_key.cert
        published = directory.fetch("bob@b.test")
    assert revoke(fed.client("bob@b.test")) == 1
    roots = [x509.load_pem_x509_certificate((fed.ca / "root.pem").read_bytes())]
    with fed.directory() as directory:
        with pytest.raises(NoCertificate):
            directory.certificate("bob@b.test")
        fed.key("carol@b.test")  # the directory still answers, with the new CRL
        fresh = directory.fetch("carol@b.test").crls
    with pytest.raises(UntrustedSigner, match="revoked"):
        accept(
            roots, "bob@b.test", Published("bob@b.test", published.cert, published.issuer, fresh)
        )


@pytest.mark.both_stores
def test_tampered_ciphertext_and_foreign_signatures_are_refused(fed: Fed) -> None:
    alice_key, bob_key = fed.key("alice@a.test"), fed.key("bob@b.test")
    carol_key = fed.key("carol@a.test")
    envelope = Envelope("alice@a.test", ["bob@b.test"], [], "<m1@a.test>")
    with fed.directory() as directory:
        certs = [("bob@b.test", directory.certificate("bob@b.test"))]

        def message(body: str, sender: str = "alice@a.test") -> Message:
            return Message(
                "1",
                "<m1@a.test>",
                "inbox",
                sender,
                ["bob@b.test"],
                [],
                "(encrypted message)",
                "",
                1,
                False,
                body,
            )

        text = seal(envelope, SUBJECT, BODY, certs, alice_key)
        assert open_sealed(message(text), bob_key, directory).signer == "alice@a.test"
        # one ciphertext character changed
        root = etree.fromstring(text)
        value = root.findall(".//{*}CipherValue")[-1]
        raw = value.text or ""
        value.text = raw[:40] + ("A" if raw[40] != "A" else "B") + raw[41:]
        with pytest.raises(SignatureInvalid, match="altered"):
            open_sealed(message(etree.tostring(root, encoding="unicode")), bob_key, directory)
        # signed by carol's key while claiming to be from alice
        forged = seal(
            envelope,
            SUBJECT,
            BODY,
            certs,
            UserKey("alice@a.test", carol_key.key, carol_key.certs, carol_key.issuer),
        )
        with pytest.raises(SignatureInvalid, match="signed by carol@a.test"):
            open_sealed(message(forged), bob_key, directory)
        # alice's genuine signed content re-sent by carol under her own name
        with pytest.raises(SignatureInvalid):
            open_sealed(message(text, sender="carol@a.test"), bob_key, directory)
        # bound to other routing headers
        other = message(text)
        other.to = ["bob@b.test", "carol@b.test"]
        with pytest.raises(SignatureInvalid, match="another message"):
            open_sealed(other, bob_key, directory)


def test_rsa_oaep_key_transport_round_trips(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rsa")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
    )
    plain = etree.Element(q("Secret"))
    plain.text = "hello"
    # a certificate whose key usage does not allow encryption receives nothing (issue 24)
    signing_only = cert.add_extension(key_usage(digital_signature=True), critical=True)
    with pytest.raises(UsageError, match="key usage does not allow encryption"):
        encrypt_element(plain, [("rsa", signing_only.sign(key, hashes.SHA256()))])
    usage = key_usage(digital_signature=True, key_encipherment=True)
    cert = cert.add_extension(usage, critical=True).sign(key, hashes.SHA256())
    encrypted = encrypt_element(plain, [("rsa", cert)])
    assert decrypt_element(encrypted, [KeyPair(key, (cert,))]).text == "hello"


@pytest.mark.both_stores
def test_certificate_login_with_replay_and_revocation(fed: Fed) -> None:
    alice_key = fed.key("alice@a.test")
    a = fed.a
    login = CertificateClient(a.url, alice_key, verify=a.verify, tls_name="a.test")
    a.clients.append(login)
    login.send(["bob@a.test"], "by certificate", "hello")
    assert [h.subject for h in fed.client("bob@a.test").list_headers().headers] == [
        "by certificate"
    ]
    assert login.list_headers("sent").headers[0].sender == "alice@a.test"
    op = etree.Element(q("ListHeaders"))
    data = login.signed_request(op)
    context = ssl.create_default_context(cafile=str(a.verify))
    with httpx.Client(verify=context, timeout=10) as http:

        def post(body: bytes) -> httpx.Response:
            return http.post(
                a.url,
                content=body,
                extensions={"sni_hostname": "a.test"},
                headers={"content-type": "application/soap+xml"},
            )

        assert post(data).status_code == 200
        replay = post(data)
        assert replay.status_code == 401 and fault_subcode(replay) == "wsemail:Replay"
        # a signed request for another user's operation, body swapped: binding check
        tampered = data.replace(b"ListHeaders", b"ListHeaderz")
        assert post(tampered).status_code in (400, 401)
        assert revoke(fed.client("alice@a.test")) == 1
        before = a.stored()
        refused = post(login.signed_request(etree.Element(q("ListHeaders"))))
        assert refused.status_code == 403
        assert fault_subcode(refused) == "wsse:SecurityTokenUnavailable"
        assert a.stored() == before
    with pytest.raises(UntrustedSigner):
        login.list_headers()


def test_the_key_is_encrypted_at_rest_and_moves_between_devices(
    fed: Fed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice_key = fed.key("alice@a.test")
    stored = (tmp_path / "keys" / "alice@a.test.pem").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in stored and b"BEGIN PRIVATE KEY" not in stored
    assert keystore.load("alice@a.test").cert == alice_key.cert
    exported = keystore.export_key("alice@a.test", "export secret")
    monkeypatch.setenv("WSEMAIL_KEYS_DIR", str(tmp_path / "laptop"))
    monkeypatch.setenv("WSEMAIL_KEY_PASSPHRASE", "laptop passphrase")
    with pytest.raises(UsageError, match="wrong passphrase"):
        keystore.import_key("alice@a.test", exported, "guess")
    keystore.import_key("alice@a.test", exported, "export secret")
    assert keystore.load("alice@a.test").cert == alice_key.cert
    monkeypatch.setenv("WSEMAIL_KEY_PASSPHRASE", "other")
    with pytest.raises(UsageError, match="wrong passphrase"):
        keystore.load("alice@a.test")
    monkeypatch.delenv("WSEMAIL_KEY_PASSPHRASE")
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    with pytest.raises(UsageError, match="WSEMAIL_KEY_PASSPHRASE"):
        keystore.load("alice@a.test")
    # a renewed certificate keeps the key; messages to the old one still open
    renewed = request_certificate(fed.client("alice@a.test"), alice_key.key)
    both = alice_key.with_cert(renewed.cert, renewed.issuer)
    assert both.cert != alice_key.cert and both.pair.certs[1] == alice_key.cert
    assert copy.copy(both).address == "alice@a.test"


def test_cli_keys_create_send_encrypt_and_retrieve_json(fed: Fed, tmp_path: Path) -> None:
    import json

    import typer
    from typer.testing import CliRunner

    from wsemail.cli import keys, mail

    app = typer.Typer()
    mail.register(app)
    keys.register(app)
    runner = CliRunner()

    def run(user: str, *args: str, ok: bool = True) -> str:
        running = fed.running(user)
        env = {
            "WSEMAIL_SERVER": running.url,
            "WSEMAIL_USER": user,
            "WSEMAIL_PASSWORD": "correct horse battery",
            "WSEMAIL_CACERT": str(fed.ca / "root.pem"),
            "WSEMAIL_TRUST_ROOTS": str(fed.ca / "root.pem"),
            "WSEMAIL_TLS_NAME": running.config.domain,
            "WSEMAIL_EXPORT_PASSPHRASE": "export secret",
            "WSEMAIL_DIRECTORY_ROUTES": ",".join(f"{d}={r.url}" for d, r in fed.servers.items()),
        }
        result = runner.invoke(app, list(args), env=env)
        assert (result.exit_code == 0) is ok, (result.output, result.exception)
        return result.output

    run("alice@a.test", "keys", "create")
    run("bob@b.test", "keys", "create")
    assert "this device" in run("bob@b.test", "keys", "show")
    sent = run(
        "alice@a.test", "send", "--to", "bob@b.test", "-s", SUBJECT, "--body", BODY, "--encrypt"
    )
    assert sent.strip()
    bob = fed.client("bob@b.test")
    wait_for(lambda: bob.list_headers().headers, "bob's copy")
    got = json.loads(run("bob@b.test", "retrieve", "--json", bob.list_headers().headers[0].id))
    assert (got["subject"], got["body"]) == (SUBJECT, BODY)
    assert got["e2e"] == {
        "encrypted": True,
        "signed": True,
        "signer": "alice@a.test",
        "attachments": [],
    }
    assert got["provenance"]["status"] == "verified"
    # no certificate for carol: refused before sending
    run("alice@a.test", "send", "--to", "carol@b.test", "--body", BODY, "--encrypt", ok=False)
    exported = tmp_path / "alice.key"
    run("alice@a.test", "keys", "export", "-o", str(exported))
    assert b"ENCRYPTED PRIVATE KEY" in exported.read_bytes()
    run("alice@a.test", "keys", "renew")
    assert "revoked 2" in run("alice@a.test", "keys", "revoke")


def test_the_directory_caches_certificates_until_they_expire(fed: Fed, tmp_path: Path) -> None:
    bob_key = fed.key("bob@b.test")
    now = [time.time()]
    lookups: list[str] = []
    server_b = fed.b.controller.server
    dispatch = server_b.dispatch

    async def counting(data: bytes, peer: str) -> etree._Element:
        if b"LookupCertificate" in data:
            lookups.append(peer)
        return await dispatch(data, peer)

    server_b.dispatch = counting  # type: ignore[method-assign]
    routes = {d: r.url for d, r in fed.servers.items()}
    cache = tmp_path / "cache"

    def directory() -> Directory:  # a new one per command, as the CLI does
        return Directory(
            [fed.ca / "root.pem"], routes, cache_seconds=600, clock=lambda: now[0], cache_dir=cache
        )

    with directory() as d:
        assert d.certificate("bob@b.test") == bob_key.cert
        assert d.certificate("bob@b.test") == bob_key.cert
    assert len(lookups) == 1
    with directory() as d:  # the next command: from disk, checked again, no lookup
        assert d.certificate("bob@b.test") == bob_key.cert
    assert len(lookups) == 1
    # a cache file altered on disk (another certificate put in) is dropped, not trusted
    [kept] = list(cache.iterdir())
    own = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bob@b.test")])
    forged = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(own.public_key())
        .serial_number(1)
        .not_valid_before(datetime.now(UTC) - timedelta(days=1))
        .not_valid_after(datetime.now(UTC) + timedelta(days=1))
        .sign(own, hashes.SHA256())
    )
    data = json.loads(kept.read_text())
    kept.write_text(
        json.dumps({**data, "cert": forged.public_bytes(serialization.Encoding.PEM).decode()})
    )
    with directory() as d:
        assert d.certificate("bob@b.test") == bob_key.cert
    assert len(lookups) == 2
    kept.write_text("not json")
    with directory() as d:
        assert d.certificate("bob@b.test") == bob_key.cert
    assert len(lookups) == 3
    assert revoke(fed.client("bob@b.test")) == 1
    now[0] += 599  # still within the cache lifetime: no new lookup
    with directory() as d:
        assert d.certificate("bob@b.test") == bob_key.cert
    assert len(lookups) == 3
    now[0] += 2  # expired: asked again, and the revocation is seen
    with directory() as d, pytest.raises(NoCertificate):
        d.certificate("bob@b.test")
    assert len(lookups) == 4
    assert list(cache.iterdir()) == []


def _bad_certificates(fed: Fed, tmp_path: Path) -> dict[str, x509.Certificate]:
    """Certificates for bob@b.test that no directory should publish and no sender accept."""
    a_id = ServerIdentity.load(tmp_path / "a.test-identity")
    b_id = ServerIdentity.load(tmp_path / "b.test-identity")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    good = b_id.issue_user_cert(
        "bob@b.test", key.public_key(), lifetime=timedelta(days=30), now=now, encryption=True
    )
    wrong_issuer = x509.CertificateBuilder(
        issuer_name=a_id.issuing_cert.subject,
        subject_name=good.subject,
        public_key=key.public_key(),
        serial_number=x509.random_serial_number(),
        not_valid_before=good.not_valid_before_utc,
        not_valid_after=good.not_valid_after_utc,
        extensions=list(good.extensions),
    ).sign(a_id.issuing_key, hashes.SHA256())
    expired = b_id.issue_user_cert(
        "bob@b.test",
        key.public_key(),
        lifetime=timedelta(days=1),
        now=now - timedelta(days=10),
        encryption=True,
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bob@b.test")])
    self_signed = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name("bob@b.test")]), False)
        .sign(key, hashes.SHA256())
    )
    revoked = request_certificate(fed.client("bob@b.test"), new_private_key()).cert
    assert revoke(fed.client("bob@b.test"), revoked.serial_number) == 1
    return {
        "wrong domain's issuer": wrong_issuer,
        "expired": expired,
        "self-signed": self_signed,
        "revoked": revoked,
    }


def test_send_encrypted_refuses_certificates_a_directory_should_not_publish(
    fed: Fed, tmp_path: Path
) -> None:
    """b.test's directory is made to answer bad certificates for bob (its table edited):
    alice's client refuses each before anything is uploaded or sent."""
    alice_key = fed.key("alice@a.test")
    fed.key("bob@b.test")
    attachment = tmp_path / "terms.txt"
    attachment.write_text(BODY)
    store = fed.b.controller.server.store
    with fed.directory() as directory:
        send_encrypted(
            fed.client("alice@a.test"), alice_key, directory, ["bob@b.test"], SUBJECT, BODY
        )
        before = fed.a.stored()[0], fed.a.count("SELECT count(*) FROM attachment_blobs")
        for issued, (label, cert) in enumerate(_bad_certificates(fed, tmp_path).items(), 1):
            row = (
                str(cert.serial_number),
                cert.public_bytes(serialization.Encoding.DER),
                datetime.now(UTC).timestamp() + issued,
            )

            def publish(tx: Tx, row: tuple[str, bytes, float] = row) -> None:
                tx.conn.execute("DELETE FROM user_certs WHERE serial=?", (row[0],))
                tx.conn.execute(
                    "INSERT INTO user_certs(serial, address, der, issued, expires) "
                    "VALUES (?, 'bob@b.test', ?, ?, ?)",
                    (*row, row[2] + 86400 * 30),
                )

            store.transact_sync(publish)
            assert directory.fetch("bob@b.test").cert == cert, label
            directory.forget()
            with pytest.raises(UsageError, match="cannot encrypt to bob@b.test") as refused:
                send_encrypted(
                    fed.client("alice@a.test"),
                    alice_key,
                    directory,
                    ["bob@b.test"],
                    SUBJECT,
                    BODY,
                    attachments=[attachment],
                )
            if label == "revoked":
                assert "revoked" in str(refused.value)
            after = fed.a.stored()[0], fed.a.count("SELECT count(*) FROM attachment_blobs")
            assert after == before, label
            assert fed.a.count("SELECT count(*) FROM queue") == 0, label
            assert fed.b.client("bob@b.test").list_headers().headers, label


def test_certificate_login_refuses_stale_requests_and_other_domains_users(fed: Fed) -> None:
    alice_key, bob_key = fed.key("alice@a.test"), fed.key("bob@b.test")
    a = fed.a
    login = CertificateClient(a.url, alice_key, verify=a.verify, tls_name="a.test")
    a.clients.append(login)
    assert login.list_headers().headers == []
    before = a.stored()
    auth = a.controller.server.auth
    clock = auth.clock
    auth.clock = lambda: clock() + 600  # the server's clock ten minutes ahead
    try:
        with pytest.raises(MessageExpired):
            login.send(["bob@a.test"], "late", "hello")
    finally:
        auth.clock = clock
    # bob@b.test's own, valid certificate is no login at a.test
    stranger = CertificateClient(a.url, bob_key, verify=a.verify, tls_name="a.test")
    a.clients.append(stranger)
    with pytest.raises(UntrustedSigner, match="this domain's users only"):
        stranger.list_headers()
    assert a.stored() == before
    login.send(["bob@a.test"], "on time", "hello")
    assert [h.subject for h in fed.client("bob@a.test").list_headers().headers] == ["on time"]
