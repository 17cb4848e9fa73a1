"""In charge of showing one retrieved message: its header block and its text body."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from wsemail.client.usercerts import EncryptedAttachment
from wsemail.core.provenance import Provenance
from wsemail.core.units import byte_size
from wsemail.protocol.message import AttachmentRef, Message
from wsemail.tui.mailbox import format_date

PROOF_STYLES = {"verified": "green", "local": "", "failed": "bold red"}


def header_block(
    message: Message,
    proof: Provenance | None = None,
    refs: Sequence[AttachmentRef | EncryptedAttachment] | None = None,
    sealed: str = "",
) -> Text:
    """From / To / Cc / Date / Subject and the provenance line ("signed by a.example ✓" or
    a plain warning), for a message encrypted end to end the line `wsemail retrieve` prints
    ("end to end ✓, signed by alice@a.example ✓" or why it cannot be opened), and the
    on-demand attachments; user data never read as markup."""
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
    if sealed:
        text.append("\n")
        text.append("Encrypted: ", style="bold")  # as `wsemail retrieve` prints it
        text.append(sealed, style="yellow" if sealed.startswith("cannot") else "green")
    for number, ref in enumerate(refs or [], 1):
        text.append("\n")
        text.append(f"{'Files:' if number == 1 else '':9}", style="bold")
        server = ref.ref.server if isinstance(ref, EncryptedAttachment) else ref.server
        locked = ", encrypted" if isinstance(ref, EncryptedAttachment) else ""
        text.append(f"{number}. {ref.name} ({byte_size(ref.size)}{locked}, on {server}; g to get)")
    return text


class MessageView(VerticalScroll):
    """Headers on top, the body below; scrolls as one."""

    def compose(self) -> ComposeResult:
        yield Static("Loading…", id="message-headers")
        yield Static("", id="message-body")

    def show(
        self,
        message: Message,
        proof: Provenance | None = None,
        refs: Sequence[AttachmentRef | EncryptedAttachment] | None = None,
        form_text: str | None = None,
        sealed: str = "",
        reveal: bool = False,
    ) -> None:
        """`form_text` (a form's rendering) is shown instead of the body's XML; the body of a
        message whose signature check FAILED only when `reveal` (key U)."""
        self.query_one("#message-headers", Static).update(
            header_block(message, proof, refs, sealed)
        )
        body = Text(message.body) if form_text is None else Text(form_text)
        if proof is not None and proof.status == "failed" and not reveal:
            body = Text(
                "Content hidden: its signature check FAILED, so it may not be what was sent.\n"
                "Press U to show it anyway.",
                style="bold red",
            )
        self.query_one("#message-body", Static).update(body)
        self.scroll_home(animate=False)
