"""In charge of reading one message: retrieve it, show it with its provenance and its
on-demand attachments, fetch those (progress bar; the SHA-256 from the signed message is
checked before a file is kept), and start a reply, reply-all or forward from it, or delete
it after a confirm dialog."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message as TextualMessage
from textual.widgets import Footer, Header, ProgressBar

from wsemail.attachments_client import Attachments, safe_file_name
from wsemail.client import Client
from wsemail.errors import WsemailError
from wsemail.message import AttachmentRef, Message
from wsemail.provenance import Provenance
from wsemail.tui import drafts
from wsemail.tui.mailbox import AddressBook
from wsemail.tui.screens.base import WorkScreen
from wsemail.tui.screens.compose import ComposeScreen
from wsemail.tui.screens.confirm import ConfirmScreen
from wsemail.tui.widgets.message.message_view import MessageView


def download_dir() -> Path:
    """Where fetched attachments go: WSEMAIL_DOWNLOAD_DIR, else the user's downloads."""
    env = os.environ.get("WSEMAIL_DOWNLOAD_DIR")
    return Path(env) if env else Path(platformdirs.user_downloads_dir())


class MessageScreen(WorkScreen[str | None]):
    """Dismisses with the message's id when it was deleted, else None."""

    CSS_PATH = "message.tcss"
    BINDINGS = [
        Binding("escape,q", "back", "Back"),
        Binding("r", "reply", "Reply"),
        Binding("a", "reply_all", "Reply all"),
        Binding("f", "forward", "Forward"),
        Binding("d,delete", "delete", "Delete"),
        Binding("g", "fetch", "Get files"),
    ]

    class Loaded(TextualMessage):
        def __init__(self, message: Message, proof: Provenance, refs: list[AttachmentRef]) -> None:
            super().__init__()
            self.message = message
            self.proof = proof
            self.refs = refs

    class Fetched(TextualMessage):
        def __init__(self, paths: list[Path]) -> None:
            super().__init__()
            self.paths = paths

    class Deleted(TextualMessage):
        pass

    def __init__(self, client: Client, book: AddressBook, message_id: str) -> None:
        super().__init__()
        self.client = client
        self.book = book
        self.message_id = message_id
        self.message: Message | None = None
        self.refs: list[AttachmentRef] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield MessageView(id="message")
        yield ProgressBar(id="fetch-progress", show_eta=False)
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
            refs: list[AttachmentRef] = []
            if message.attachments or message.signed_xml is None:
                try:
                    refs = Attachments(self.client).list(self.message_id).refs
                except WsemailError as exc:  # references that cannot be trusted are not shown
                    self.app.call_from_thread(
                        self.notify, f"Attachments not shown: {exc}", severity="warning"
                    )
        except Exception as exc:
            self.fail("Cannot open the message", exc)
        else:
            self.post_message(self.Loaded(message, proof, refs))

    def on_message_screen_loaded(self, event: MessageScreen.Loaded) -> None:
        self.message = event.message
        self.book.learn([event.message])
        self.refs = event.refs
        self.query_one(MessageView).show(event.message, event.proof, event.refs)

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

    def action_fetch(self) -> None:
        if not self.refs:
            self.notify("This message has no attachments", severity="warning")
            return
        bar = self.query_one("#fetch-progress", ProgressBar)
        bar.update(total=sum(ref.size for ref in self.refs) or 1, progress=0)
        bar.display = True
        self.fetch(download_dir(), bar)

    @work(thread=True, group="fetch", exclusive=True)
    def fetch(self, folder: Path, bar: ProgressBar) -> None:
        box = Attachments(self.client)
        done = 0
        saved: list[Path] = []
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for ref in self.refs:

                def progress(have: int, total: int, base: int = done) -> None:
                    self.app.call_from_thread(bar.update, progress=base + have)

                saved.append(box.fetch(ref, folder / safe_file_name(ref.name), progress=progress))
                done += ref.size
        except Exception as exc:
            self.fail("Cannot fetch the attachment", exc)
        self.post_message(self.Fetched(saved))

    def on_message_screen_fetched(self, event: MessageScreen.Fetched) -> None:
        self.query_one("#fetch-progress", ProgressBar).display = False
        for path in event.paths:
            self.notify(f"Saved {path} (SHA-256 checked against the signed message)")

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
