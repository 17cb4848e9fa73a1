"""Snapshots (pytest-textual-snapshot) of the inbox, message and compose screens.

What is shown is made deterministic: the server runs on a clock the test sets (so every
stored Date is fixed; the freshness window is widened so the client's real timestamps are
still accepted), the process time zone is UTC, the poll is off, cursors do not blink.
Update with `pytest tests/tui --snapshot-update` after a deliberate change of look."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_textual_snapshot  # noqa: F401 -- a missing plug-in fails these tests, never skips them
from textual.pilot import Pilot  # noqa: E402
from textual.widgets import Checkbox, Input, TextArea  # noqa: E402
from tui_helpers import make_app, wait_for  # noqa: E402

from wsemail.server.accounts import set_user  # noqa: E402
from wsemail.server.config import ServerConfig  # noqa: E402
from wsemail.server.controller import ServerController  # noqa: E402
from wsemail.tui.screens.compose import ComposeScreen  # noqa: E402
from wsemail.tui.screens.inbox import InboxScreen  # noqa: E402
from wsemail.tui.screens.message import MessageScreen  # noqa: E402

from conftest import PASSWORD, USERS, Running  # noqa: E402

START = datetime(2025, 3, 14, 9, 26, tzinfo=UTC).timestamp()
YEARS = 50 * 365 * 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def frozen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Running]:
    """A real server on a controlled clock, with a small fixed mailbox for alice."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    clock = Clock()
    config = ServerConfig(
        data_dir=tmp_path / "server", port=0, past_seconds=YEARS, future_seconds=YEARS
    )
    controller = ServerController(config, clock=clock)
    for user in USERS:
        set_user(controller.server.store, config.domain, user, PASSWORD)
    controller.start()
    running = Running(controller, config)
    alice, bob, carol = (running.client(u) for u in USERS)
    bob.send(["alice@localhost"], "Quarterly report", "Figures attached next week.\n\nBob")
    clock.now += 3 * 3600
    carol.send(
        ["alice@localhost"],
        "Lunch on Friday?",
        "Hi Alice,\n\nNoon at the usual place? Bob is in too.\n\nCarol",
        cc=["bob@localhost"],
    )
    clock.now += 26 * 3600 + 17 * 60
    alice.send(["bob@localhost"], "Weekend plans", "Hiking if the weather holds.")
    clock.now += 600
    bob.send(["alice@localhost"], "Re: build failures", "Fixed on main; the flaky test " * 6)
    alice.retrieve(next(h for h in alice.iter_headers() if h.subject == "Quarterly report").id)
    yield running
    running.stop()
    monkeypatch.delenv("TZ")
    time.tzset()


def steady(pilot: Pilot[Any]) -> None:
    for widget in pilot.app.screen.query("Input, TextArea"):
        assert isinstance(widget, Input | TextArea)
        widget.cursor_blink = False


async def inbox_loaded(pilot: Pilot[Any]) -> None:
    def loaded() -> bool:
        return (
            isinstance(pilot.app.screen, InboxScreen)
            and pilot.app.screen.table.row_count == 3
            and not pilot.app.screen.loading
        )

    await wait_for(pilot, loaded)
    # let what the first page set off (a resize, the usage read, a first poll) settle: on
    # a loaded machine the picture was taken mid-refresh once (same text, other segments)
    await pilot.pause(0.2)
    await wait_for(pilot, loaded)
    await pilot.wait_for_scheduled_animations()


def test_inbox_snapshot(frozen: Running, snap_compare: Any) -> None:
    assert snap_compare(make_app(frozen), run_before=inbox_loaded, terminal_size=(80, 24))


def test_message_snapshot(frozen: Running, snap_compare: Any) -> None:
    async def open_lunch(pilot: Pilot[Any]) -> None:
        await inbox_loaded(pilot)
        await pilot.press("down", "enter")
        await wait_for(
            pilot, lambda: isinstance(pilot.app.screen, MessageScreen) and pilot.app.screen.message
        )

    assert snap_compare(make_app(frozen), run_before=open_lunch, terminal_size=(80, 24))


def test_compose_reply_all_snapshot(frozen: Running, snap_compare: Any) -> None:
    async def reply_all(pilot: Pilot[Any]) -> None:
        await inbox_loaded(pilot)
        await pilot.press("down", "enter")
        await wait_for(
            pilot, lambda: isinstance(pilot.app.screen, MessageScreen) and pilot.app.screen.message
        )
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ComposeScreen))
        await pilot.pause()
        steady(pilot)

    assert snap_compare(make_app(frozen), run_before=reply_all, terminal_size=(80, 24))


def test_sent_folder_snapshot_wide(frozen: Running, snap_compare: Any) -> None:
    async def sent(pilot: Pilot[Any]) -> None:
        await inbox_loaded(pilot)
        await pilot.press("s")
        await wait_for(
            pilot,
            lambda: (
                isinstance(pilot.app.screen, InboxScreen)
                and pilot.app.screen.table.row_count == 1
                and not pilot.app.screen.loading
            ),
        )

    assert snap_compare(make_app(frozen), run_before=sent, terminal_size=(120, 36))


def test_compose_delivery_options_snapshot(frozen: Running, snap_compare: Any) -> None:
    """A new message with Send Encrypted ticked (also signed; the IM options off)."""

    async def encrypted(pilot: Pilot[Any]) -> None:
        await inbox_loaded(pilot)
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ComposeScreen))
        screen = pilot.app.screen
        screen.query_one("#compose-to", Input).value = "bob@localhost"
        screen.query_one("#compose-subject", Input).value = "Salaries 2025"
        screen.query_one("#compose-body", TextArea).text = "Bob,\n\nthe figures, for you only."
        screen.query_one("#compose-encrypt", Checkbox).value = True
        screen.query_one("#compose-body", TextArea).focus()
        await pilot.pause()
        steady(pilot)

    assert snap_compare(make_app(frozen), run_before=encrypted, terminal_size=(80, 24))
