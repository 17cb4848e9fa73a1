"""The party line between two real TLS domains on loopback: a channel opened on a.test,
invitations by instant message, participants from both domains joining over TLS 1.3 with
federated identity certificates, lines relayed to all; an uninvited user with a valid
certificate, a user without a certificate and one from an untrusted root are refused and
the channel keeps working; the channel closes when everyone left or when idle."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_federation import start_domain
from test_im import Fed, plugins, route, tmp_root_token

from wsemail.client.attachments import Attachments
from wsemail.client.partyline import Invitation, PartyLine
from wsemail.pki import create_root, fingerprint, write_crl
from wsemail.protocol.errors import Forbidden, RequestInvalid, UntrustedSigner
from wsemail.server.im import InstantMessaging

from conftest import PASSWORD, Running, wait_for


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[Fed]:
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    a = start_domain(tmp_path, ca, "a.test", plugins=plugins())
    b = start_domain(tmp_path, ca, "b.test", plugins=plugins())
    route(a, b)
    yield Fed(ca, tmp_path, a, b)
    for running in (a, b):
        for client in running.clients:
            client.close()
    a.stop()
    b.stop()


def plugin(running: Running) -> InstantMessaging:
    for processor in running.controller.server.pipeline.extensions.values():
        if isinstance(processor, InstantMessaging):
            return processor
    raise AssertionError("no IM plug-in")


def invitation_for(fed: Fed, running: Running, user: str, channel: str) -> Invitation:
    im = fed.im(running, user)
    found: list[Invitation] = []

    def arrived() -> bool:
        try:
            found.append(im.find_invitation(channel))
        except Exception:
            return False
        return True

    wait_for(arrived, f"{user}'s invitation")
    return found[0]


def until(party: PartyLine, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first event matching (events before it are skipped); fails when the channel
    closes or nothing comes for 20 s."""
    while True:
        event = party.next_event(timeout=20)
        assert event is not None, "the channel closed or went quiet"
        if match(event):
            return event


def line(sender: str, text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("event") == "line" and e["from"] == sender and e["text"] == text


def test_three_parties_across_two_domains_and_the_refused(fed: Fed) -> None:
    alice_im = fed.im(fed.a, "alice@a.test")
    opened = alice_im.open_channel(["bob@b.test", "carol@a.test"])
    invitation = opened.invitation
    assert opened.invited == {
        "alice@a.test": "invited",
        "bob@b.test": "queued",
        "carol@a.test": "invited",
    }
    identity = fed.a.controller.server.federation
    assert identity is not None
    assert invitation.domain == "a.test"
    assert invitation.fingerprint == fingerprint(identity.identity.cert)

    bob_invitation = invitation_for(fed, fed.b, "bob@b.test", invitation.channel)
    carol_invitation = invitation_for(fed, fed.a, "carol@a.test", invitation.channel)
    assert bob_invitation.sender == "alice@a.test"
    assert (bob_invitation.host, bob_invitation.port, bob_invitation.fingerprint) == (
        invitation.host,
        invitation.port,
        invitation.fingerprint,
    )

    with (
        alice_im.join(alice_im.find_invitation(invitation.channel)) as alice,
        fed.im(fed.b, "bob@b.test").join(bob_invitation) as bob,
        fed.im(fed.a, "carol@a.test").join(carol_invitation.channel) as carol,
    ):
        assert alice.address == "alice@a.test" and carol.address == "carol@a.test"
        assert carol.participants == ["alice@a.test", "bob@b.test", "carol@a.test"]
        alice.send("hello party")
        for party in (alice, bob, carol):
            until(party, line("alice@a.test", "hello party"))
        bob.send("hi from b.test")
        for party in (alice, bob, carol):
            until(party, line("bob@b.test", "hi from b.test"))

        # an uninvited user with a valid certificate
        with pytest.raises(Forbidden, match="not invited"):
            fed.im(fed.b, "carol@b.test").join(bob_invitation)
        # a user without a certificate (refused in the TLS handshake)
        with pytest.raises(Forbidden):
            PartyLine(invitation, None)
        # a certificate for an invited address, from a root the federation does not trust
        genuine = Attachments(fed.a.client("alice@a.test")).token()
        with pytest.raises(Forbidden):
            PartyLine(invitation, tmp_root_token(fed, genuine))

        carol.send("still here")
        for party in (alice, bob, carol):
            until(party, line("carol@a.test", "still here"))

        bob.close()
        until(alice, lambda e: e == {"event": "left", "address": "bob@b.test"})
        alice.send("bye bob")
        until(carol, line("alice@a.test", "bye bob"))

    channels = plugin(fed.a).channels
    wait_for(lambda: channels.get(invitation.channel) is None, "the channel to close")


def test_the_listener_is_pinned_by_the_invitations_fingerprint(fed: Fed) -> None:
    alice_im = fed.im(fed.a, "alice@a.test")
    invitation = alice_im.open_channel(["carol@a.test"]).invitation
    forged = Invitation(
        invitation.channel,
        invitation.host,
        invitation.port,
        "00:" * 31 + "00",
        invitation.domain,
    )
    with pytest.raises(UntrustedSigner, match="not the one in the invitation"):
        alice_im.join(forged)
    with alice_im.join(invitation) as alice:  # the channel is unharmed
        alice.send("ok")
        until(alice, line("alice@a.test", "ok"))


def test_an_idle_channel_closes(fed: Fed) -> None:
    alice_im = fed.im(fed.a, "alice@a.test")
    invitation = alice_im.open_channel(["carol@a.test"], idle_timeout=1).invitation
    with alice_im.join(invitation) as alice:
        until(alice, lambda e: e.get("event") == "closed")
        assert alice.next_event(timeout=20) is None
    channels = plugin(fed.a).channels
    wait_for(lambda: channels.get(invitation.channel) is None, "the channel to be gone")


def test_open_channel_requests_that_are_refused(fed: Fed) -> None:
    alice_im = fed.im(fed.a, "alice@a.test")
    with pytest.raises(RequestInvalid):
        alice_im.open_channel([])
    with pytest.raises(RequestInvalid):
        alice_im.open_channel(["not an address"])
    with pytest.raises(RequestInvalid):
        alice_im.open_channel(["bob@b.test"], idle_timeout=10**9)
    assert fed.a.stored()[0] == 0  # no invitation went anywhere


def test_invitations_parse_only_from_the_channels_domain() -> None:
    body = (
        "alice@a.test invites you …\n\nwsemail-channel: abc\nhost: 127.0.0.1\n"
        "port: 4433\nsha256: ab:cd\ndomain: a.test\n"
    )
    found = Invitation.parse(body, "alice@a.test")
    assert found == Invitation("abc", "127.0.0.1", 4433, "AB:CD", "a.test", "alice@a.test")
    assert Invitation.parse(body, "mallory@evil.test") is None
    assert Invitation.parse("no invitation here", "alice@a.test") is None
    assert Invitation.parse(body.replace("4433", "99999"), "alice@a.test") is None


def _cli_env(fed: Fed, running: Running, user: str) -> dict[str, str]:
    domain = running.config.domain
    return {
        "WSEMAIL_CACERT": str(fed.ca / "root.pem"),
        "WSEMAIL_TRUST_ROOTS": str(fed.ca / "root.pem"),
        "WSEMAIL_PASSWORD": PASSWORD,
        "PATH": "/usr/bin:/bin",
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
        "HOME": str(fed.tmp),
        "WSEMAIL_SERVER": running.url,
        "WSEMAIL_USER": user,
        "WSEMAIL_TLS_NAME": domain,
    }


def test_cli_open_and_join(fed: Fed) -> None:
    run = "from wsemail.cli.im import app; app()"
    opened = subprocess.run(
        [sys.executable, "-c", run, "channel", "open", "bob@b.test", "--json"],
        env=_cli_env(fed, fed.a, "alice@a.test"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert opened.returncode == 0, opened.stderr
    record = json.loads(opened.stdout)
    assert record["invited"] == {"alice@a.test": "invited", "bob@b.test": "queued"}
    channel = record["channel"]
    invitation_for(fed, fed.b, "bob@b.test", channel)  # relayed to b.test

    bob = subprocess.Popen(
        [sys.executable, "-c", run, "channel", "join", channel, "--json"],
        env=_cli_env(fed, fed.b, "bob@b.test"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    printed: list[dict[str, Any]] = []
    reader = threading.Thread(
        target=lambda: printed.extend(json.loads(raw) for raw in bob.stdout or []), daemon=True
    )
    reader.start()
    try:
        alice_im = fed.im(fed.a, "alice@a.test")
        with alice_im.join(channel) as alice:
            until(alice, lambda e: e == {"event": "joined", "address": "bob@b.test"})
            assert bob.stdin is not None
            bob.stdin.write("hello from the CLI\n")
            bob.stdin.flush()
            until(alice, line("bob@b.test", "hello from the CLI"))
            alice.send("back to you")
            wait_for(lambda: any(line("alice@a.test", "back to you")(e) for e in printed), "bob")
            bob.stdin.close()
            assert bob.wait(60) == 0, bob.stderr.read() if bob.stderr else ""
            until(alice, lambda e: e == {"event": "left", "address": "bob@b.test"})
    finally:
        if bob.poll() is None:
            bob.kill()
        bob.wait(10)
        reader.join(10)
        for stream in (bob.stdout, bob.stderr):
            if stream is not None:
                stream.close()
