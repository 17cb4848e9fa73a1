"""In charge of the server status screen for administrators (S from the inbox): the same
status as `wsemail admin status` — version, uptime, store, queue, recent activity,
accounts, live sessions, plug-ins, certificate and CRL expiry, free disk — read again every
`refresh_seconds` while the screen is open (r reads it at once). A non-admin account sees
the server's refusal instead."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Header, Label, Static

from wsemail.client import admin
from wsemail.client.mail import Client
from wsemail.tui.feedback import describe
from wsemail.tui.screens.base import WorkScreen
from wsemail.tui.widgets.footer import KeyFooter


class AdminStatusScreen(WorkScreen[None]):
    CSS_PATH = "admin.tcss"
    BINDINGS = [
        Binding("escape,q", "close", "Back"),
        Binding("r", "refresh", "Refresh"),
    ]

    class StatusRead(Message):
        """`info` is None when the call failed; `error` then says why."""

        def __init__(self, info: dict[str, Any] | None, error: str = "") -> None:
            super().__init__()
            self.info = info
            self.error = error

    def __init__(self, client: Client, *, refresh_seconds: float = 2.0) -> None:
        super().__init__()
        self.client = client
        self.refresh_seconds = refresh_seconds
        self.info: dict[str, Any] | None = None
        self.reads = 0  # answers received (the live refresh counts up)
        self.error = ""
        self.text = ""  # what the status area shows

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label("reading the server status…", id="admin-updated")
        with VerticalScroll(id="admin-body"):
            yield Static("", id="admin-status", markup=False)
        yield KeyFooter()

    def on_mount(self) -> None:
        self.sub_title = f"server status · {self.client.username}"
        self.action_refresh()
        if self.refresh_seconds > 0:
            self.set_interval(self.refresh_seconds, self.action_refresh)

    def action_close(self) -> None:
        self.dismiss(None)

    def action_refresh(self) -> None:
        self.read_status()

    @work(thread=True, exclusive=True, group="admin-status")
    def read_status(self) -> None:
        try:
            info = admin.status(self.client)
        except Exception as exc:
            self.post_message(self.StatusRead(None, describe(exc)))
        else:
            self.post_message(self.StatusRead(info))

    def on_admin_status_screen_status_read(self, event: AdminStatusScreen.StatusRead) -> None:
        self.reads += 1
        stamp = datetime.now().strftime("%H:%M:%S")
        if event.info is None:
            self.error = event.error
            self.query_one("#admin-updated", Label).update(
                f"cannot read the status ({stamp}): {event.error}"
            )
            return
        self.info, self.error = event.info, ""
        self.text = "\n".join(admin.status_lines(event.info))
        self.query_one("#admin-status", Static).update(self.text)
        every = f", every {self.refresh_seconds:g} s" if self.refresh_seconds > 0 else ""
        self.query_one("#admin-updated", Label).update(f"updated {stamp}{every}")
