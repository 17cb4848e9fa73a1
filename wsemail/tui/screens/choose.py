"""In charge of picking one of a few named things (a form plug-in to attach) as a modal
list: arrows and Enter, or Escape for none."""

from __future__ import annotations

from collections.abc import Sequence

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option


class ChooseScreen(ModalScreen[str | None]):
    """`choices` are (key, label) pairs; dismisses with the chosen key, or None."""

    CSS_PATH = "choose.tcss"
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, choices: Sequence[tuple[str, str]]) -> None:
        super().__init__()
        self.question = question
        self.choices = list(choices)

    def compose(self) -> ComposeResult:
        with Vertical(id="choose-dialog"):
            yield Label(self.question, id="choose-question", markup=False)
            yield OptionList(
                *(Option(label, id=key) for key, label in self.choices), id="choose-list"
            )

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    @on(OptionList.OptionSelected, "#choose-list")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
