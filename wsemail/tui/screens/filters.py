"""In charge of the user's Sieve filters on the server (issue 18): the script in an editor,
saved whole (checked here first, then by the server, which keeps the old one on any
error). Opened with F from the inbox."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Button, Header, Label, TextArea

from wsemail.client.filters import Filters
from wsemail.client.mail import Client
from wsemail.core.sieve import SieveError, parse
from wsemail.protocol.errors import RemoteFault, WsemailError
from wsemail.tui.screens.base import WorkScreen
from wsemail.tui.widgets.footer import KeyFooter


class FiltersScreen(WorkScreen[None]):
    CSS_PATH = "filters.tcss"
    BINDINGS = [
        Binding("ctrl+s", "save", "Save"),
        Binding("escape", "close", "Close"),
    ]

    class Loaded(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    class Saved(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    class Refused(Message):
        def __init__(self, reason: str) -> None:
            super().__init__()
            self.reason = reason

    def __init__(self, client: Client) -> None:
        super().__init__()
        self.client = client
        self.saved_text: str | None = None  # what the server holds, once loaded

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label("Loading your filters…", id="filters-status", markup=False)
        yield TextArea("", id="filters-script", language=None, show_line_numbers=True)
        with Horizontal(id="filters-buttons"):
            yield Button("Save", id="filters-save", variant="primary")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.title = "Filters (Sieve)"
        self.load()

    @property
    def editor(self) -> TextArea:
        return self.query_one("#filters-script", TextArea)

    def status(self, text: str) -> None:
        self.query_one("#filters-status", Label).update(text)

    @work(thread=True, exclusive=True, group="filters")
    def load(self) -> None:
        try:
            text = Filters(self.client).script()
        except WsemailError as exc:
            self.fail("Loading filters failed", exc)
            return
        self.post_message(self.Loaded(text))

    def on_filters_screen_loaded(self, event: Loaded) -> None:
        self.saved_text = event.text
        self.editor.load_text(event.text)
        self.status("Your filters" if event.text else "No filters yet: write a Sieve script")
        self.editor.focus()

    @on(Button.Pressed, "#filters-save")
    def _save_pressed(self) -> None:
        self.action_save()

    def action_save(self) -> None:
        text = self.editor.text
        try:
            if text.strip():
                parse(text)
        except SieveError as exc:
            self.refused(str(exc), exc.line, exc.column)
            return
        self.status("Saving…")
        self.save(text)

    @work(thread=True, exclusive=True, group="filters")
    def save(self, text: str) -> None:
        try:
            saved = Filters(self.client).set_script(text)
        except RemoteFault as exc:
            self.post_message(self.Refused(exc.reason))
            return
        except WsemailError as exc:
            self.fail("Saving filters failed", exc)
            return
        self.post_message(self.Saved(saved))

    def on_filters_screen_saved(self, event: Saved) -> None:
        self.saved_text = event.text
        self.status("Saved: your server runs these filters on new mail")
        self.notify("Filters saved", title="wsemail")

    def on_filters_screen_refused(self, event: Refused) -> None:
        self.refused(event.reason, 0, 0)

    def refused(self, reason: str, line: int, column: int) -> None:
        self.status(f"Not saved (the old filters stay): {reason}")
        if line:
            self.editor.move_cursor((line - 1, max(column - 1, 0)))
        self.notify(reason, title="Filters not saved", severity="error", timeout=8)

    def action_close(self) -> None:
        self.app.pop_screen()
