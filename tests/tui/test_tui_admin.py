"""The server status screen (issue 21), driven by Textual's pilot against a real server on
loopback: S from the inbox shows what `wsemail admin status` shows and refreshes it live;
a non-admin account sees the refusal; the inbox status bar shows the storage used."""

from __future__ import annotations

import pytest
from textual.widgets import Label
from tui_helpers import make_app, wait_for

from wsemail.tui.app import WsemailApp
from wsemail.tui.screens.admin import AdminStatusScreen
from wsemail.tui.screens.inbox import InboxScreen

from conftest import Running

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def in_inbox(app: WsemailApp) -> bool:
    screen = app.screen
    return isinstance(screen, InboxScreen) and screen.mailbox.loaded and not screen.loading


def status_screen(app: WsemailApp) -> AdminStatusScreen:
    screen = app.screen
    assert isinstance(screen, AdminStatusScreen), screen
    return screen


def status_bar(app: WsemailApp) -> str:
    return str(app.screen.query_one("#inbox-status", Label).render())


async def test_the_status_screen_shows_the_server_and_refreshes_live(server: Running) -> None:
    server.client("alice@localhost").send(["admin@localhost"], "Before", "x" * 100)
    app = make_app(server, "admin@localhost")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: in_inbox(app))
        # the storage used is read once the first page is shown
        await wait_for(pilot, lambda: "storage: 106 B of 10.0 GB used (0%)" in status_bar(app))
        await pilot.press("S")
        await wait_for(pilot, lambda: isinstance(app.screen, AdminStatusScreen))
        screen = status_screen(app)
        await wait_for(pilot, lambda: screen.reads >= 1)
        assert "serving localhost" in screen.text
        assert "accounts    4 users, 2 messages" in screen.text
        assert "queue       empty" in screen.text
        assert "local-mta: local-delivery (1000)" in screen.text
        assert "certificate CN=localhost until" in screen.text
        reads = screen.reads

        # the server changes while the screen is open: the next refresh shows it
        server.client("bob@localhost").send(["carol@localhost"], "During", "hello")
        await wait_for(pilot, lambda: "accounts    4 users, 4 messages" in screen.text)
        assert screen.reads > reads and "deliveries  2.00" in screen.text
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, InboxScreen))


async def test_a_non_admin_sees_the_refusal_on_the_status_screen(server: Running) -> None:
    app = make_app(server, "alice@localhost")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: in_inbox(app))
        await pilot.press("S")
        await wait_for(pilot, lambda: isinstance(app.screen, AdminStatusScreen))
        screen = status_screen(app)
        await wait_for(pilot, lambda: screen.reads >= 1)
        assert screen.info is None and "admin" in screen.error
        assert screen.text == ""
        updated = str(screen.query_one("#admin-updated", Label).render())
        assert updated.startswith("cannot read the status")
