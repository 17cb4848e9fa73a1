"""In charge of listing the keys that work where the user pressed `?`."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

ABOUT = (
    "wsemail: mail, instant messages, party lines and forms as secure web services. "
    "Errors show as notifications; ctrl+a switches accounts (from the inbox); ctrl+q quits."
)


class HelpScreen(ModalScreen[None]):
    """Shows (key, what it does) pairs collected from the screen below."""

    CSS_PATH = "help.tcss"
    BINDINGS = [Binding("escape,q,question_mark,f1", "close", "Close")]

    def __init__(self, title: str, keys: Sequence[tuple[str, str]]) -> None:
        super().__init__()
        self.title_text = title
        self.keys = list(keys)

    def compose(self) -> ComposeResult:
        table = Text()
        for key, description in self.keys:
            if table:
                table.append("\n")
            table.append(f"{key:>12}  ", style="bold")
            table.append(description)
        with Vertical(id="help-dialog"):
            yield Label(f"Keys: {self.title_text}", id="help-title", markup=False)
            with VerticalScroll(id="help-keys"):
                yield Static(table)
            yield Static(ABOUT, id="help-about", markup=False)

    def action_close(self) -> None:
        self.dismiss(None)
