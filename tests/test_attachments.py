"""On-demand attachments between two real TLS domains on loopback: alice@a.test leaves an
attachment on a.test, bob@b.test fetches it with a federated identity issued by b.test; and
every way a fetch can be refused, each leaving nothing served and the server serving."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lxml import etree
from stores import another_store, on_postgres, on_store
from test_federation import start_domain

from wsemail.client.attachments import Attachments, Token, fetch_request, safe_file_name
from wsemail.client.mail import Client
from wsemail.core.routing import StaticResolver
from wsemail.pki import ServerIdentity, create_root, issue_server, write_crl
from wsemail.protocol import soap
from wsemail.protocol.errors import (
    Forbidden,
    RemoteFault,
    RequestInvalid,
    SignatureInvalid,
    UsageError,
)
from wsemail.protocol.message import AttachmentRef
from wsemail.protocol.soap import q

from conftest import PASSWORD, Running, fault_subcode, wait_for, wsemail_binary

WSEMAIL = [wsemail_binary()]


@dataclass
class Fed:
    ca: Path
    tmp: Path
    a: Running
    b: Running

    def box(self, running: Running, user: str) -> Attachments:
        client = running.client(user)
        client.trust_roots = [self.ca / "root.pem"]
        return Attachments(client)

    def identity(self, domain: str) -> ServerIdentity:
        folder = self.tmp / f"{domain}-identity"
        if not folder.exists():
            issue_server(self.ca, domain, folder)
        return ServerIdentity.load(folder)


@pytest.fixture
def fed(tmp_path: Path, store_url: str, request: pytest.FixtureRequest) -> Iterator[Fed]:
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    stores = {"a.test": store_url, "b.test": another_store(store_url, request)}
    a, b = (start_domain(tmp_path, ca, d, **on_store(stores[d])) for d in ("a.test", "b.test"))
    routes = {"a.test": [a.url], "b.test": [b.url]}
    for running in (a, b):
        assert running.controller.server.federation is not None
        running.controller.server.federation.resolver = StaticResolver(routes)
    yield Fed(ca, tmp_path, a, b)
    for running in (a, b):  # clients hold connections to both servers: close them first
        for client in running.clients:
            client.close()
    a.stop()
    b.stop()


def held(running: Running) -> list[str]:
    """The attachments whose bytes `running` holds: files under its data dir on SQLite,
    chunk rows on PostgreSQL."""
    if on_postgres(running):
        return sorted(
            running.controller.server.store.transact_sync(
                lambda tx: [
                    r[0] for r in tx.conn.execute("SELECT DISTINCT guid FROM attachment_chunks")
                ]
            )
        )
    folder = running.config.data_dir / "attachments" / "blobs"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def make_file(path: Path, size: int) -> str:
    """`size` pseudo-random bytes written on the fly; returns their SHA-256."""
    digest = hashlib.sha256()
    block = os.urandom(1 << 20)
    with open(path, "wb") as out:
        left, n = size, 0
        while left:
            chunk = (n.to_bytes(8, "big") + block)[: min(left, 1 << 20)]
            out.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
            n += 1
    return digest.hexdigest()


def file_sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def newest(client: Client) -> str:
    wait_for(lambda: client.list_headers().headers, f"mail for {client.username}")
    return client.list_headers().headers[0].id


def send_with(fed: Fed, tmp: Path, to: list[str], size: int, name: str = "report.pdf") -> str:
    """alice@a.test sends `to` a message with one on-demand attachment; returns its guid."""
    path = tmp / name
    make_file(path, size)
    alice = fed.box(fed.a, "alice@a.test")
    uploaded = alice.upload(path)
    alice.client.send(to, f"with {name}", "see attached", attachments=[uploaded.guid])
    return uploaded.guid


def ref_for(fed: Fed, user: str, guid: str) -> AttachmentRef:
    box = fed.box(fed.b, user)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for header in box.client.list_headers().headers:
            for ref in box.list(header.id).refs:
                if ref.guid == guid:
                    return ref
        time.sleep(0.05)
    raise AssertionError(f"{user} never got a reference to {guid}")


def served(fed: Fed) -> tuple[int, int]:
    """(download tickets, audit rows) on a.test: a refused fetch changes neither."""
    return fed.a.count("SELECT count(*) FROM attachment_tickets"), fed.a.count(
        "SELECT count(*) FROM attachment_audit"
    )


def post(box: Attachments, url: str, data: bytes) -> httpx.Response:
    return box.client.http.post(
        url,
        content=data,
        headers={"content-type": soap.CONTENT_TYPE},
        extensions={"sni_hostname": "a.test"},
    )


def assert_refused(
    fed: Fed, response: httpx.Response, status: int, subcode: str, before: tuple[int, int]
) -> None:
    assert response.status_code == status, response.text
    assert fault_subcode(response) == subcode
    assert served(fed) == before
    fed.a.client("carol@a.test").list_headers()  # still serving


def forged_token(
    issuer_identity: ServerIdentity, address: str, *, self_signed: bool = False
) -> Token:
    """A user certificate for `address` that `issue_user_cert` would refuse to make."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name if self_signed else issuer_identity.issuing_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
    )
    signing_key = key if self_signed else issuer_identity.issuing_key
    cert = builder.sign(signing_key, hashes.SHA256())
    return Token(key, cert, cert if self_signed else issuer_identity.issuing_cert)


# --- the end-to-end path ---------------------------------------------------------------------


@pytest.mark.both_stores
def test_fifty_megabytes_on_demand_from_alice_to_bob(fed: Fed, tmp_path: Path) -> None:
    size = 50 << 20
    source = tmp_path / "big.bin"
    expected = make_file(source, size)
    alice = fed.box(fed.a, "alice@a.test")
    started = time.perf_counter()
    uploaded = alice.upload(source)
    upload_s = time.perf_counter() - started
    assert uploaded.sha256 == expected
    alice.client.send(
        ["bob@b.test"], "the big one", "fetch it when you need it", attachments=[uploaded.guid]
    )

    bob = fed.box(fed.b, "bob@b.test")
    listing = bob.list(newest(bob.client))
    assert listing.provenance.status == "verified" and listing.provenance.signer == "a.test"
    [ref] = listing.refs
    assert (ref.name, ref.size, ref.sha256, ref.server) == ("big.bin", size, expected, "a.test")
    started = time.perf_counter()
    out = bob.fetch(ref, tmp_path / "fetched.bin")
    fetch_s = time.perf_counter() - started
    assert file_sha(out) == expected and out.stat().st_size == size
    # bytes on a.test live under a server-generated name; b.test holds none of them
    assert held(fed.a) == [uploaded.guid]
    assert held(fed.b) == []
    assert not list((fed.a.config.data_dir / "attachments" / "tmp").iterdir())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(
        f"\n50 MB: upload {size / upload_s / 1e6:.0f} MB/s, fetch {size / fetch_s / 1e6:.0f} MB/s,"
        f" peak RSS of test process (both servers + client) {rss} MB"
    )


def test_cli_sends_lists_fetches_and_audits(fed: Fed, tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    expected = make_file(source, 300_000)

    def run(user: str, running: Running, *args: str) -> str:
        env = {
            "WSEMAIL_SERVER": running.url,
            "WSEMAIL_USER": user,
            "WSEMAIL_PASSWORD": PASSWORD,
            "WSEMAIL_CACERT": str(fed.ca / "root.pem"),
            "WSEMAIL_TRUST_ROOTS": str(fed.ca / "root.pem"),
            "WSEMAIL_TLS_NAME": running.config.domain,
            "WSEMAIL_CLIENT_CONFIG": str(tmp_path / "client.toml"),
            "PATH": "/usr/bin:/bin",
        }
        done = subprocess.run(
            [*WSEMAIL, *args], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    sent_id = run(
        "alice@a.test",
        fed.a,
        "send",
        "--to",
        "bob@b.test",
        "-s",
        "notes",
        "--body",
        "hi",
        "--attach",
        str(source),
        "--on-demand",
    ).strip()
    bob = fed.b.client("bob@b.test")
    message = newest(bob)
    [listed] = [
        json.loads(x)
        for x in run("bob@b.test", fed.b, "attachments", message, "--json").splitlines()
    ]
    assert listed["name"] == "notes.txt" and listed["sha256"] == expected
    out = tmp_path / "got"
    out.mkdir()
    run("bob@b.test", fed.b, "fetch", message, "--name", "notes.txt", "-o", str(out))
    assert file_sha(out / "notes.txt") == expected
    audit = run("alice@a.test", fed.a, "attachments", sent_id, "--audit", "--json")
    [entry] = [json.loads(x) for x in audit.splitlines()]
    assert [(e["address"], e["event"]) for e in entry["events"]] == [
        ("bob@b.test", "authorized"),
        ("bob@b.test", "download"),
    ]
    # the sender's own copy lists the attachment through its own server
    assert "notes.txt" in run("alice@a.test", fed.a, "attachments", sent_id)


@pytest.mark.both_stores
def test_an_interrupted_download_resumes_with_a_byte_range(fed: Fed, tmp_path: Path) -> None:
    guid = send_with(fed, tmp_path, ["bob@b.test"], 3_000_000)
    ref = ref_for(fed, "bob@b.test", guid)
    bob = fed.box(fed.b, "bob@b.test")
    whole = tmp_path / "whole"
    bob.fetch(ref, whole)
    dest = tmp_path / "resumed"
    (tmp_path / "resumed.part").write_bytes(whole.read_bytes()[:1_234_567])
    bob.fetch(ref, dest)
    assert dest.read_bytes() == whole.read_bytes()
    path, ticket = bob.authorize(ref)
    url = httpx.URL(ref.url).copy_with(path=path, query=f"ticket={ticket}".encode())
    outside = bob.client.http.get(
        url, headers={"range": "bytes=9000000-"}, extensions={"sni_hostname": "a.test"}
    )
    assert outside.status_code == 416
    events = fed.a.count(
        "SELECT count(*) FROM attachment_audit WHERE event='download' AND first_byte=1234567"
    )
    assert events == 1


@pytest.mark.both_stores
def test_bytes_that_differ_from_the_signed_hash_are_not_accepted(fed: Fed, tmp_path: Path) -> None:
    guid = send_with(fed, tmp_path, ["bob@b.test"], 100_000)
    ref = ref_for(fed, "bob@b.test", guid)
    if on_postgres(fed.a):  # one bit of the stored chunk flipped
        fed.a.controller.server.store.transact_sync(
            lambda tx: tx.conn.execute(
                "UPDATE attachment_chunks SET data=set_byte(data, 500, get_byte(data, 500) # 1)"
                " WHERE guid=? AND n=0",
                (guid,),
            )
        )
    else:
        blob = fed.a.config.data_dir / "attachments" / "blobs" / guid
        data = bytearray(blob.read_bytes())
        data[500] ^= 1
        blob.write_bytes(bytes(data))
    with pytest.raises(SignatureInvalid):
        fed.box(fed.b, "bob@b.test").fetch(ref, tmp_path / "tampered")
    assert not (tmp_path / "tampered").exists() and not (tmp_path / "tampered.part").exists()


# --- rejections --------------------------------------------------------------------------


@pytest.fixture
def one(fed: Fed, tmp_path: Path) -> AttachmentRef:
    guid = send_with(fed, tmp_path, ["bob@b.test"], 64_000)
    return ref_for(fed, "bob@b.test", guid)


def test_a_non_recipient_with_a_valid_token_is_refused(fed: Fed, one: AttachmentRef) -> None:
    before = served(fed)
    carol = fed.box(fed.b, "carol@b.test")
    response = post(carol, one.url, fetch_request(one, carol.token()))
    assert_refused(fed, response, 403, "wsemail:Forbidden", before)
    fed.box(fed.b, "bob@b.test").authorize(one)


def test_a_third_domain_cannot_vouch_for_another_domains_address(
    fed: Fed, one: AttachmentRef
) -> None:
    before = served(fed)
    token = forged_token(fed.identity("c.test"), "bob@b.test")
    response = post(fed.box(fed.b, "bob@b.test"), one.url, fetch_request(one, token))
    assert_refused(fed, response, 403, "wsse:SecurityTokenUnavailable", before)


def test_a_request_for_one_attachment_does_not_open_another(
    fed: Fed, tmp_path: Path, one: AttachmentRef
) -> None:
    other_guid = send_with(fed, tmp_path, ["carol@b.test"], 1000, name="other.txt")
    bob = fed.box(fed.b, "bob@b.test")
    before = served(fed)
    # bob's valid request names his attachment; changing the Guid breaks the signature
    root = etree.fromstring(fetch_request(one, bob.token()))
    guid_node = root.find(f".//{q('Guid')}")
    assert guid_node is not None
    guid_node.text = other_guid
    assert_refused(fed, post(bob, one.url, soap.serialize(root)), 401, "wsse:FailedCheck", before)
    # a properly signed request for an attachment he did not receive
    other = AttachmentRef("a.test", one.url, other_guid, "other.txt", 1000, "text/plain", "")
    response = post(bob, one.url, fetch_request(other, bob.token()))
    assert_refused(fed, response, 403, "wsemail:Forbidden", before)
    # a download ticket is good once, for its own attachment only
    path, ticket = bob.authorize(one)
    url = httpx.URL(one.url).copy_with(path=path, query=f"ticket={ticket}".encode())
    first = bob.client.http.get(url, extensions={"sni_hostname": "a.test"})
    assert first.status_code == 200 and len(first.content) == one.size
    again = bob.client.http.get(url, extensions={"sni_hostname": "a.test"})
    assert again.status_code == 403 and fault_subcode(again) == "wsemail:Forbidden"


def test_an_expired_token_is_refused(fed: Fed, one: AttachmentRef) -> None:
    before = served(fed)
    key = ec.generate_private_key(ec.SECP256R1())
    identity = fed.identity("b.test")
    long_ago = datetime.now(UTC) - timedelta(hours=3)
    cert = identity.issue_user_cert(
        "bob@b.test", key.public_key(), lifetime=timedelta(hours=1), now=long_ago
    )
    token = Token(key, cert, identity.issuing_cert)
    response = post(fed.box(fed.b, "bob@b.test"), one.url, fetch_request(one, token))
    assert_refused(fed, response, 403, "wsse:SecurityTokenUnavailable", before)


def test_a_stale_request_is_refused(fed: Fed, one: AttachmentRef) -> None:
    bob = fed.box(fed.b, "bob@b.test")
    before = served(fed)
    old = datetime.now(UTC) - timedelta(minutes=10)
    response = post(bob, one.url, fetch_request(one, bob.token(), now=old))
    assert_refused(fed, response, 401, "wsse:MessageExpired", before)


def _restamped(one: AttachmentRef, token: Token, created: str, expires: str) -> bytes:
    """A FetchAttachment with another Timestamp, signed again with the token's key."""
    from wsemail.protocol.dsig import DS, Signer

    root = etree.fromstring(fetch_request(one, token))
    signature = root.find(f".//{{{DS}}}Signature")
    stamp = root.find(f".//{{{soap.WSU}}}Timestamp")
    assert signature is not None and stamp is not None
    signature.getparent().remove(signature)  # type: ignore[union-attr]
    stamp[0].text, stamp[1].text = created, expires
    Signer(token.key, token.cert).sign_envelope(root)
    return soap.serialize(root)


@pytest.mark.parametrize(
    "created,expires,status,subcode",
    [
        (-200, -100, 401, "wsse:MessageExpired"),  # expired 100 s ago (allowance: 60 s)
        (0, -30, 401, "wsse:MessageExpired"),  # expires before it was created
        ("20261202T142744Z", 300, 400, "wsse:InvalidSecurity"),  # ISO 8601 basic format
        ("0001-01-01T00:00:00+01:00", 300, 401, "wsse:MessageExpired"),
    ],
)
def test_an_expired_or_malformed_identity_request_is_refused(
    fed: Fed, one: AttachmentRef, created: object, expires: object, status: int, subcode: str
) -> None:
    from wsemail.protocol.auth import timestamp

    def at(value: object) -> str:
        if isinstance(value, str):
            return value
        return timestamp(datetime.now(UTC) + timedelta(seconds=float(value)))  # type: ignore[arg-type]

    bob = fed.box(fed.b, "bob@b.test")
    before = served(fed)
    response = post(bob, one.url, _restamped(one, bob.token(), at(created), at(expires)))
    assert b"Traceback" not in response.content
    assert_refused(fed, response, status, subcode, before)
    bob.authorize(one)  # a well-formed request still gets its ticket


def test_a_user_certificate_without_digital_signature_usage_is_refused(
    fed: Fed, one: AttachmentRef
) -> None:
    from certs import key_usage, reissue

    identity = fed.identity("b.test")
    key = ec.generate_private_key(ec.SECP256R1())
    good = identity.issue_user_cert("bob@b.test", key.public_key(), lifetime=timedelta(hours=1))
    cert = reissue(good, identity.issuing_key, key_usage(key_agreement=True))  # type: ignore[arg-type]
    before = served(fed)
    response = post(
        fed.box(fed.b, "bob@b.test"),
        one.url,
        fetch_request(one, Token(key, cert, identity.issuing_cert)),
    )
    assert_refused(fed, response, 403, "wsse:SecurityTokenUnavailable", before)
    assert b"digitalSignature" in response.content


def test_a_replayed_fetch_is_refused(fed: Fed, one: AttachmentRef) -> None:
    bob = fed.box(fed.b, "bob@b.test")
    data = fetch_request(one, bob.token())
    assert post(bob, one.url, data).status_code == 200
    before = served(fed)
    assert_refused(fed, post(bob, one.url, data), 401, "wsemail:Replay", before)


def test_no_certificate_or_a_self_signed_one_is_refused(fed: Fed, one: AttachmentRef) -> None:
    bob = fed.box(fed.b, "bob@b.test")
    before = served(fed)
    root = etree.fromstring(fetch_request(one, bob.token()))
    signature = root.find(".//{http://www.w3.org/2000/09/xmldsig#}Signature")
    assert signature is not None
    signature.getparent().remove(signature)  # type: ignore[union-attr]
    assert_refused(fed, post(bob, one.url, soap.serialize(root)), 401, "wsse:FailedCheck", before)
    token = forged_token(fed.identity("b.test"), "bob@b.test", self_signed=True)
    response = post(bob, one.url, fetch_request(one, token))
    assert_refused(fed, response, 403, "wsse:SecurityTokenUnavailable", before)
    # a server certificate is not a user's
    identity = fed.identity("b.test")
    server_token = Token(identity.key, identity.cert, identity.issuing_cert)  # type: ignore[arg-type]
    response = post(bob, one.url, fetch_request(one, server_token))
    assert_refused(fed, response, 403, "wsse:SecurityTokenUnavailable", before)


@pytest.mark.parametrize("name", ["../../etc/passwd", "..", "a/b.txt", "..\\win.ini", "x\x00y"])
def test_path_traversal_in_names_is_refused_and_nothing_stored(
    fed: Fed, tmp_path: Path, name: str
) -> None:
    alice = fed.box(fed.a, "alice@a.test")
    source = tmp_path / "plain.txt"
    source.write_bytes(b"hello")
    blobs = fed.a.count("SELECT count(*) FROM attachment_blobs")
    with pytest.raises((RequestInvalid, UsageError)) as refused:
        alice.upload(source, name=name)
    assert "name" in str(refused.value).lower()
    assert fed.a.count("SELECT count(*) FROM attachment_blobs") == blobs
    assert alice.upload(source).size == 5  # still serving
    for path in (fed.a.config.data_dir / "attachments").rglob("*"):
        assert path.parent.name in ("attachments", "blobs", "tmp")
    assert safe_file_name(name) not in ("", ".", "..") and "/" not in safe_file_name(name)


@pytest.mark.both_stores
def test_an_upload_that_differs_from_its_announcement_leaves_nothing(
    fed: Fed, tmp_path: Path
) -> None:
    alice = fed.box(fed.a, "alice@a.test")
    request = etree.Element(q("BeginUpload"))
    etree.SubElement(request, q("Name")).text = "short.bin"
    etree.SubElement(request, q("Size")).text = "1000"
    ticket = alice.client.extension("attachments", request)
    assert ticket is not None
    url = httpx.URL(fed.a.url).copy_with(
        path=ticket.findtext(q("Path")), query=f"ticket={ticket.findtext(q('Ticket'))}".encode()
    )
    response = alice.client.http.put(url, content=b"x" * 10, extensions={"sni_hostname": "a.test"})
    assert response.status_code == 400
    assert fed.a.count("SELECT count(*) FROM attachment_blobs") == 0
    assert held(fed.a) == []
    assert not list((fed.a.config.data_dir / "attachments" / "tmp").iterdir())
    again = alice.client.http.put(url, content=b"x" * 1000, extensions={"sni_hostname": "a.test"})
    assert again.status_code == 403  # the ticket was good once
    with pytest.raises(RemoteFault):  # an unfinished upload cannot be attached
        alice.client.send(["bob@b.test"], "x", attachments=[ticket.findtext(q("Guid")) or ""])


def _upload_url(box: Attachments, size: int) -> httpx.URL:
    request = etree.Element(q("BeginUpload"))
    etree.SubElement(request, q("Name")).text = "big.bin"
    etree.SubElement(request, q("Size")).text = str(size)
    ticket = box.client.extension("attachments", request)
    assert ticket is not None
    return httpx.URL(box.client.server).copy_with(
        path=ticket.findtext(q("Path")), query=f"ticket={ticket.findtext(q('Ticket'))}".encode()
    )


def _nothing_stored(running: Running) -> bool:
    folder = running.config.data_dir / "attachments"
    return (
        running.count("SELECT count(*) FROM attachment_blobs") == 0
        and not list((folder / "blobs").iterdir())
        and not list((folder / "tmp").iterdir())
    )


def test_an_upload_longer_than_announced_is_cut_off_after_megabytes_written(fed: Fed) -> None:
    # several batches are on disk (hashed and written off the event loop) when the excess
    # arrives: they are waited for, then removed
    alice = fed.box(fed.a, "alice@a.test")
    url = _upload_url(alice, 3 << 20)
    pieces = (bytes([n]) * (1 << 20) for n in range(5))
    response = alice.client.http.put(url, content=pieces, extensions={"sni_hostname": "a.test"})
    assert response.status_code == 413
    assert fault_subcode(response) == "wsemail:TooLarge"
    assert _nothing_stored(fed.a)
    alice.upload_stream([b"x" * 1000], 1000, "small.bin")  # still serving uploads


def test_an_upload_broken_off_midway_leaves_nothing(fed: Fed) -> None:
    alice = fed.box(fed.a, "alice@a.test")
    url = _upload_url(alice, 8 << 20)

    class BrokenOff(Exception):
        pass

    def pieces() -> Iterator[bytes]:
        for n in range(3):
            yield bytes([n]) * (1 << 20)
        raise BrokenOff

    with pytest.raises(BrokenOff):
        alice.client.http.put(url, content=pieces(), extensions={"sni_hostname": "a.test"})
    wait_for(lambda: _nothing_stored(fed.a), "the broken upload to be forgotten")
    alice.upload_stream([b"x" * 1000], 1000, "small.bin")  # still serving uploads


@pytest.mark.both_stores
def test_a_revoked_attachment_is_not_served(fed: Fed, one: AttachmentRef) -> None:
    alice = fed.box(fed.a, "alice@a.test")
    bob = fed.box(fed.b, "bob@b.test")
    path, ticket = bob.authorize(one)  # authorized before the revocation
    alice.revoke(one.guid)
    before = served(fed)
    response = post(bob, one.url, fetch_request(one, bob.token()))
    assert_refused(fed, response, 403, "wsemail:Forbidden", before)
    assert "revoked" in response.text
    url = httpx.URL(one.url).copy_with(path=path, query=f"ticket={ticket}".encode())
    late = bob.client.http.get(url, extensions={"sni_hostname": "a.test"})
    assert late.status_code == 403
    assert one.guid not in held(fed.a)


def test_a_replaced_attachment_points_to_its_newer_version(
    fed: Fed, tmp_path: Path, one: AttachmentRef
) -> None:
    newer = send_with(fed, tmp_path, ["bob@b.test"], 2000, name="report-v2.pdf")
    alice = fed.box(fed.a, "alice@a.test")
    alice.replace(one.guid, newer)
    bob = fed.box(fed.b, "bob@b.test")
    with pytest.raises(Forbidden, match=newer):
        bob.authorize(one)
    ref = ref_for(fed, "bob@b.test", newer)
    assert bob.fetch(ref, tmp_path / "v2").stat().st_size == 2000


@pytest.mark.both_stores
def test_orphaned_uploads_are_swept(fed: Fed, tmp_path: Path) -> None:
    alice = fed.box(fed.a, "alice@a.test")
    source = tmp_path / "orphan.bin"
    source.write_bytes(b"o" * 5000)
    uploaded = alice.upload(source)  # never sent
    assert held(fed.a) == [uploaded.guid]
    if on_postgres(fed.a):  # bytes no row owns
        fed.a.controller.server.store.transact_sync(
            lambda tx: tx.conn.execute(
                "INSERT INTO attachment_chunks(guid, n, data) VALUES (?, 0, ?)", ("f" * 32, b"x")
            )
        )
    else:
        (fed.a.config.data_dir / "attachments" / "blobs" / ("f" * 32)).write_bytes(b"stray")
    assert len(held(fed.a)) == 2
    plugin = next(
        e.plugin for e in fed.a.controller.server.pipeline.listing() if e.name == "attachments"
    )
    plugin.orphan_after = -1  # type: ignore[attr-defined]
    plugin.sweep()  # type: ignore[attr-defined]
    assert fed.a.count("SELECT count(*) FROM attachment_blobs") == 0
    assert held(fed.a) == []
    with pytest.raises(RemoteFault):
        alice.client.send(["bob@b.test"], "late", attachments=[uploaded.guid])


# --- several nodes of one domain (PostgreSQL store) ------------------------------------------


def test_an_attachment_uploaded_through_one_node_is_fetched_through_another(
    tmp_path: Path, pg_url: str
) -> None:
    """Two nodes of a.test over one PostgreSQL database, each with its own data dir: alice
    uploads through node 1 and sends through node 2; carol fetches through node 2 (token,
    authorization and bytes); neither data dir keeps the bytes."""
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    one = start_domain(tmp_path, ca, "a.test", **on_store(pg_url))
    shutil.copytree(tmp_path / "a.test-identity", tmp_path / "node2" / "a.test-identity")
    two = start_domain(tmp_path / "node2", ca, "a.test", **on_store(pg_url))
    fed = Fed(ca, tmp_path, one, two)
    try:
        source = tmp_path / "plan.bin"
        expected = make_file(source, 3 * (1 << 20) + 12_345)  # four chunk rows
        uploaded = fed.box(one, "alice@a.test").upload(source)
        two.client("alice@a.test").send(
            ["carol@a.test"], "plan", "the plan", attachments=[uploaded.guid]
        )
        carol = fed.box(two, "carol@a.test")
        [ref] = carol.list(newest(carol.client)).refs
        assert ref.url == one.url and ref.sha256 == expected
        fetched = carol.fetch(replace(ref, url=two.url), tmp_path / "fetched.bin")
        assert file_sha(fetched) == expected
        events = "SELECT event FROM attachment_audit WHERE address='carol@a.test' ORDER BY seq"
        assert [
            r[0]
            for r in one.controller.server.store.transact_sync(
                lambda tx: tx.conn.execute(events).fetchall()
            )
        ] == ["authorized", "download"]  # node 1 reads what node 2 logged
        for node in (one, two):  # the bytes live in the database only
            assert held(node) == [uploaded.guid]
            folder = node.config.data_dir / "attachments"
            assert not (folder / "blobs").exists() and not list((folder / "tmp").iterdir())
    finally:
        for node in (one, two):
            for client in node.clients:
                client.close()
        one.stop()
        two.stop()
