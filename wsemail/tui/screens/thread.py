"""In charge of showing a whole conversation (GetThread) from the message view (t): every
message of it, each reply right under what it answers and indented by how deep it is, with
its provenance as the sending server's signature vouches for it. Read with Peek: nothing is
marked seen. A message whose signature check FAILED or that is encrypted end to end shows
no text here: open it from the folder (the message view reveals or decrypts it)."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message as TextualMessage
from textual.widgets import Header, Static

from wsemail.client.mail import Client
from wsemail.core.provenance import Provenance
from wsemail.protocol.message import Message, is_sealed_body
from wsemail.tui.conversations import reply_order
from wsemail.tui.mailbox import format_date
from wsemail.tui.screens.base import WorkScreen
from wsemail.tui.widgets.footer import KeyFooter
from wsemail.tui.widgets.message.message_view import PROOF_STYLES

INDENT = 4  # columns per reply level
MAX_INDENT = 8  # levels


def shown(message: Message, proof: Provenance, current: bool) -> Text:
    """One message of the conversation as text (user data never read as markup)."""
    text = Text()
    text.append(("▶ " if current else "") + message.sender, style="bold")
    text.append(f"  {format_date(message.date)}  ")
    text.append(str(proof), style=PROOF_STYLES.get(proof.status, "yellow"))
    text.append("\n")
    text.append(message.subject, style="bold")
    text.append("\n\n")
    if proof.status == "failed":
        text.append("(its signature check FAILED: open it to see why)", style="bold red")
    elif is_sealed_body(message.body):
        text.append("(encrypted end to end: open it to read it)", style="yellow")
    else:
        text.append(message.body.rstrip())
    return text


class ThreadScreen(WorkScreen[None]):
    """The conversation of one message, oldest first with its replies kept together."""

    CSS_PATH = "thread.tcss"
    BINDINGS = [Binding("escape,q,t", "back", "Back")]

    class Loaded(TextualMessage):
        def __init__(self, items: list[tuple[int, Message, Provenance]]) -> None:
            super().__init__()
            self.items = items

    def __init__(self, client: Client, message_id: str) -> None:
        super().__init__()
        self.client = client
        self.message_id = message_id
        self.items: list[tuple[int, Message, Provenance]] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield VerticalScroll(Static("Loading…", id="thread-status"), id="thread")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.sub_title = f"{self.client.username} — conversation"
        self.query_one("#thread", VerticalScroll).focus()
        self.load()

    @work(thread=True, group="thread")
    def load(self) -> None:
        try:
            messages = [m for m in self.client.thread(self.message_id, peek=True)]
            checked = [self.client.verify(m) for m in messages]
            verified = {id(m): pair for m, pair in zip(messages, checked, strict=True)}
            items = []
            for depth, message in reply_order(messages):
                proof, content = verified[id(message)]
                items.append((depth, content, proof))
        except Exception as exc:
            self.fail("Cannot show the conversation", exc)
        else:
            self.post_message(self.Loaded(items))

    def on_thread_screen_loaded(self, event: ThreadScreen.Loaded) -> None:
        self.items = event.items
        box = self.query_one("#thread", VerticalScroll)
        status = self.query_one("#thread-status", Static)
        count = len(event.items)
        status.update(f"{count} message{'s' if count != 1 else ''} in this conversation")
        for depth, message, proof in event.items:
            block = Static(
                shown(message, proof, message.id == self.message_id),
                classes="thread-message",
            )
            block.styles.margin = (0, 0, 1, INDENT * min(depth, MAX_INDENT))
            box.mount(block)

    def action_back(self) -> None:
        self.dismiss(None)
