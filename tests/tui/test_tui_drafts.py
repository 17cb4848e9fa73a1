"""Drafts in the TUI (issue 17), driven by Textual's pilot against a real server: the compose
screen autosaves to the server and saves on quit; a draft reopens from Drafts and, sent,
leaves Drafts."""

from __future__ import annotations

import pytest
from textual.widgets import Input, TextArea
from tui_helpers import make_app, wait_for

from wsemail.client.drafts import Drafts
from wsemail.tui.app import WsemailApp
from wsemail.tui.screens.compose import ComposeScreen
from wsemail.tui.screens.confirm import ConfirmScreen
from wsemail.tui.screens.inbox import InboxScreen
from wsemail.tui.screens.message import MessageScreen

from conftest import Running

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def in_folder(app: WsemailApp, folder: str, rows: int | None = None) -> bool:
    screen = app.screen
    if not isinstance(screen, InboxScreen) or screen.loading or not screen.mailbox.loaded:
        return False
    if screen.mailbox.folder != folder:
        return False
    return rows is None or screen.table.row_count == rows


def compose(app: WsemailApp) -> ComposeScreen:
    screen = app.screen
    assert isinstance(screen, ComposeScreen), screen
    return screen


def autosaved(app: WsemailApp) -> bool:
    screen = app.screen
    return (
        isinstance(screen, ComposeScreen)
        and screen.keeper.saved is not None
        and not screen.keeper.changed(screen.content)
        and not screen.saving
    )


async def test_type_autosave_quit_reopen_and_send(server: Running) -> None:
    app = make_app(server, autosave_seconds=0.2)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: in_folder(app, "inbox"))
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen))
        await pilot.press(*"bob@localhost", "tab", "tab", *"kept for later", "tab", *"first")
        await wait_for(pilot, lambda: autosaved(app))
        assert "draft saved" in compose(app).sub_title
        await pilot.press(*" and more")  # not autosaved yet: quitting saves it
        await pilot.press("ctrl+q")
    drafts = Drafts(server.client())
    (saved,) = drafts.list()
    assert saved.to == ["bob@localhost"] and saved.subject == "kept for later"
    assert drafts.get(saved.id).body == "first and more"

    app = make_app(server, autosave_seconds=0.2)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: in_folder(app, "inbox"))
        await pilot.press("D")
        await wait_for(pilot, lambda: in_folder(app, "Drafts", 1))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen))
        screen = compose(app)
        assert screen.query_one("#compose-to", Input).value == "bob@localhost"
        assert screen.query_one("#compose-subject", Input).value == "kept for later"
        assert screen.query_one("#compose-body", TextArea).text == "first and more"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: in_folder(app, "Drafts", 0))
    assert list(drafts.list()) == []
    sent = server.client().list_headers("sent").headers
    assert [(h.id, h.subject) for h in sent] == [(saved.id, "kept for later")]
    bob = server.client("bob@localhost")
    (got,) = bob.list_headers().headers
    assert bob.retrieve(got.id).body == "first and more"


async def test_leaving_compose_keeps_or_discards_the_draft(server: Running) -> None:
    app = make_app(server, autosave_seconds=0)  # no autosave until the last part
    drafts = Drafts(server.client())
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: in_folder(app, "inbox"))
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen))
        await pilot.press(*"carol@localhost", "tab", "tab", *"to keep")
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")  # no, do not discard: kept in Drafts
        await wait_for(pilot, lambda: in_folder(app, "inbox"))
        assert [d.subject for d in drafts.list()] == ["to keep"]

        await pilot.press("D")  # reopened, changed, then discarded: gone from the server
        await wait_for(pilot, lambda: in_folder(app, "Drafts", 1))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen))
        await pilot.press("!", "escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: in_folder(app, "Drafts", 0))
        assert list(drafts.list()) == []

        app.autosave_seconds = 0.2  # autosaved, then left as it is: kept without a question
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen))
        await pilot.press(*"carol@localhost", "tab", "tab", *"autosaved")
        await wait_for(pilot, lambda: autosaved(app))
        await pilot.press("escape")
        await wait_for(pilot, lambda: in_folder(app, "Drafts"))
        assert any("Kept in Drafts" in str(n.message) for n in app._notifications)
    assert [d.subject for d in drafts.list()] == ["autosaved"]
    assert server.client("carol@localhost").list_headers().headers == []


async def test_a_message_filed_into_drafts_opens_as_a_message(server: Running) -> None:
    server.client("bob@localhost").send(["alice@localhost"], "filed", "by a filter")
    # a filter's fileinto (or a copy moved before drafts were kept) puts mail there
    server.count("UPDATE messages SET folder='Drafts' WHERE owner='alice@localhost' RETURNING 1")
    app = make_app(server)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: in_folder(app, "inbox"))
        await pilot.press("D")
        await wait_for(pilot, lambda: in_folder(app, "Drafts", 1))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, MessageScreen) and app.screen.message)
        assert "by a filter" in str(app.screen.query_one("#message-body").render())
