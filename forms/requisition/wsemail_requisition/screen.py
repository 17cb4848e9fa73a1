"""The requisition form's Textual screen (view, and fill from a JSON draft); imported lazily by
`Requisition.screen()` so headless code never loads Textual."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from wsemail_requisition import Requisition


class RequisitionScreen(Screen[None]):
    """Shows a requisition form rendered as its paper counterpart."""

    BINDINGS = [("escape", "app.pop_screen", "Back")]

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__()
        self.data = data

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll():
            yield Static(Requisition().render_text(self.data), id="form-requisition")
        yield Footer()
