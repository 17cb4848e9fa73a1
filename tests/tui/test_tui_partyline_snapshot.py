"""A snapshot of the party-line screen at 80×24 across two real TLS domains: bob joined
from a live invitation, lines from alice (a.test) and his own, carol joining. The channel
id and the clock that stamps arriving lines are fixed for the picture."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_textual_snapshot  # noqa: F401 -- a missing plug-in fails these tests, never skips them
from test_tui_snapshots import steady  # noqa: E402
from textual.pilot import Pilot  # noqa: E402
from tui_domains import Two, two  # noqa: E402, F401  (the fixture)
from tui_helpers import wait_for  # noqa: E402

from wsemail.client.im import InstantMessenger, PartyLine  # noqa: E402
from wsemail.server.im import channel as server_channel  # noqa: E402
from wsemail.tui.screens import channel as channel_screen  # noqa: E402
from wsemail.tui.screens.channel import ChannelScreen  # noqa: E402
from wsemail.tui.screens.inbox import InboxScreen  # noqa: E402


def test_channel_snapshot(
    two: Two,  # noqa: F811
    snap_compare: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        server_channel, "secrets", SimpleNamespace(token_urlsafe=lambda n: "Q3-planning")
    )
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    monkeypatch.setattr(channel_screen, "now", lambda: 1741944360.0)  # 2025-03-14 09:26 UTC
    parties: list[PartyLine] = []

    async def joined(pilot: Pilot[Any]) -> None:
        app = pilot.app
        await wait_for(
            pilot,
            lambda: (
                isinstance(app.screen, InboxScreen)
                and app.screen.mailbox.loaded
                and not app.screen.loading
            ),
        )
        neighbour = InstantMessenger(two.user("carol@b.test"))
        await wait_for(pilot, lambda: neighbour.who(["bob@b.test"])[0].status == "online")
        alice_im = InstantMessenger(two.user("alice@a.test"))
        opened = alice_im.open_channel(["bob@b.test", "carol@a.test"])
        await wait_for(pilot, lambda: bool(getattr(app, "invitations", None)))
        alice = alice_im.join(opened.invitation)
        parties.append(alice)
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: isinstance(app.screen, ChannelScreen) and app.screen.joined)
        screen = app.screen
        assert isinstance(screen, ChannelScreen)
        shown = screen.log_view.lines_shown
        alice.send("Agenda: the Q3 numbers, then hiring.")
        await wait_for(pilot, lambda: "alice@a.test: Agenda: the Q3 numbers, then hiring." in shown)
        await pilot.press(*"Numbers are in the shared folder.", "enter")
        await wait_for(pilot, lambda: "me: Numbers are in the shared folder." in shown)
        carol = InstantMessenger(two.user("carol@a.test")).join(opened.invitation.channel)
        parties.append(carol)
        await wait_for(pilot, lambda: "carol@a.test joined" in shown)
        app.clear_notifications()
        await pilot.pause()
        steady(pilot)

    app = two.app("bob@b.test", im_notify=True)
    try:
        assert snap_compare(app, run_before=joined, terminal_size=(80, 24))
    finally:
        for party in parties:
            party.close()
        monkeypatch.delenv("TZ")
        time.tzset()
