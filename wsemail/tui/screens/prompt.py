"""In charge of asking for one line of text (an address to chat with or delegate to) as a
modal dialog."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label

from wsemail.tui.mailbox import AddressBook
from wsemail.tui.widgets.compose.address_input import AddressInput


class PromptScreen(ModalScreen[str | None]):
    """Dismisses with the text entered (stripped), or None on escape or when empty."""

    CSS_PATH = "prompt.tcss"
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, book: AddressBook | None = None, value: str = "") -> None:
        super().__init__()
        self.question = question
        self.value = value
        self.book = book or AddressBook()

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt-dialog"):
            yield Label(self.question, id="prompt-question", markup=False)
            yield AddressInput(
                self.book, self.value, id="prompt-input", placeholder="name@example.org"
            )

    def on_mount(self) -> None:
        self.query_one("#prompt-input", Input).focus()

    @on(Input.Submitted, "#prompt-input")
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)
