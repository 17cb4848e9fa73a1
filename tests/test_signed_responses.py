"""Signed server answers (issue 8, DESIGN.md §4): a client with trust roots asks its server
to sign each answer, checks it is signed by its own domain's server certificate, fresh and
bound to its request, and refuses anything else. Real servers on loopback, reached through
a small real HTTP forwarder that can tamper with what passes."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from lxml import etree

from wsemail.client.mail import Client
from wsemail.core.provenance import signed_form
from wsemail.pki import ServerIdentity, issue_server, list_issued, revoke, write_crl
from wsemail.protocol import soap
from wsemail.protocol.auth import IN_RESPONSE_TO
from wsemail.protocol.dsig import DS, Signer, add_timestamp, verify_element, verify_envelope
from wsemail.protocol.errors import (
    MessageExpired,
    ReplayDetected,
    SignatureInvalid,
    UntrustedSigner,
)
from wsemail.protocol.message import Message
from wsemail.protocol.soap import SOAP, WSSE, WSU, q
from wsemail.server.security import AnswerBinding, signed_answer

from conftest import PASSWORD, Cli, Running, wsemail_binary

Mutate = Callable[[bytes, bytes], bytes]


class Forwarder:
    """A real HTTP forwarder on a loopback port: requests go to `upstream` (after
    `on_request`), answers come back through `on_answer(request, answer)`."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rsplit("/wsemail", 1)[0]
        self.on_request: Callable[[bytes], bytes] = lambda data: data
        self.on_answer: Mutate = lambda request, answer: answer
        self.seen: list[tuple[bytes, bytes]] = []  # (request, answer as forwarded)
        forwarder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.forward(b"")

            def do_POST(self) -> None:
                self.forward(self.rfile.read(int(self.headers["content-length"])))

            def forward(self, data: bytes) -> None:
                if data:
                    data = forwarder.on_request(data)
                got = httpx.request(
                    self.command,
                    forwarder.upstream + self.path,
                    content=data or None,
                    headers={"content-type": soap.CONTENT_TYPE},
                    timeout=30,
                )
                answer = got.content
                if data and got.status_code == 200:
                    answer = forwarder.on_answer(data, answer)
                    forwarder.seen.append((data, answer))
                self.send_response(got.status_code)
                self.send_header("content-type", got.headers.get("content-type", "text/plain"))
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def calls(self) -> list[tuple[bytes, bytes]]:
        """Authenticated exchanges (not the salt look-up)."""
        return [(r, a) for r, a in self.seen if b"<w:GetSalt>" not in r]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/wsemail"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def proxy(server: Running) -> Iterator[Forwarder]:
    forwarder = Forwarder(server.url)
    yield forwarder
    forwarder.close()


def root_of(server: Running) -> Path:
    return server.config.trust_roots[0]


def client(server: Running, url: str, user: str = "bob@localhost", trust: bool = True) -> Client:
    c = Client(url, user, PASSWORD, trust_roots=[root_of(server)] if trust else None)
    server.clients.append(c)
    return c


def signer_of(server: Running) -> Signer:
    federation = server.controller.server.federation
    assert federation is not None
    return federation.signer


def resign(answer: bytes, signer: Signer, *, now: float | None = None) -> bytes:
    """The same answer payload signed again by `signer` (at `now`, default: the clock)."""
    root = etree.fromstring(answer)
    payload = root.find(q("Body", SOAP))[0]  # type: ignore[index]
    nonce = payload.get(IN_RESPONSE_TO) or ""
    return signed_answer(signer, payload, AnswerBinding(nonce, None), now or time.time())


def test_answers_are_signed_and_the_certificate_is_embedded_only_on_first_contact(
    server: Running, proxy: Forwarder
) -> None:
    server.client("alice@localhost").send(["bob@localhost"], "signed", "an answer")
    bob = client(server, proxy.url)
    bob.list_headers()
    header = bob.list_headers().headers[0]
    assert bob.retrieve(header.id).body == "an answer"
    assert bob.answer_check == "verified"
    first, second, third = (answer for _, answer in proxy.calls)
    assert b"X509Certificate" in first and b"X509Digest" not in first
    for later in (second, third):
        assert b"X509Digest" in later and b"X509Certificate" not in later
    assert len(first) - len(second) > 400  # the certificate travelled once
    # the client says which certificate it holds only once it holds it
    requests = [request for request, _ in proxy.calls]
    assert b"SignResponse" in requests[0] and b"ServerCertificate" not in requests[0]
    assert b"ServerCertificate" in requests[1]


def test_the_cli_verifies_the_answer_and_reports_it(server: Running, cli: Cli) -> None:
    server.client("alice@localhost").send(["bob@localhost"], "via cli", "checked")
    bob = server.client("bob@localhost")
    message_id = bob.list_headers().headers[0].id
    plain = json.loads(cli("retrieve", "--json", message_id, user="bob@localhost").stdout)
    assert plain["answer"] == "unchecked" and plain["body"] == "checked"
    env_roots = {"WSEMAIL_TRUST_ROOTS": str(root_of(server))}
    checked = _run(cli, env_roots, "retrieve", message_id)
    assert checked.returncode == 0, checked.stderr
    assert "Server answer: signed by your server ✓" in checked.stdout


def _run(
    cli: Cli, extra: dict[str, str], *args: str, server: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The real `wsemail` binary as bob, with `extra` environment."""
    env = {**cli.env("bob@localhost"), **extra}
    if server is not None:
        env["WSEMAIL_SERVER"] = server
    return subprocess.run(
        [wsemail_binary(), *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_a_tampered_answer_is_refused_and_the_server_still_answers(
    server: Running, proxy: Forwarder, cli: Cli
) -> None:
    server.client("alice@localhost").send(["bob@localhost"], "tamper me", "body")
    proxy.on_answer = lambda request, answer: answer.replace(b"tamper me", b"tamper mE")
    with pytest.raises(SignatureInvalid, match="refused"):
        client(server, proxy.url).list_headers()
    done = _run(cli, {"WSEMAIL_TRUST_ROOTS": str(root_of(server))}, "list", server=proxy.url)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "refused" in done.stderr
    assert "Traceback" not in done.stderr
    # the same answer untouched, and the server itself, are fine
    proxy.on_answer = lambda request, answer: answer
    assert [h.subject for h in client(server, proxy.url).list_headers().headers] == ["tamper me"]
    assert server.client("bob@localhost").list_headers().headers


def test_an_older_signed_answer_replayed_to_a_new_request_is_refused(
    server: Running, proxy: Forwarder
) -> None:
    server.client("alice@localhost").send(["bob@localhost"], "old", "news")
    kept: list[bytes] = []

    def replay(request: bytes, answer: bytes) -> bytes:
        if b"<w:GetSalt>" in request:
            return answer
        if not kept:
            kept.append(answer)
        return kept[0]

    proxy.on_answer = replay
    bob = client(server, proxy.url)
    assert bob.list_headers().headers[0].subject == "old"
    with pytest.raises(ReplayDetected, match="another request"):
        bob.list_headers()
    assert server.client("bob@localhost").list_headers().headers


def test_an_answer_signed_by_another_domains_server_is_refused(
    server: Running, proxy: Forwarder, tmp_path: Path
) -> None:
    other = tmp_path / "other-identity"
    issue_server(server.config.data_dir / "federation-ca", "other.test", other)
    identity = ServerIdentity.load(other)
    foreign = Signer(identity.key, identity.cert)
    proxy.on_answer = lambda request, answer: resign(answer, foreign)
    with pytest.raises(UntrustedSigner, match="other.test"):
        client(server, proxy.url).list_headers()
    # the same re-signing with the real server key passes: the check is the signer's domain
    proxy.on_answer = lambda request, answer: resign(answer, signer_of(server))
    assert client(server, proxy.url).list_headers().headers == []


def test_an_unsigned_or_stale_answer_is_refused(server: Running, proxy: Forwarder) -> None:
    # the forwarder drops the client's request for a signature: the answer comes unsigned
    proxy.on_request = lambda data: data.replace(b"<w:SignResponse/>", b"")
    with pytest.raises(SignatureInvalid, match="not signed"):
        client(server, proxy.url).list_headers()
    proxy.on_request = lambda data: data
    proxy.on_answer = lambda request, answer: resign(
        answer, signer_of(server), now=time.time() - 3600
    )
    with pytest.raises(MessageExpired, match="refused"):
        client(server, proxy.url).list_headers()


def test_without_trust_roots_answers_are_unchecked_and_unsigned(
    server: Running, proxy: Forwarder
) -> None:
    bob = client(server, proxy.url, trust=False)
    assert bob.list_headers().headers == []
    assert bob.answer_check == "unchecked"
    [(request, answer)] = proxy.calls
    assert b"SignResponse" not in request and f"{{{DS}}}".encode() not in answer
    assert b"Signature" not in answer


def test_the_fast_signature_is_standard_xmldsig_that_signxml_verifies(server: Running) -> None:
    signer = signer_of(server)
    for embed in (True, False):
        env, header, body = soap.new_envelope()
        security = etree.SubElement(header, q("Security", WSSE), nsmap={"wsse": WSSE, "wsu": WSU})
        add_timestamp(security, "2026-01-01T00:00:00.000Z", "2026-01-01T00:05:00.000Z")
        etree.SubElement(body, q("ListHeadersResponse")).set(IN_RESPONSE_TO, "n")
        signer.sign_envelope_fast(env, embed=embed)
        root = etree.fromstring(soap.serialize(env))
        verified = verify_envelope(root, lambda cert: "localhost", lambda digest: signer.cert)
        assert verified.cert == signer.cert
        assert verified.operation.get(IN_RESPONSE_TO) == "n"
        # and a changed byte does not verify
        root.find(f"{q('Body', SOAP)}/{q('ListHeadersResponse')}").set(IN_RESPONSE_TO, "m")  # type: ignore[union-attr]
        with pytest.raises(SignatureInvalid):
            verify_envelope(root, lambda cert: "localhost", lambda digest: signer.cert)


def test_an_answer_signed_by_a_revoked_server_certificate_is_refused(server: Running) -> None:
    ca = server.config.data_dir / "federation-ca"
    serial = next(
        r.serial for r in list_issued(ca) if r.domain == "localhost" and r.kind == "server"
    )
    revoke(ca, serial)
    write_crl(ca)  # the server hands its clients this CRL
    with pytest.raises(UntrustedSigner, match="revoked"):
        client(server, server.url).list_headers()


def test_the_fast_enveloped_signature_of_relayed_mail_is_what_signxml_verifies(
    server: Running,
) -> None:
    signer = signer_of(server)
    message = Message(
        "",
        "<m@localhost>",
        "inbox",
        "alice@localhost",
        ["bob@b.test"],
        [],
        "s & <t>",
        "2026-01-01T00:00:00Z",
        1,
        False,
        body="héllo\r\n",
    )
    form = signed_form("localhost", "b.test", ["bob@b.test"], message)
    signed = etree.tostring(signer.sign_element_fast(form))
    cert, domain, verified = verify_element(signed, lambda cert: "localhost")
    assert cert == signer.cert and verified.findtext(f"{q('Content')}/{q('Body')}") == "héllo\r\n"
    with pytest.raises(SignatureInvalid):
        verify_element(signed.replace(b"b.test<", b"c.test<"), lambda cert: "localhost")
