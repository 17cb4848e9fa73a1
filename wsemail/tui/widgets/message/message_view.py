"""In charge of showing one retrieved message: its header block and its text body."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from wsemail.message import Message
from wsemail.tui.mailbox import format_date


def header_block(message: Message) -> Text:
    """From / To / Cc / Date / Subject, labels dimmed; user data never read as markup.

    A "Signed by" line (end-to-end provenance) and an attachment list belong here once the
    client library reports them."""
    rows = [
        ("From", message.sender),
        ("To", ", ".join(message.to)),
        ("Cc", ", ".join(message.cc)),
        ("Date", format_date(message.date)),
        ("Subject", message.subject),
    ]
    text = Text()
    for label, value in rows:
        if not value and label == "Cc":
            continue
        if text:
            text.append("\n")
        text.append(f"{label + ':':9}", style="bold")
        text.append(value)
    return text


class MessageView(VerticalScroll):
    """Headers on top, the body below; scrolls as one."""

    def compose(self) -> ComposeResult:
        yield Static("Loading…", id="message-headers")
        yield Static("", id="message-body")

    def show(self, message: Message) -> None:
        self.query_one("#message-headers", Static).update(header_block(message))
        self.query_one("#message-body", Static).update(Text(message.body))
        self.scroll_home(animate=False)
