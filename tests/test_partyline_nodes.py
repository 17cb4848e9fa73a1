"""The party line of a domain on two nodes over one real PostgreSQL database (issue 20): a
channel opened at node 1 lives in node 1's process; a participant signed in and listening
at node 2 is invited through node 2's push stream, joins with a certificate from node 2 and
talks with participants of node 1; a user of the domain who was not invited is refused even
at the other node, and the channel keeps working. A node of a shared store whose party lines
would bind a wildcard address and name the domain (which may reach another node) warns at
start; `channel_advertise` names the node itself."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_federation import start_domain
from test_im import Fed, plugins
from test_im_channel import line, plugin, until

from wsemail.client.partyline import Invitation, PartyLine
from wsemail.pki import create_root, fingerprint, write_crl
from wsemail.protocol.errors import Forbidden

from conftest import wait_for

ALICE, BOB, CAROL, ADMIN = (f"{n}@a.test" for n in ("alice", "bob", "carol", "admin"))


@pytest.fixture
def nodes(tmp_path: Path, pg_url: str) -> Iterator[Fed]:
    """Nodes 1 (`a`) and 2 (`b`) of a.test: one database, one federation identity."""
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    one = start_domain(tmp_path, ca, "a.test", store_url=pg_url, plugins=plugins(heartbeat=1))
    two = start_domain(
        tmp_path / "node2",
        ca,
        "a.test",
        identity=tmp_path / "a.test-identity",
        store_url=pg_url,
        plugins=plugins(heartbeat=1),
        users=False,
    )
    fed = Fed(ca, tmp_path, one, two)
    yield fed
    fed.close()


def seen_until(party: PartyLine, match: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """Every event up to and with the first matching one (as `until`, keeping them)."""
    seen: list[dict[str, Any]] = []
    while True:
        event = party.next_event(timeout=20)
        assert event is not None, "the channel closed or went quiet"
        seen.append(event)
        if match(event):
            return seen


def test_a_party_line_with_members_on_two_nodes(nodes: Fed) -> None:
    one, two = nodes.a, nodes.b
    bob_listening = nodes.listen(two, BOB)  # bob is online at node 2 only
    alice_im = nodes.im(one, ALICE)
    wait_for(lambda: alice_im.who([BOB])[0].status == "online", "bob online as node 1 sees him")

    opened = alice_im.open_channel([BOB, CAROL])
    invitation = opened.invitation
    assert opened.invited == {ALICE: "invited", BOB: "invited", CAROL: "invited"}
    identity = one.controller.server.federation
    assert identity is not None
    assert invitation.fingerprint == fingerprint(identity.identity.cert)
    assert invitation.host == "127.0.0.1"  # node 1's own address, not the domain's name
    assert plugin(one).channels.get(invitation.channel) is not None
    assert plugin(two).live_counts()[1] == 0  # the listener is node 1's alone

    # bob's invitation comes through node 2's push stream
    wait_for(bob_listening.messages, "bob's invitation pushed by node 2")
    pushed = bob_listening.messages()[0]
    bob_invitation = Invitation.parse(pushed.body, pushed.sender)
    assert bob_invitation is not None and pushed.sender == ALICE
    where = (bob_invitation.channel, bob_invitation.host, bob_invitation.port)
    assert where == (invitation.channel, invitation.host, invitation.port)
    assert bob_invitation.fingerprint.replace(":", "") == invitation.fingerprint.replace(":", "")

    with (
        alice_im.join(invitation) as alice,
        nodes.im(two, BOB).join(bob_invitation) as bob,  # a certificate from node 2
        nodes.im(one, CAROL).join(invitation.channel) as carol,
    ):
        assert bob.address == BOB
        assert carol.participants == [ALICE, BOB, CAROL]
        bob.send("hello from node 2")
        for party in (alice, bob, carol):
            until(party, line(BOB, "hello from node 2"))
        alice.send("hello from node 1")
        for party in (alice, bob, carol):
            until(party, line(ALICE, "hello from node 1"))
        carol.send("me too")
        until(bob, line(CAROL, "me too"))

        # signed in at node 2 with a valid certificate of the domain, but not invited
        with pytest.raises(Forbidden, match="not invited"):
            nodes.im(two, ADMIN).join(bob_invitation)
        bob.send("still here")
        for party in (alice, carol):
            seen = seen_until(party, line(BOB, "still here"))
            assert not [e for e in seen if e.get("address") == ADMIN]
        assert nodes.im(two, ADMIN).who([BOB])[0].status == "online"  # node 2 still serves

        bob.close()
        for party in (alice, carol):
            until(party, lambda e: e == {"event": "left", "address": BOB})
        alice.send("bye bob")
        until(carol, line(ALICE, "bye bob"))

    channels = plugin(one).channels
    wait_for(lambda: channels.get(invitation.channel) is None, "the channel to close")


def test_a_node_of_a_shared_store_warns_when_its_invitations_would_name_the_domain(
    tmp_path: Path, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="wsemail.im")
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    wildcard = {"channel_host": "0.0.0.0"}  # noqa: S104 -- nothing binds until a channel opens

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "wsemail.im"]

    named = start_domain(
        tmp_path,
        ca,
        "a.test",
        store_url=pg_url,
        plugins=plugins(**wildcard, channel_advertise="node1.a.test"),
    )
    try:
        assert plugin(named).channels.advertise_host == "node1.a.test"
        assert warnings() == []
    finally:
        named.stop()

    unnamed = start_domain(
        tmp_path / "node2",
        ca,
        "a.test",
        identity=tmp_path / "a.test-identity",
        store_url=pg_url,
        plugins=plugins(**wildcard),
        users=False,
    )
    try:
        [warning] = warnings()
        assert "'a.test'" in warning and "channel_advertise" in warning
        assert plugin(unnamed).channels.advertise_host == "a.test"  # a warning, not a refusal
        assert unnamed.client(BOB).list_headers().headers == []  # and the node serves
    finally:
        unnamed.stop()

    caplog.clear()  # one node alone (SQLite): the domain's name is the node's
    alone = start_domain(
        tmp_path / "alone",
        ca,
        "a.test",
        identity=tmp_path / "a.test-identity",
        plugins=plugins(**wildcard),
    )
    try:
        assert plugin(alone).channels.advertise_host == "a.test"
        assert warnings() == []
    finally:
        alone.stop()
