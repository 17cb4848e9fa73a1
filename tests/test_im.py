"""Instant messages between two real TLS domains on loopback: live push over server-sent
events, mailbox fallback flagged as meant-as-IM, "delete if undeliverable" with a notice,
presence, allow / block lists and the other-domain policy, and "send directly to recipient"
with a federated identity; every refusal leaves nothing stored and the server serving."""

from __future__ import annotations

import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from test_federation import start_domain

from wsemail.client.attachments import Token
from wsemail.client.im import Incoming, InstantMessenger, Stream, direct_request
from wsemail.core.routing import StaticResolver
from wsemail.pki import ServerIdentity, create_root, issue_server, write_crl
from wsemail.protocol.errors import Rejected, RequestInvalid
from wsemail.protocol.message import Draft
from wsemail.server.config import DEFAULT_PLUGINS
from wsemail.server.pipeline import PluginSpec

from conftest import PASSWORD, Running, inbox, wait_for

IM = "wsemail.server.im:InstantMessaging"


def plugins(**options: object) -> list[PluginSpec]:
    return [
        *(spec for spec in DEFAULT_PLUGINS if spec.ref != "im"),
        PluginSpec("im", 40, dict(options)),
    ]


@dataclass
class Fed:
    ca: Path
    tmp: Path
    a: Running
    b: Running
    streams: list[Listening] = field(default_factory=list)

    def im(self, running: Running, user: str) -> InstantMessenger:
        client = running.client(user)
        client.trust_roots = [self.ca / "root.pem"]
        return InstantMessenger(client)

    def listen(self, running: Running, user: str) -> Listening:
        listening = Listening(self.im(running, user).listen())
        self.streams.append(listening)
        return listening

    def close(self) -> None:
        """End the live sessions, the clients and both servers."""
        for listening in self.streams:
            listening.close()
        for running in (self.a, self.b):
            for client in running.clients:
                client.close()
        self.b.stop()
        self.a.stop()


class Listening:
    """A live session read by a background thread."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.got: list[Incoming] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for item in self.stream:
            self.got.append(item)

    def messages(self) -> list[Incoming]:
        return [i for i in self.got if i.kind == "message"]

    def close(self) -> None:
        self.stream.close()
        self.thread.join(10)


def route(a: Running, b: Running) -> None:
    routes = {"a.test": [a.url], "b.test": [b.url]}
    for running in (a, b):
        assert running.controller.server.federation is not None
        running.controller.server.federation.resolver = StaticResolver(routes)


@pytest.fixture
def fed(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Fed]:
    options = getattr(request, "param", {})
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    a = start_domain(tmp_path, ca, "a.test", plugins=plugins())
    b = start_domain(tmp_path, ca, "b.test", plugins=plugins(**options))
    route(a, b)
    federation = Fed(ca, tmp_path, a, b)
    yield federation
    federation.close()


def stored_for(running: Running, user: str) -> int:
    return running.count(f"SELECT count(*) FROM messages WHERE owner='{user}' AND folder='inbox'")


def test_im_reaches_a_live_listener_in_another_domain_signed(fed: Fed) -> None:
    bob = fed.listen(fed.b, "bob@b.test")
    alice = fed.im(fed.a, "alice@a.test")
    alice.send("bob@b.test", "hello bob, live")
    wait_for(lambda: bob.messages(), "the push to bob")
    pushed = bob.messages()[0]
    assert pushed.sender == "alice@a.test" and pushed.body == "hello bob, live"
    proof, message = fed.im(fed.b, "bob@b.test").verify(pushed)
    assert proof.status == "verified" and proof.signer == "a.test"
    assert message.instant and message.body == "hello bob, live"
    assert stored_for(fed.b, "bob@b.test") == 0  # pushed, not kept in the mailbox
    bob_im = fed.im(fed.b, "bob@b.test")

    def outcomes() -> list[tuple[object, object]]:
        return [(h["from"], h["outcome"]) for h in bob_im.history()]

    wait_for(lambda: outcomes() == [("alice@a.test", "acked")], "the listener's acknowledgement")


def test_im_reaches_a_live_listener_on_the_same_server(fed: Fed) -> None:
    carol = fed.listen(fed.a, "carol@a.test")
    fed.im(fed.a, "alice@a.test").send("carol@a.test", "hi carol")
    wait_for(lambda: carol.messages(), "the push to carol")
    assert carol.messages()[0].body == "hi carol"
    proof, _ = fed.im(fed.a, "carol@a.test").verify(carol.messages()[0])
    assert proof.status == "local"
    assert stored_for(fed.a, "carol@a.test") == 0


def test_offline_im_lands_in_the_mailbox_meant_as_an_instant_message(fed: Fed) -> None:
    fed.im(fed.a, "alice@a.test").send("bob@b.test", "are you there?")
    wait_for(lambda: inbox(fed.b, "bob@b.test"), "bob's mailbox copy")
    bob = fed.im(fed.b, "bob@b.test")
    [missed] = bob.missed()
    proof, message = bob.client.verify(bob.client.retrieve(missed))
    assert proof.status == "verified" and message.instant and message.body == "are you there?"
    assert message.as_dict()["instant"] is True


def test_delete_if_undeliverable_drops_it_and_tells_the_sender_across_domains(fed: Fed) -> None:
    fed.im(fed.a, "alice@a.test").send("bob@b.test", "now or never", delete_if_undeliverable=True)
    wait_for(lambda: inbox(fed.a, "alice@a.test"), "alice's notice")
    [subject] = inbox(fed.a, "alice@a.test")
    assert subject.startswith("Undeliverable")
    notice = fed.a.client("alice@a.test")
    body = notice.retrieve(notice.list_headers().headers[0].id).body
    assert "not online" in body
    assert stored_for(fed.b, "bob@b.test") == 0
    assert fed.b.count("SELECT count(*) FROM im_history") == 0


def test_delete_if_undeliverable_on_the_same_server_notifies_at_once(fed: Fed) -> None:
    alice_live = fed.listen(fed.a, "alice@a.test")
    fed.im(fed.a, "alice@a.test").send("carol@a.test", "ping", delete_if_undeliverable=True)
    assert inbox(fed.a, "alice@a.test") == ["Undeliverable instant message to carol@a.test"]
    assert stored_for(fed.a, "carol@a.test") == 0
    wait_for(lambda: alice_live.got, "the notice pushed to alice")
    assert alice_live.got[0].kind == "notice"


def test_presence_shows_live_sessions(fed: Fed) -> None:
    alice = fed.im(fed.a, "alice@a.test")
    assert {c.address: c.status for c in alice.who(["carol@a.test", "bob@b.test"])} == {
        "carol@a.test": "offline",
        "bob@b.test": "unknown",
    }
    carol = fed.listen(fed.a, "carol@a.test")
    assert [(c.address, c.status) for c in alice.who()] == [("carol@a.test", "online")]
    carol.close()
    wait_for(lambda: alice.who(["carol@a.test"])[0].status == "offline", "carol offline")


def test_block_list_refuses_the_sender_and_stores_nothing(fed: Fed) -> None:
    fed.im(fed.b, "bob@b.test").block("alice@a.test")
    fed.im(fed.a, "alice@a.test").send("bob@b.test", "let me in")
    wait_for(lambda: inbox(fed.a, "alice@a.test"), "alice's bounce")
    assert stored_for(fed.b, "bob@b.test") == 0
    # plain mail is not instant messaging: it still arrives
    fed.a.client("alice@a.test").send(["bob@b.test"], "plain mail")
    wait_for(lambda: inbox(fed.b, "bob@b.test") == ["plain mail"], "the plain mail")


def test_local_block_and_allow_lists(fed: Fed) -> None:
    carol = fed.im(fed.a, "carol@a.test")
    carol.allow("bob@a.test")
    assert carol.acl() == {"allow": ["bob@a.test"], "block": []}
    before = fed.a.stored()
    with pytest.raises(Rejected, match="allow list"):
        fed.im(fed.a, "alice@a.test").send("carol@a.test", "not on your list")
    assert fed.a.stored()[0] == before[0]  # nothing stored (not even alice's sent copy)
    assert carol.who(["alice@a.test"])[0].status == "offline"
    fed.im(fed.a, "bob@a.test").send("carol@a.test", "on your list")
    assert carol.missed()
    with pytest.raises(RequestInvalid):
        carol.set_acl("allow", "not an address")
    with pytest.raises(RequestInvalid):
        carol.set_acl("maybe", "bob@a.test")


@pytest.mark.parametrize("fed", [{"remote_policy": "deny"}], indirect=True)
def test_other_domain_policy_deny(fed: Fed) -> None:
    fed.im(fed.a, "alice@a.test").send("bob@b.test", "from afar")
    wait_for(lambda: inbox(fed.a, "alice@a.test"), "alice's bounce")
    assert stored_for(fed.b, "bob@b.test") == 0
    fed.im(fed.b, "bob@b.test").allow("alice@a.test")  # an explicit contact still may
    fed.im(fed.a, "alice@a.test").send("bob@b.test", "from a contact")
    wait_for(lambda: inbox(fed.b, "bob@b.test"), "the allowed IM")


def test_bad_flags_and_bad_stream_tickets_are_refused(fed: Fed) -> None:
    alice = fed.a.client("alice@a.test")
    before = fed.a.stored()[0]
    from lxml import etree

    from wsemail.protocol.soap import element, q

    op = etree.Element(q("Send"))
    Draft(["carol@a.test"], "x", "y").to_xml(op)
    element(op.find(q("Message")), "Instant", "maybe")  # type: ignore[arg-type]
    with pytest.raises(RequestInvalid):
        alice.call(op)
    assert fed.a.stored()[0] == before
    url = httpx.URL(fed.a.url).copy_with(path="/wsemail/im/stream", query=b"ticket=" + b"x" * 40)
    with httpx.Client(verify=ssl.create_default_context(cafile=str(fed.ca / "root.pem"))) as http:
        response = http.get(url, extensions={"sni_hostname": "a.test"})
        assert response.status_code == 401
    # a ticket works once
    im = fed.im(fed.a, "alice@a.test")
    ticket_op = etree.Element(q("OpenStream"))
    answer = im._call(ticket_op)
    ticket = answer.findtext(q("Ticket"))
    url = httpx.URL(fed.a.url).copy_with(
        path="/wsemail/im/stream", query=f"ticket={ticket}".encode()
    )
    with Stream(alice.http, url, alice.extensions):
        pass
    with pytest.raises(Exception, match="not valid"):
        Stream(alice.http, url, alice.extensions)
    assert alice.list_headers().headers == []  # still serving


def _token(fed: Fed, running: Running, user: str) -> Token:
    from wsemail.client.attachments import Attachments

    return Attachments(running.client(user)).token()


def test_send_directly_to_the_recipients_server(fed: Fed) -> None:
    bob = fed.listen(fed.b, "bob@b.test")
    alice = fed.im(fed.a, "alice@a.test")
    result = alice.send_direct("bob@b.test", "straight to you", fed.b.url)
    assert result.outcomes == {"bob@b.test": ("pushed", "")}
    wait_for(lambda: bob.messages(), "the direct push")
    assert bob.messages()[0].sender == "alice@a.test"
    offline = alice.send_direct("carol@b.test", "gone", fed.b.url, delete_if_undeliverable=True)
    assert offline.outcomes["carol@b.test"][0] == "rejected"
    assert stored_for(fed.b, "carol@b.test") == 0
    kept = alice.send_direct("carol@b.test", "keep it", fed.b.url)
    assert kept.outcomes["carol@b.test"][0] == "mailbox"


def _post(fed: Fed, data: bytes) -> httpx.Response:
    with httpx.Client(
        verify=ssl.create_default_context(cafile=str(fed.ca / "root.pem")), timeout=10
    ) as http:
        return http.post(
            fed.b.url,
            content=data,
            headers={"content-type": "application/soap+xml"},
            extensions={"sni_hostname": "b.test"},
        )


def test_direct_requests_that_must_be_refused(fed: Fed) -> None:
    token = _token(fed, fed.a, "alice@a.test")
    draft = Draft(["bob@b.test"], "Instant message", "hi")
    before = (stored_for(fed.b, "bob@b.test"), fed.b.count("SELECT count(*) FROM nonces"))
    nonce = b"n" * 16
    assert _post(fed, direct_request(draft, "b.test", token, nonce=nonce)).status_code == 200
    # the same request again
    replay = _post(fed, direct_request(draft, "b.test", token, nonce=nonce))
    assert replay.status_code in (400, 401, 403) and b"already" in replay.content
    after_first = (stored_for(fed.b, "bob@b.test"), fed.b.count("SELECT count(*) FROM nonces"))
    # addressed to another server; a recipient elsewhere; stale; untrusted root
    refused = [
        direct_request(draft, "a.test", token),
        direct_request(Draft(["bob@a.test"], "x", "y"), "b.test", token),
        direct_request(draft, "b.test", token, now=datetime.now(UTC) - timedelta(hours=2)),
    ]
    other = tmp_root_token(fed, token)
    refused.append(direct_request(draft, "b.test", other))
    for data in refused:
        response = _post(fed, data)
        assert response.status_code in (400, 401, 403), response.text
    assert (
        stored_for(fed.b, "bob@b.test"),
        fed.b.count("SELECT count(*) FROM nonces"),
    ) == after_first
    assert after_first[0] == before[0] + 1
    assert fed.b.client("bob@b.test").list_headers().headers  # still serving


def tmp_root_token(fed: Fed, genuine: Token) -> Token:
    """A certificate for alice@a.test from an a.test identity under a root b.test does not
    trust."""
    rogue = fed.tmp / "rogue-ca"
    create_root(rogue)
    issue_server(rogue, "a.test", fed.tmp / "rogue-a")
    identity = ServerIdentity.load(fed.tmp / "rogue-a")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = identity.issue_user_cert("alice@a.test", key.public_key(), lifetime=timedelta(hours=1))
    return Token(key, cert, identity.issuing_cert)


def test_cli_send_and_listen_json(fed: Fed) -> None:
    env = {
        "WSEMAIL_CACERT": str(fed.ca / "root.pem"),
        "WSEMAIL_TRUST_ROOTS": str(fed.ca / "root.pem"),
        "WSEMAIL_PASSWORD": PASSWORD,
        "PATH": "/usr/bin:/bin",
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
        "HOME": str(fed.tmp),
    }
    run = "from wsemail.cli.im import app; app()"
    listener = subprocess.Popen(
        [sys.executable, "-c", run, "listen", "--json", "--count", "1"],
        env={
            **env,
            "WSEMAIL_SERVER": fed.b.url,
            "WSEMAIL_USER": "bob@b.test",
            "WSEMAIL_TLS_NAME": "b.test",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        bob = fed.im(fed.a, "alice@a.test")
        wait_for(
            lambda: fed.im(fed.b, "carol@b.test").who(["bob@b.test"])[0].status == "online",
            "bob online",
        )
        sender_env = {
            **env,
            "WSEMAIL_SERVER": fed.a.url,
            "WSEMAIL_USER": "alice@a.test",
            "WSEMAIL_TLS_NAME": "a.test",
        }
        sent = subprocess.run(
            [sys.executable, "-c", run, "send", "bob@b.test", "from the CLI"],
            env=sender_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert sent.returncode == 0, sent.stderr
        out, err = listener.communicate(timeout=60)
        assert listener.returncode == 0, err
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.communicate()
    import json

    [line] = out.splitlines()
    record = json.loads(line)
    assert record["from"] == "alice@a.test" and record["body"] == "from the CLI"
    assert record["provenance"]["status"] == "verified"
    del bob


def test_stop_is_prompt_with_keep_alive_peers_and_push_streams_and_loses_no_answered_send(
    tmp_path: Path,
) -> None:
    """A hang guard, not a timing assertion: before, stop() waited for every idle TLS
    keep-alive connection's close_notify and for push streams that never end (15 s and more)."""
    import sqlite3
    import time

    from wsemail.protocol.errors import WsemailError

    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    a = start_domain(tmp_path, ca, "a.test", plugins=plugins())
    b = start_domain(tmp_path, ca, "b.test", plugins=plugins())
    route(a, b)
    federation = Fed(ca, tmp_path, a, b)
    try:
        # b's relay keeps a TLS keep-alive connection to a; clients keep theirs idle
        b.client("bob@b.test").send(["carol@a.test"], "over the relay")
        wait_for(lambda: inbox(a, "carol@a.test"), "the relayed mail")
        streams = [federation.listen(a, "carol@a.test"), federation.listen(a, "bob@a.test")]
        answered: list[str] = []
        stop = threading.Event()

        def keep_sending() -> None:
            sender = a.client("alice@a.test")
            while not stop.is_set():
                try:
                    sender.send(["alice@a.test"], f"in flight {len(answered)}", retries=0)
                except WsemailError:
                    return
                answered.append("ok")

        sending = threading.Thread(target=keep_sending, daemon=True)
        sending.start()
        wait_for(lambda: len(answered) >= 3, "some sends answered")
        started = time.monotonic()
        a.controller.stop()
        took = time.monotonic() - started
        stop.set()
        sending.join(10)
        assert took < 10, f"stop took {took:.1f} s"
        for listening in streams:
            listening.thread.join(10)
            assert not listening.thread.is_alive()  # the server ended the stream
        with sqlite3.connect(a.config.data_dir / "wsemail.db") as db:
            kept = db.execute(
                "SELECT count(*) FROM messages WHERE owner='alice@a.test' AND folder='inbox'"
            ).fetchone()[0]
        assert kept >= len(answered)  # every answered Send is stored
    finally:
        for running in (a, b):
            for client in running.clients:
                client.close()
        b.stop()
