"""The paper's correspondence property for on-demand attachments (ICWS 2005 §4), checked
against an active attacker: hypothesis drives real SC/SS/RS/RC (alice@a.test and her
server, bob@b.test and his) while an attacker who sees the traffic and owns a third
domain's server (c.test) replays, reorders, tampers with and forges messages and tokens.

Property, after every step: if RC accepted an attachment with SC as return address, then
SC sent exactly those bytes to RC.
"""

from __future__ import annotations

import base64
import hashlib
import os
import ssl
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from lxml import etree
from test_federation import start_domain

from wsemail.client.attachments import Attachments, fetch_request
from wsemail.core.provenance import signed_form
from wsemail.core.routing import StaticResolver
from wsemail.pki import ServerIdentity, create_root, issue_server, write_crl
from wsemail.protocol import soap
from wsemail.protocol.auth import timestamp
from wsemail.protocol.dsig import Signer, add_timestamp
from wsemail.protocol.errors import WsemailError
from wsemail.protocol.message import AttachmentRef, Message
from wsemail.protocol.soap import WSSE, WSU, element, q

from conftest import PASSWORD, Running


@dataclass
class World:
    """Real servers shared by every example (starting them per example would be slow)."""

    ca: Path
    tmp: Path
    a: Running
    b: Running
    mallory_server: ServerIdentity  # the attacker owns c.test's server key
    sent: dict[str, tuple[str, str, set[str]]] = field(default_factory=dict)
    # guid -> (sender, sha256, recipients) for what SC really sent
    accepted: int = 0  # fetches RC accepted, over all examples (the test is not vacuous)
    attacks: int = 0  # attacker steps that reached a server

    def box(self, running: Running, user: str) -> Attachments:
        client = running.client(user)
        client.trust_roots = [self.ca / "root.pem"]
        return Attachments(client)


WORLD: World | None = None


def forged_deliver(signer_identity: ServerIdentity, origin: str, message: Message) -> bytes:
    """A Deliver transaction to b.test signed by `signer_identity` claiming `origin`."""
    signer = Signer(signer_identity.key, signer_identity.cert)
    env, header, body = soap.new_envelope()
    security = etree.SubElement(header, q("Security", WSSE), nsmap={"wsse": WSSE, "wsu": WSU})
    now = datetime.now(UTC)
    add_timestamp(security, timestamp(now), timestamp(now + timedelta(minutes=5)))
    op = etree.SubElement(body, q("Deliver"))
    element(op, "Origin", origin)
    element(op, "Destination", "b.test")
    element(op, "Nonce", base64.b64encode(os.urandom(16)).decode())
    op.append(signer.sign_element(signed_form(origin, "b.test", ["bob@b.test"], message)))
    signer.sign_envelope(env)
    return soap.serialize(env)


class AttachmentProtocol(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        assert WORLD is not None
        self.w = WORLD
        self.alice = self.w.box(self.w.a, "alice@a.test")
        self.eve = self.w.box(self.w.a, "eve@a.test")  # a legitimate but hostile user of SS
        self.bob = self.w.box(self.w.b, "bob@b.test")
        self.seen_fetches: list[bytes] = []  # signed FetchAttachment requests on the wire
        self.seen_refs: list[AttachmentRef] = []
        self.accepted: list[tuple[str, str, bytes]] = []  # (shown sender, guid, bytes)
        context = ssl.create_default_context(cafile=str(self.w.ca / "root.pem"))
        self.http = httpx.Client(verify=context, timeout=10)

    def teardown(self) -> None:
        self.http.close()

    def post(self, url: str, data: bytes, server: str) -> httpx.Response:
        return self.http.post(
            url,
            content=data,
            headers={"content-type": soap.CONTENT_TYPE},
            extensions={"sni_hostname": server},
        )

    def upload(self, box: Attachments, payload: bytes) -> str:
        path = self.w.tmp / f"f-{time.monotonic_ns()}.bin"
        path.write_bytes(payload)
        return box.upload(path).guid

    # honest principals -------------------------------------------------------------------
    @initialize()
    def start(self) -> None:
        for running in (self.w.a, self.w.b):
            running.client("carol@a.test" if running is self.w.a else "carol@b.test")

    @rule(payload=st.binary(min_size=1, max_size=2048))
    def alice_sends(self, payload: bytes) -> None:
        guid = self.upload(self.alice, payload)
        self.alice.client.send(["bob@b.test"], "from alice", "attached", attachments=[guid])
        self.w.sent[guid] = ("alice@a.test", hashlib.sha256(payload).hexdigest(), {"bob@b.test"})

    @rule(payload=st.binary(min_size=1, max_size=512))
    def eve_sends(self, payload: bytes) -> None:
        guid = self.upload(self.eve, payload)
        self.eve.client.send(["bob@b.test"], "from alice", "trust me", attachments=[guid])
        self.w.sent[guid] = ("eve@a.test", hashlib.sha256(payload).hexdigest(), {"bob@b.test"})

    @rule(data=st.data())
    def bob_reads_and_fetches(self, data: st.DataObject) -> None:
        if self.w.sent:  # give the relay a moment to bring what was sent
            deadline = time.monotonic() + 5
            while not self.bob.client.list_headers(limit=1).headers:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        headers = self.bob.client.list_headers(limit=20).headers
        if not headers:
            return
        header = data.draw(st.sampled_from(headers))
        try:
            listing = self.bob.list(header.id)
        except WsemailError:
            return  # refused to trust it: nothing accepted
        for ref in listing.refs:
            self.seen_refs.append(ref)
            token = self.bob.token()
            request = fetch_request(ref, token)
            self.seen_fetches.append(request)  # the attacker sees it go by
            dest = self.w.tmp / f"got-{time.monotonic_ns()}"
            try:
                self.bob.fetch(ref, dest)
            except WsemailError:
                continue
            self.accepted.append((listing.message.sender, ref.guid, dest.read_bytes()))
            self.w.accepted += 1

    # the attacker ------------------------------------------------------------------------
    @rule(data=st.data())
    def replay_a_fetch(self, data: st.DataObject) -> None:
        if not self.seen_fetches:
            return
        request = data.draw(st.sampled_from(self.seen_fetches))
        response = self.post(self.w.a.url, request, "a.test")
        self.w.attacks += 1
        if response.status_code == 200:  # only a request never used before may succeed
            assert request not in self.seen_fetches[:-1] or self.seen_fetches.count(request) == 1

    @rule(data=st.data())
    def retarget_a_fetch(self, data: st.DataObject) -> None:
        """Tamper: a seen request edited to name another attachment."""
        if len(self.seen_refs) < 2 or not self.seen_fetches:
            return
        request = data.draw(st.sampled_from(self.seen_fetches))
        other = data.draw(st.sampled_from(self.seen_refs))
        root = etree.fromstring(request)
        guid = root.find(f".//{q('Guid')}")
        assert guid is not None
        if guid.text == other.guid:
            return
        guid.text = other.guid
        response = self.post(self.w.a.url, etree.tostring(root), "a.test")
        self.w.attacks += 1
        assert response.status_code != 200, "a tampered FetchAttachment was honoured"

    @rule(data=st.data())
    def mallory_fetches_with_her_own_token(self, data: st.DataObject) -> None:
        """Impersonate: a valid certificate of c.test, for bob's address or her own."""
        if not self.seen_refs:
            return
        ref = data.draw(st.sampled_from(self.seen_refs))
        address = data.draw(st.sampled_from(["bob@b.test", "mallory@c.test"]))
        from cryptography.hazmat.primitives.asymmetric import ec

        from wsemail.client.attachments import Token

        key = ec.generate_private_key(ec.SECP256R1())
        try:
            cert = self.w.mallory_server.issue_user_cert(
                address, key.public_key(), lifetime=timedelta(hours=1)
            )
        except WsemailError:
            # c.test's server refuses to vouch for b.test: the attacker forges one anyway
            # with the raw key — name constraints of c.test's issuing CA reject it below
            from cryptography import x509
            from cryptography.hazmat.primitives import hashes
            from cryptography.x509.oid import NameOID

            now = datetime.now(UTC)
            cert = (
                x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
                .issuer_name(self.w.mallory_server.issuing_cert.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(minutes=5))
                .not_valid_after(now + timedelta(hours=1))
                .add_extension(
                    x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False
                )
                .sign(self.w.mallory_server.issuing_key, hashes.SHA256())
            )
        token = Token(key, cert, self.w.mallory_server.issuing_cert)
        response = self.post(ref.url, fetch_request(ref, token), ref.server)
        self.w.attacks += 1
        assert response.status_code != 200, "a fetch with a c.test certificate was honoured"

    @rule(payload=st.binary(min_size=1, max_size=256), forge_origin=st.booleans())
    def forge_a_message_from_alice(self, payload: bytes, forge_origin: bool) -> None:
        """Forge: c.test's server signs mail 'from alice@a.test' with a reference to bytes
        the attacker chose (hosted on c.test, or pretending to be on a.test)."""
        digest = hashlib.sha256(payload).hexdigest()
        server = "a.test" if forge_origin else "c.test"
        ref = AttachmentRef(
            server,
            f"https://{server}/wsemail",
            f"forged-{time.time_ns()}",
            "invoice.pdf",
            len(payload),
            "application/pdf",
            digest,
        )
        message = Message(
            id="",
            message_id=f"<forged-{time.time_ns()}@a.test>",
            folder="sent",
            sender="alice@a.test",
            to=["bob@b.test"],
            cc=[],
            subject="from alice",
            date="2026-11-25T12:00:00Z",
            size=1,
            seen=True,
            body="pay this",
            attachments=[ref],
        )
        origin = "a.test" if forge_origin else "c.test"  # a.test's name with c.test's key
        response = self.post(
            self.w.b.url, forged_deliver(self.w.mallory_server, origin, message), "b.test"
        )
        self.w.attacks += 1
        assert response.status_code != 200, f"b.test took a forgery (origin {origin})"

    # the property ------------------------------------------------------------------------
    @invariant()
    def accepted_attachments_were_sent_by_their_sender(self) -> None:
        for sender, guid, payload in self.accepted:
            assert guid in self.w.sent, f"accepted an attachment nobody sent: {guid}"
            real_sender, sha, recipients = self.w.sent[guid]
            assert sender == real_sender, f"{guid} shown as from {sender}, sent by {real_sender}"
            assert hashlib.sha256(payload).hexdigest() == sha
            assert "bob@b.test" in recipients


def test_correspondence_holds_against_an_active_attacker(tmp_path: Path) -> None:
    global WORLD
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    a, b = (start_domain(tmp_path, ca, d) for d in ("a.test", "b.test"))
    issue_server(ca, "c.test", tmp_path / "c-identity")
    from wsemail.server.accounts import set_user

    set_user(a.controller.server.store, "a.test", "eve@a.test", PASSWORD)
    routes = {"a.test": [a.url], "b.test": [b.url]}
    for running in (a, b):
        running.controller.server.federation.resolver = StaticResolver(routes)  # type: ignore[union-attr]
    WORLD = World(ca, tmp_path, a, b, ServerIdentity.load(tmp_path / "c-identity"))
    try:
        AttachmentProtocol.TestCase.settings = settings(
            max_examples=20,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        AttachmentProtocol.TestCase().runTest()
        assert WORLD.accepted > 0 and WORLD.attacks > 0, (WORLD.accepted, WORLD.attacks)
    finally:
        WORLD = None
        for running in (a, b):
            for client in running.clients:
                client.close()
        a.stop()
        b.stop()
