"""The compose screen's To and Cc complete from the user's contacts, then their domain's
directory, then the addresses they sent mail to (issue 18), against a real server."""

from __future__ import annotations

import pytest
from textual.widgets import Input
from tui_helpers import make_app, wait_for

from wsemail.client.contacts import Contact, Contacts
from wsemail.client.directory import AddressDirectory
from wsemail.tui.app import WsemailApp
from wsemail.tui.screens.compose import ComposeScreen
from wsemail.tui.screens.inbox import InboxScreen

from conftest import Running

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def inbox_loaded(app: WsemailApp) -> bool:
    screen = app.screen
    return isinstance(screen, InboxScreen) and screen.mailbox.loaded and not screen.loading


async def test_to_and_cc_complete_from_contacts_directory_and_sent_to(server: Running) -> None:
    alice = server.client("alice@localhost")
    Contacts(alice).add(Contact("Dora Contact", ["dora@far.test"]))
    AddressDirectory(server.client("bob@localhost")).publish("Bob Listed")
    alice.send(["carol@localhost"], "earlier", "x")  # carol: an address sent to
    app = make_app(server)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: inbox_loaded(app))
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen))
        to = app.screen.query_one("#compose-to", Input)
        await pilot.press("d", "o")
        await wait_for(pilot, lambda: to._suggestion == "dora@far.test")  # a contact
        await pilot.press("right", *", bo")
        await wait_for(pilot, lambda: to._suggestion == "dora@far.test, bob@localhost")
        await pilot.press("right", "tab")  # the directory's; then Cc
        assert to.value == "dora@far.test, bob@localhost"
        cc = app.screen.query_one("#compose-cc", Input)
        await pilot.press("c", "a")
        await wait_for(pilot, lambda: cc._suggestion == "carol@localhost")  # sent to before
        await pilot.press("right")
        assert cc.value == "carol@localhost"
