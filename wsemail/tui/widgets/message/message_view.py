"""In charge of showing one retrieved message: its header block and its text body."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from wsemail.message import Message
from wsemail.provenance import Provenance
from wsemail.tui.mailbox import format_date

PROOF_STYLES = {"verified": "green", "local": "", "failed": "bold red"}


def header_block(message: Message, proof: Provenance | None = None) -> Text:
    """From / To / Cc / Date / Subject and the provenance line ("signed by a.example ✓" or
    a plain warning); user data never read as markup. An attachment list belongs here once
    the client library reports attachments."""
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
    if proof is not None:
        text.append("\n")
        text.append(f"{'Origin:':9}", style="bold")
        text.append(str(proof), style=PROOF_STYLES.get(proof.status, "yellow"))
    return text


class MessageView(VerticalScroll):
    """Headers on top, the body below; scrolls as one."""

    def compose(self) -> ComposeResult:
        yield Static("Loading…", id="message-headers")
        yield Static("", id="message-body")

    def show(self, message: Message, proof: Provenance | None = None) -> None:
        self.query_one("#message-headers", Static).update(header_block(message, proof))
        self.query_one("#message-body", Static).update(Text(message.body))
        self.scroll_home(animate=False)
