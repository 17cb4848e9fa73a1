"""Instant messaging in the TUI, driven by Textual's pilot against a real server on
loopback: the conversation screen sends to a client-library listener and shows the
contact's messages live, compose sends as an instant message, and instant messages that
arrive elsewhere in the app show as notifications."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from textual.widgets import Checkbox, Input, TextArea
from tui_helpers import make_app, wait_for

from wsemail.client.im import Incoming, InstantMessenger, Stream
from wsemail.tui.app import WsemailApp
from wsemail.tui.screens.chat import ChatScreen
from wsemail.tui.screens.compose import ComposeScreen
from wsemail.tui.screens.inbox import InboxScreen
from wsemail.tui.screens.prompt import PromptScreen

from conftest import Running

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Listening:
    """A client-library push session read by a background thread."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.got: list[Incoming] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for item in self.stream:
            self.got.append(item)

    def bodies(self) -> list[str]:
        return [i.body for i in self.got if i.kind == "message"]

    def close(self) -> None:
        self.stream.close()
        self.thread.join(10)


@pytest.fixture
def bob_listens(server: Running) -> Iterator[Listening]:
    listening = Listening(InstantMessenger(server.client("bob@localhost")).listen())
    yield listening
    listening.close()


def notes(app: WsemailApp) -> list[str]:
    return [f"{n.title}: {n.message}" for n in app._notifications]


def loaded_inbox(app: WsemailApp, rows: int) -> bool:
    screen = app.screen
    return (
        isinstance(screen, InboxScreen)
        and screen.mailbox.loaded
        and not screen.loading
        and screen.table.row_count == rows
    )


def chat(app: WsemailApp) -> ChatScreen:
    screen = app.screen
    assert isinstance(screen, ChatScreen), screen
    return screen


async def test_chat_round_trip_with_a_live_listener(
    server: Running, bob_listens: Listening
) -> None:
    bob = InstantMessenger(server.client("bob@localhost"))
    bob.send("alice@localhost", "are you there?")  # alice is offline: kept, and in history
    app = make_app(server)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: loaded_inbox(app, 1))
        await pilot.press("m")  # the selected message's sender
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen) and chat(app).live)
        screen = chat(app)
        assert screen.peer == "bob@localhost"
        await wait_for(
            pilot, lambda: "bob@localhost: are you there?" in screen.log_view.lines_shown
        )
        await wait_for(pilot, lambda: screen.status == "online")  # bob's stream is open
        assert "online" in str(screen.query_one("#chat-presence").render())

        await pilot.press(*"hello bob", "enter")
        await wait_for(pilot, lambda: "hello bob" in bob_listens.bodies())
        await wait_for(pilot, lambda: "me: hello bob" in screen.log_view.lines_shown)
        assert screen.query_one("#chat-input", Input).value == ""

        bob.send("alice@localhost", "hi alice")
        await wait_for(pilot, lambda: "bob@localhost: hi alice" in screen.log_view.lines_shown)
        assert not any("hi alice" in n for n in notes(app))  # shown in the chat, no toast

        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, InboxScreen))


async def test_instant_messages_elsewhere_show_as_notifications(server: Running) -> None:
    bob = InstantMessenger(server.client("bob@localhost"))
    app = make_app(server, im_notify=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: loaded_inbox(app, 0))
        await wait_for(
            pilot, lambda: bob.who(["alice@localhost"])[0].status == "online", timeout=20
        )
        bob.send("alice@localhost", "lunch?")
        await wait_for(pilot, lambda: any("IM from bob@localhost: lunch?" in n for n in notes(app)))


async def test_new_chat_prompt_checks_the_address(server: Running) -> None:
    app = make_app(server)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: loaded_inbox(app, 0))
        await pilot.press("m")  # nothing selected: asks whom
        await wait_for(pilot, lambda: isinstance(app.screen, PromptScreen))
        await pilot.press(*"not an address", "enter")
        await wait_for(pilot, lambda: any("not a valid address" in n for n in notes(app)))
        assert isinstance(app.screen, InboxScreen)
        await pilot.press("M")
        await wait_for(pilot, lambda: isinstance(app.screen, PromptScreen))
        await pilot.press(*"carol@localhost", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen) and chat(app).live)
        assert chat(app).peer == "carol@localhost"
        await wait_for(pilot, lambda: chat(app).status == "offline")


async def test_compose_sends_as_instant_message(server: Running, bob_listens: Listening) -> None:
    app = make_app(server, im_notify=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: loaded_inbox(app, 0))
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen))
        screen = app.screen
        assert isinstance(screen, ComposeScreen)
        screen.query_one("#compose-to", Input).value = "bob@localhost, carol@localhost"
        screen.query_one("#compose-subject", Input).value = "ping"
        screen.query_one("#compose-body", TextArea).text = "quick question"
        screen.query_one("#compose-delete-undeliverable", Checkbox).value = True  # implies IM
        await pilot.pause()
        assert screen.instant and screen.delete_if_undeliverable
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, InboxScreen))
        await wait_for(pilot, lambda: "quick question" in bob_listens.bodies())
        # carol is offline: the message is dropped and the server tells alice, live
        await wait_for(
            pilot, lambda: any("to carol@localhost was undeliverable" in n for n in notes(app))
        )
    assert (
        server.count(
            "SELECT count(*) FROM messages WHERE owner='carol@localhost' AND folder='inbox'"
        )
        == 0
    )
