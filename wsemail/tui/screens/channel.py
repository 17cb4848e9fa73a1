"""In charge of a party line (paper §4.1, DESIGN.md §8): joining a secure channel (mutual
TLS 1.3 with a federated identity from the own server, the listener pinned by the
invitation's fingerprint), the lines of every party live, sending with Enter, and leaving
with Escape (the channel closes when the last party left).

`Invited` (kept importable here) lives in `screens/base.py`, so the inbox and the app can
post and handle it without loading this screen."""

from __future__ import annotations

import time

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Header, Input, Label

from wsemail.client.im import InstantMessenger
from wsemail.client.mail import Client
from wsemail.client.partyline import Invitation, PartyLine
from wsemail.tui.partyline import ChannelSession, Event, describe_event
from wsemail.tui.screens.base import Invited as Invited
from wsemail.tui.screens.base import WorkScreen
from wsemail.tui.widgets.chat.chat_log import ChatLog
from wsemail.tui.widgets.footer import KeyFooter

now = time.time  # when a line arrived (a seam for snapshots)


class ChannelScreen(WorkScreen[None]):
    """`invitation` is the invitation, or a channel id whose invitation is looked up among
    the instant messages received; `invited` (who was asked, and how) when this user
    opened the channel."""

    CSS_PATH = "channel.tcss"
    BINDINGS = [Binding("escape", "leave", "Leave")]

    class Joined(Message):
        def __init__(self, channel: str, participants: list[str]) -> None:
            super().__init__()
            self.channel = channel
            self.participants = participants

    class Relayed(Message):
        def __init__(self, event: Event) -> None:
            super().__init__()
            self.event = event

    class Ended(Message):
        """The channel closed or refused us (reported already); the screen stays readable."""

    def __init__(
        self,
        client: Client,
        invitation: Invitation | str,
        *,
        invited: dict[str, str] | None = None,
        im: InstantMessenger | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.im = im or InstantMessenger(client)
        self.session = ChannelSession(self.im, invitation)
        self.channel = invitation.channel if isinstance(invitation, Invitation) else invitation
        self.invited = dict(invited or {})
        self.participants: list[str] = []
        self.joined = False
        self.ended = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label("", id="channel-info", markup=False)
        yield ChatLog(id="channel-log")
        yield Input(placeholder="a line to everyone — Enter sends", id="channel-input")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.sub_title = f"{self.client.username} — party line"
        self._show_info()
        if self.invited:
            asked = ", ".join(f"{a} ({how})" for a, how in self.invited.items())
            self.log_view.note(f"invited: {asked}")
        self.query_one("#channel-input", Input).focus()
        self.listen()

    def on_unmount(self) -> None:
        self.session.close()

    @property
    def log_view(self) -> ChatLog:
        return self.query_one(ChatLog)

    def _show_info(self) -> None:
        if self.ended:
            state = "closed"
        elif self.joined:
            state = ", ".join(self.participants) or "only you"
        else:
            state = "joining…"
        self.query_one("#channel-info", Label).update(f"channel {self.channel} · {state}")

    # workers ------------------------------------------------------------------------------
    @work(thread=True, group="channel")
    def listen(self) -> None:
        def ready(party: PartyLine) -> None:
            self.post_message(self.Joined(party.invitation.channel, party.participants))

        try:
            self.session.run(lambda event: self.post_message(self.Relayed(event)), ready)
        except Exception as exc:
            if not self.session.closed:
                self.fail("Cannot join the party line", exc)
        self.post_message(self.Ended())

    @work(thread=True, group="send")
    def send(self, text: str) -> None:
        try:
            self.session.send(text)
        except Exception as exc:
            self.fail("Not sent", exc)

    # events -------------------------------------------------------------------------------
    def on_channel_screen_joined(self, event: ChannelScreen.Joined) -> None:
        self.channel = event.channel
        self.participants = list(event.participants)
        self.joined = True
        self._show_info()
        self.log_view.note(f"joined as {self.client.username}")

    def on_channel_screen_relayed(self, event: ChannelScreen.Relayed) -> None:
        kind, address = event.event.get("event"), str(event.event.get("address", ""))
        if kind == "joined" and address not in self.participants:
            self.participants.append(address)
        elif kind == "left" and address in self.participants:
            self.participants.remove(address)
        shown = describe_event(event.event)
        if shown is None:
            return
        who, text = shown
        if who:
            self.log_view.add(who, text, now(), mine=who == self.client.username)
        else:
            self.log_view.note(text)
        self._show_info()

    def on_channel_screen_ended(self) -> None:
        self.ended = True
        self._show_info()
        self.query_one("#channel-input", Input).disabled = True

    @on(Input.Submitted, "#channel-input")
    def _submit(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text or not self.joined:
            return
        event.input.value = ""
        self.send(text)

    # actions ------------------------------------------------------------------------------
    def action_leave(self) -> None:
        self.session.close()
        self.dismiss(None)
