"""In charge of one conversation by instant message (paper §4.1): the contact's presence,
what they sent before (the server's IM history), their new messages live from a push stream
held while the screen is open, and sending with Enter."""

from __future__ import annotations

import time
from datetime import datetime

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Header, Input, Label

from wsemail.client.im import Incoming, InstantMessenger
from wsemail.client.mail import Client
from wsemail.client.partyline import Invitation, Opened
from wsemail.protocol.errors import WsemailError
from wsemail.tui.drafts import parse_addresses
from wsemail.tui.feedback import describe
from wsemail.tui.push import PushSession, notice_text, plain_address
from wsemail.tui.screens.base import Invited, WorkScreen
from wsemail.tui.screens.channel import ChannelScreen
from wsemail.tui.screens.prompt import PromptScreen
from wsemail.tui.widgets.chat.chat_log import ChatLog
from wsemail.tui.widgets.footer import KeyFooter

PRESENCE = {"online": "● online", "offline": "○ offline"}


def moment(value: str) -> float | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError):
        return None


class ChatScreen(WorkScreen[None]):
    CSS_PATH = "chat.tcss"
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("ctrl+r", "presence", "Presence"),
        Binding("ctrl+l", "party_line", "Party line"),
    ]

    class HistoryLoaded(Message):
        def __init__(self, entries: list[dict[str, object]]) -> None:
            super().__init__()
            self.entries = entries

    class Presence(Message):
        def __init__(self, status: str) -> None:
            super().__init__()
            self.status = status

    class Live(Message):
        """The push stream is open: from now on the contact's messages arrive live."""

    class Received(Message):
        def __init__(self, item: Incoming) -> None:
            super().__init__()
            self.item = item

    class ChannelOpened(Message):
        def __init__(self, opened: Opened) -> None:
            super().__init__()
            self.opened = opened

    class Sent(Message):
        def __init__(self, text: str, at: float) -> None:
            super().__init__()
            self.text = text
            self.at = at

    def __init__(self, client: Client, peer: str, *, im: InstantMessenger | None = None) -> None:
        super().__init__()
        self.client = client
        self.peer = plain_address(peer)
        self.im = im or InstantMessenger(client)
        self.push = PushSession(self.im)
        self.live = False
        self.status = "unknown"

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label("", id="chat-presence")
        yield ChatLog(id="chat-log")
        yield Input(placeholder=f"message to {self.peer} — Enter sends", id="chat-input")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.sub_title = f"{self.client.username} — chat with {self.peer}"
        self._show_presence()
        self.query_one("#chat-input", Input).focus()
        self.load_history()
        self.listen()

    def on_unmount(self) -> None:
        self.push.close()

    @property
    def log_view(self) -> ChatLog:
        return self.query_one(ChatLog)

    def _show_presence(self) -> None:
        shown = PRESENCE.get(self.status, "? presence unknown")
        live = "live" if self.live else "connecting…"
        self.query_one("#chat-presence", Label).update(f"{self.peer}  {shown}  · {live}")

    # workers ------------------------------------------------------------------------------
    @work(thread=True, group="history")
    def load_history(self) -> None:
        try:
            entries = self.im.history(self.peer, limit=50)
            status = next((c.status for c in self.im.who([self.peer])), "unknown")
        except Exception as exc:
            self.fail("Cannot load the conversation", exc)
        else:
            self.post_message(self.HistoryLoaded(list(reversed(entries))))
            self.post_message(self.Presence(status))

    @work(thread=True, group="presence", exclusive=True)
    def refresh_presence(self) -> None:
        try:
            status = next((c.status for c in self.im.who([self.peer])), "unknown")
        except Exception as exc:
            self.fail("Cannot ask for presence", exc)
        else:
            self.post_message(self.Presence(status))

    @work(thread=True, group="listen")
    def listen(self) -> None:
        try:
            self.push.run(
                lambda item: self.post_message(self.Received(item)),
                lambda: self.post_message(self.Live()),
            )
        except Exception as exc:
            if not self.push.closed:
                self.fail("Live messages stopped", exc)

    @work(thread=True, group="send")
    def send(self, text: str) -> None:
        try:
            self.im.send(self.peer, text)
        except Exception as exc:
            self.fail("Not sent", exc)
        else:
            self.post_message(self.Sent(text, time.time()))

    # events -------------------------------------------------------------------------------
    def on_chat_screen_history_loaded(self, event: ChatScreen.HistoryLoaded) -> None:
        for entry in event.entries:
            at = entry.get("at")
            self.log_view.add(
                str(entry.get("from", "")),
                str(entry.get("body", "")),
                at if isinstance(at, float) else None,
            )
        if not event.entries:
            self.log_view.note(f"no earlier messages from {self.peer}")

    def on_chat_screen_presence(self, event: ChatScreen.Presence) -> None:
        self.status = event.status
        self._show_presence()

    def on_chat_screen_live(self) -> None:
        self.live = True
        self._show_presence()

    def on_chat_screen_received(self, event: ChatScreen.Received) -> None:
        item = event.item
        if item.kind == "notice":
            self.notify(notice_text(item), title="Instant message", severity="warning")
            return
        if item.kind != "message":
            return
        invitation = Invitation.parse(item.body, item.sender)
        if invitation is not None:
            if plain_address(item.sender) == self.peer:
                self.log_view.note(f"{self.peer} invites you to a party line (ctrl+g joins)")
            self.app.post_message(Invited(invitation))  # the app says how to join
            return
        if plain_address(item.sender) == self.peer:
            self.log_view.add(item.sender, item.body, moment(str(item.data.get("date", ""))))
            if self.status != "online":
                self.status = "online"
                self._show_presence()
        else:
            self.notify(item.body[:200], title=f"IM from {item.sender}")

    def on_chat_screen_sent(self, event: ChatScreen.Sent) -> None:
        self.log_view.add(self.client.username, event.text, event.at, mine=True)

    @on(Input.Submitted, "#chat-input")
    def _submit(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        event.input.value = ""
        self.send(text)

    # actions ------------------------------------------------------------------------------
    def action_back(self) -> None:
        self.dismiss(None)

    def action_presence(self) -> None:
        self.refresh_presence()

    def action_party_line(self) -> None:
        """Open a party line with the contact (and whoever else is added) and join it."""

        def answered(text: str | None) -> None:
            if not text:
                return
            try:
                addresses = parse_addresses(text)
            except WsemailError as exc:
                self.notify(describe(exc), title="No party line", severity="error")
                return
            if addresses:
                self.notify("Opening a party line…", timeout=2)
                self.open_channel(addresses)

        question = "Party line with (addresses, comma-separated):"
        self.app.push_screen(PromptScreen(question, value=self.peer), answered)

    @work(thread=True, group="channel", exclusive=True)
    def open_channel(self, addresses: list[str]) -> None:
        try:
            opened = self.im.open_channel(addresses)
        except Exception as exc:
            self.fail("Cannot open a party line", exc)
        else:
            self.post_message(self.ChannelOpened(opened))

    def on_chat_screen_channel_opened(self, event: ChatScreen.ChannelOpened) -> None:
        opened = event.opened
        self.app.push_screen(
            ChannelScreen(self.client, opened.invitation, invited=opened.invited, im=self.im)
        )
