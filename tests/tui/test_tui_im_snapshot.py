"""A snapshot of the conversation screen, on the snapshot tests' fixed server clock: the
contact's earlier message (from the server's IM history, stamped by that clock), the
contact offline, the push stream live; nothing the client stamps itself is shown."""

from __future__ import annotations

from typing import Any

import pytest_textual_snapshot  # noqa: F401 -- a missing plug-in fails these tests, never skips them
from test_tui_snapshots import frozen, steady  # noqa: E402, F401  (the fixture)
from textual.pilot import Pilot  # noqa: E402
from tui_helpers import make_app, wait_for  # noqa: E402

from wsemail.client.im import InstantMessenger  # noqa: E402
from wsemail.tui.screens.chat import ChatScreen  # noqa: E402
from wsemail.tui.screens.inbox import InboxScreen  # noqa: E402

from conftest import Running  # noqa: E402


def test_chat_snapshot(frozen: Running, snap_compare: Any) -> None:  # noqa: F811
    InstantMessenger(frozen.client("bob@localhost")).send(
        "alice@localhost", "Call me when you land, the report can wait."
    )

    async def open_chat(pilot: Pilot[Any]) -> None:
        app = pilot.app
        await wait_for(
            pilot,
            lambda: (
                isinstance(app.screen, InboxScreen)
                and app.screen.mailbox.loaded
                and not app.screen.loading
            ),
        )
        await pilot.press("M", *"bob@localhost", "enter")

        def ready() -> bool:
            screen = app.screen
            return (
                isinstance(screen, ChatScreen)
                and screen.live
                and screen.status == "offline"
                and bool(screen.log_view.lines_shown)
            )

        await wait_for(pilot, ready)
        await pilot.pause()
        steady(pilot)

    assert snap_compare(make_app(frozen), run_before=open_chat, terminal_size=(80, 24))
