"""The party line in the TUI across two real TLS domains on loopback, driven by Textual's
pilot: opened from the conversation screen with parties in both domains who join through
the client library, joined from a live invitation (notification, ctrl+g) and from a
channel id kept in the mailbox, lines round trip over mutual TLS 1.3, leaving with
Escape; a user who was not invited is refused and told so."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from textual.widgets import Input
from tui_domains import Two, two  # noqa: F401  (the fixture)
from tui_helpers import wait_for

from wsemail.client.im import InstantMessenger
from wsemail.client.partyline import Invitation, PartyLine
from wsemail.server.im import InstantMessaging
from wsemail.tui.app import WsemailApp
from wsemail.tui.screens.channel import ChannelScreen
from wsemail.tui.screens.chat import ChatScreen
from wsemail.tui.screens.inbox import InboxScreen
from wsemail.tui.screens.prompt import PromptScreen

from conftest import Running
from conftest import wait_for as wait_until

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def parties() -> Iterator[list[PartyLine]]:
    joined: list[PartyLine] = []
    yield joined
    for party in joined:
        party.close()


def notes(app: WsemailApp) -> list[str]:
    return [f"{n.title}: {n.message}" for n in app._notifications]


def in_inbox(app: WsemailApp) -> bool:
    screen = app.screen
    return isinstance(screen, InboxScreen) and screen.mailbox.loaded and not screen.loading


def channel(app: WsemailApp) -> ChannelScreen:
    screen = app.screen
    assert isinstance(screen, ChannelScreen), screen
    return screen


def joined(app: WsemailApp) -> bool:
    return isinstance(app.screen, ChannelScreen) and app.screen.joined


def channels(running: Running) -> dict[str, Any]:
    for processor in running.controller.server.pipeline.extensions.values():
        if isinstance(processor, InstantMessaging):
            return processor.channels  # type: ignore[no-any-return]
    raise AssertionError("no IM plug-in")


def invitation_for(two: Two, user: str, channel_id: str) -> Invitation:  # noqa: F811
    im = InstantMessenger(two.user(user))
    found: list[Invitation] = []

    def arrived() -> bool:
        try:
            found.append(im.find_invitation(channel_id))
        except Exception:
            return False
        return True

    wait_until(arrived, f"{user}'s invitation")
    return found[0]


def until(party: PartyLine, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    while True:
        event = party.next_event(timeout=20)
        assert event is not None, "the channel closed or went quiet"
        if match(event):
            return event


def line(sender: str, text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("event") == "line" and e["from"] == sender and e["text"] == text


async def test_open_a_party_line_from_the_chat_screen_three_parties_two_domains(
    two: Two,  # noqa: F811
    parties: list[PartyLine],
) -> None:
    app = two.app("alice@a.test")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: in_inbox(app))
        await pilot.press("M", *"bob@b.test", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen) and app.screen.live)
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: isinstance(app.screen, PromptScreen))
        field = app.screen.query_one("#prompt-input", Input)
        assert field.value == "bob@b.test"  # the contact, and whoever else is added
        field.value += ", carol@a.test"
        await pilot.press("enter")
        await wait_for(pilot, lambda: joined(app))
        screen = channel(app)
        assert screen.participants == ["alice@a.test"]
        assert screen.invited == {
            "alice@a.test": "invited",
            "bob@b.test": "queued",
            "carol@a.test": "invited",
        }
        channel_id = screen.channel

        bob = InstantMessenger(two.user("bob@b.test")).join(
            invitation_for(two, "bob@b.test", channel_id)
        )
        parties.append(bob)
        carol = InstantMessenger(two.user("carol@a.test")).join(channel_id)
        parties.append(carol)
        await wait_for(
            pilot, lambda: screen.participants == ["alice@a.test", "bob@b.test", "carol@a.test"]
        )
        assert "channel " + channel_id in str(screen.query_one("#channel-info").render())

        await pilot.press(*"hello party", "enter")
        for party in (bob, carol):
            until(party, line("alice@a.test", "hello party"))
        await wait_for(pilot, lambda: "me: hello party" in screen.log_view.lines_shown)
        bob.send("hi from b.test")
        carol.send("hi from a.test")
        await wait_for(
            pilot,
            lambda: (
                {"bob@b.test: hi from b.test", "carol@a.test: hi from a.test"}
                <= set(screen.log_view.lines_shown)
            ),
        )
        bob.close()
        await wait_for(pilot, lambda: "bob@b.test left" in screen.log_view.lines_shown)
        assert screen.participants == ["alice@a.test", "carol@a.test"]
        assert not any("invites you" in n for n in notes(app))  # not told of its own channel

        await pilot.press("escape")  # alice leaves
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))
        until(carol, lambda e: e == {"event": "left", "address": "alice@a.test"})
        carol.close()
    registry = channels(two.running("alice@a.test"))
    wait_until(lambda: registry.get(channel_id) is None, "the channel to close")


async def test_an_invitation_arriving_live_is_joined_with_ctrl_g(
    two: Two,  # noqa: F811
    parties: list[PartyLine],
) -> None:
    app = two.app("bob@b.test", im_notify=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: in_inbox(app))
        neighbour = InstantMessenger(two.user("carol@b.test"))  # presence is asked locally
        await wait_for(pilot, lambda: neighbour.who(["bob@b.test"])[0].status == "online")
        alice_im = InstantMessenger(two.user("alice@a.test"))
        opened = alice_im.open_channel(["bob@b.test"])
        assert opened.invited["bob@b.test"] == "queued"  # relayed to b.test, pushed to bob
        await wait_for(
            pilot,
            lambda: any("alice@a.test invites you to a party line" in n for n in notes(app)),
        )
        assert opened.invitation.channel in app.invitations
        alice = alice_im.join(opened.invitation)
        parties.append(alice)

        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: joined(app))
        screen = channel(app)
        assert screen.channel == opened.invitation.channel and not app.invitations
        until(alice, lambda e: e == {"event": "joined", "address": "bob@b.test"})
        alice.send("welcome bob")
        await wait_for(pilot, lambda: "alice@a.test: welcome bob" in screen.log_view.lines_shown)
        await pilot.press(*"thanks alice", "enter")
        until(alice, line("bob@b.test", "thanks alice"))
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, InboxScreen))
        until(alice, lambda e: e == {"event": "left", "address": "bob@b.test"})


async def test_join_by_channel_id_and_the_uninvited_are_refused(
    two: Two,  # noqa: F811
    parties: list[PartyLine],
) -> None:
    alice_im = InstantMessenger(two.user("alice@a.test"))
    opened = alice_im.open_channel(["bob@b.test"])
    channel_id = opened.invitation.channel
    invitation_for(two, "bob@b.test", channel_id)  # bob was offline: kept for him
    alice = alice_im.join(opened.invitation)
    parties.append(alice)

    app = two.app("bob@b.test")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: in_inbox(app))
        await pilot.press("ctrl+g")  # no invitation waiting: asks for the channel id
        await wait_for(pilot, lambda: isinstance(app.screen, PromptScreen))
        await pilot.press(*channel_id, "enter")
        await wait_for(pilot, lambda: joined(app))
        until(alice, lambda e: e == {"event": "joined", "address": "bob@b.test"})
        await pilot.press(*"found it", "enter")
        until(alice, line("bob@b.test", "found it"))

    intruder = two.app("carol@b.test")  # valid certificate, never invited
    async with intruder.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: in_inbox(intruder))
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: isinstance(intruder.screen, PromptScreen))
        await pilot.press(*channel_id, "enter")
        await wait_for(
            pilot, lambda: any("Cannot join the party line" in n for n in notes(intruder))
        )
        screen = channel(intruder)
        await wait_for(pilot, lambda: screen.ended)
        assert not screen.joined and screen.query_one("#channel-input", Input).disabled
    alice.send("still open")  # the channel is unharmed
    until(alice, line("alice@a.test", "still open"))
