"""In charge of reading one message: retrieve it, show it, and start a reply, reply-all or
forward from it, or delete it after a confirm dialog."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message as TextualMessage
from textual.widgets import Footer, Header

from wsemail.client import Client
from wsemail.message import Message
from wsemail.provenance import Provenance
from wsemail.tui import drafts
from wsemail.tui.mailbox import AddressBook
from wsemail.tui.screens.base import WorkScreen
from wsemail.tui.screens.compose import ComposeScreen
from wsemail.tui.screens.confirm import ConfirmScreen
from wsemail.tui.widgets.message.message_view import MessageView


class MessageScreen(WorkScreen[str | None]):
    """Dismisses with the message's id when it was deleted, else None."""

    CSS_PATH = "message.tcss"
    BINDINGS = [
        Binding("escape,q", "back", "Back"),
        Binding("r", "reply", "Reply"),
        Binding("a", "reply_all", "Reply all"),
        Binding("f", "forward", "Forward"),
        Binding("d,delete", "delete", "Delete"),
    ]

    class Loaded(TextualMessage):
        def __init__(self, message: Message, proof: Provenance) -> None:
            super().__init__()
            self.message = message
            self.proof = proof

    class Deleted(TextualMessage):
        pass

    def __init__(self, client: Client, book: AddressBook, message_id: str) -> None:
        super().__init__()
        self.client = client
        self.book = book
        self.message_id = message_id
        self.message: Message | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield MessageView(id="message")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.client.username
        self.query_one(MessageView).focus()
        self.retrieve()

    @work(thread=True, group="retrieve")
    def retrieve(self) -> None:
        try:
            # the content shown is what the sending server's signature vouches for
            proof, message = self.client.verify(self.client.retrieve(self.message_id))
        except Exception as exc:
            self.fail("Cannot open the message", exc)
        else:
            self.post_message(self.Loaded(message, proof))

    def on_message_screen_loaded(self, event: MessageScreen.Loaded) -> None:
        self.message = event.message
        self.book.learn([event.message])
        self.query_one(MessageView).show(event.message, event.proof)

    # actions ------------------------------------------------------------------------------
    def action_back(self) -> None:
        self.dismiss(None)

    def _start(self, make: str) -> None:
        if self.message is None:
            self.notify("the message is still loading", severity="warning")
            return
        me = self.client.username
        if make == "reply":
            draft = drafts.reply(self.message, me)
        elif make == "reply_all":
            draft = drafts.reply(self.message, me, to_all=True)
        else:
            draft = drafts.forward(self.message)
        self.app.push_screen(ComposeScreen(self.client, self.book, draft))

    def action_reply(self) -> None:
        self._start("reply")

    def action_reply_all(self) -> None:
        self._start("reply_all")

    def action_forward(self) -> None:
        self._start("forward")

    def action_delete(self) -> None:
        subject = self.message.subject if self.message else ""

        def answered(yes: bool | None) -> None:
            if yes:
                self.delete()

        self.app.push_screen(ConfirmScreen(f"Delete “{subject}”?", yes="Delete"), answered)

    @work(thread=True, group="delete")
    def delete(self) -> None:
        try:
            self.client.delete(self.message_id)
        except Exception as exc:
            self.fail("Cannot delete", exc)
        else:
            self.post_message(self.Deleted())

    def on_message_screen_deleted(self) -> None:
        self.notify("Message deleted")
        self.dismiss(self.message_id)
