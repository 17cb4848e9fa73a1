"""The filters screen (issue 18) driven by Textual's pilot against a real server: F from the
inbox shows the Sieve script, edits and saves it; a script with an error is not saved
(line and column shown) and the server keeps the old one."""

from __future__ import annotations

import pytest
from textual.widgets import Label, TextArea
from tui_helpers import make_app, wait_for

from wsemail.client.filters import Filters
from wsemail.tui.app import WsemailApp
from wsemail.tui.screens.filters import FiltersScreen
from wsemail.tui.screens.inbox import InboxScreen

from conftest import Running

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def status(app: WsemailApp) -> str:
    return str(app.screen.query_one("#filters-status", Label).render())


async def test_filters_screen_shows_edits_and_saves_the_script(server: Running) -> None:
    Filters(server.client()).set_script("keep;\n")
    app = make_app(server)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(
            pilot, lambda: isinstance(app.screen, InboxScreen) and app.screen.mailbox.loaded
        )
        await pilot.press("F")
        await wait_for(pilot, lambda: isinstance(app.screen, FiltersScreen))
        screen = app.screen
        assert isinstance(screen, FiltersScreen)
        await wait_for(pilot, lambda: screen.saved_text is not None)
        editor = screen.query_one("#filters-script", TextArea)
        assert editor.text == "keep;\n"

        editor.load_text('require "fileinto";\nif true {\n  fileinto "x"\n}\n')
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "Not saved" in status(app))
        assert "line 4, column 1" in status(app)
        assert Filters(server.client()).script() == "keep;\n"

        editor.load_text('if header :contains "subject" "spam" { discard; }\n')
        await pilot.click("#filters-save")
        await wait_for(pilot, lambda: status(app).startswith("Saved"))
        assert Filters(server.client()).script() == (
            'if header :contains "subject" "spam" { discard; }\n'
        )
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, InboxScreen))
