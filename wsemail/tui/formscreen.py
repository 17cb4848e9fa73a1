"""In charge of filling in and viewing a form in the terminal client: one screen shared by
every form plug-in, laid out from the plug-in's schema (typed fields, required marks,
computed fields updated as you type, tables with a row per item or per day), validated by
the plug-in's own rules with the problems shown inline.

Public API (what the compose and message screens use):

    FormFillScreen(plugin, data: dict | None = None, client=None)
        A ModalScreen. Dismisses with the validated form draft
        {"form": name, "data": {…}, "route": [{"role": …, "approvers": […]}…]} — the dict
        shape `wsemail send --form FILE.json` accepts — or None on cancel (escape). `data`
        pre-fills it: a form draft of that shape, or just the form's field values. With a
        signed-in `client` (wsemail.client.Client), a plug-in that declares
        `autofill = True` gets an "Autofill…" button: the own server's Autofill service,
        asked with the user's federated identity (`workflow.autofill`).
        When the plug-in's `screen()` names a subclass (its own layout), that class is built.
    FormFillScreen(plugin, data, readonly=True, chain=chain)   (or `view_screen`)
        The same layout read-only, with the route and approval chain below; dismisses
        with None. `shown_screen(form)` builds it for the message view's `FormShown`.
    wsemail.client.forms.workflow.attach_form(draft, plugin, form_draft, sender=…, server=…)
        → a `wsemail.protocol.message.Draft` carrying the form (its body is the form document).
    wsemail.client.forms.installed_forms() → every form plug-in that loads, for a "new form" menu.

Subclasses may override `cell` (the widget for one table cell) and `row_filled` (when a
row counts), and add CSS of their own.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from importlib.metadata import distributions, entry_points
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, Input, Label, Static

from wsemail.client.forms import workflow
from wsemail.client.mail import Client
from wsemail.core.forms.approvals import Chain
from wsemail.core.forms.contract import SCREEN_GROUP, FormInvalid, FormPlugin
from wsemail.core.forms.contract import Field as FormField
from wsemail.protocol.errors import WsemailError
from wsemail.tui.feedback import describe
from wsemail.tui.formview import FormShown

FormDraft = dict[str, Any]
_DRAFT_KEYS = {"form", "data", "route", "wheel", "autofill"}
_HINTS = {"int": "0", "decimal": "0.00", "date": "YYYY-MM-DD", "address": "name@domain"}


def _text(value: object) -> str:
    return "" if value is None else str(value)


def is_draft(data: Mapping[str, Any] | None) -> bool:
    """Whether the screen was opened with a form draft ({"form", "data", "route", …})
    rather than just the field values."""
    keys = set(data or {})
    return bool(keys) and keys <= _DRAFT_KEYS and bool({"form", "data"} & keys)


def split_draft(data: Mapping[str, Any] | None) -> tuple[dict[str, Any], Any]:
    """(field values, route) from what the screen was opened with."""
    if not data:
        return {}, None
    if is_draft(data):
        values = data.get("data")
        return dict(values) if isinstance(values, Mapping) else {}, data.get("route")
    return dict(data), None


log = logging.getLogger("wsemail.tui")


def plugin_screen(plugin: FormPlugin) -> object:
    """The plug-in's own screen class: the entry point named like the form in group
    `wsemail.form_screens` of the distribution the plug-in was loaded from (the
    environment's, or its wheel's in the private plug-in folder); None when it has none
    or it fails to load (third-party code: the shared layout is used then)."""
    found = [ep for ep in entry_points(group=SCREEN_GROUP) if ep.name == plugin.name]
    module = sys.modules.get(type(plugin).__module__)
    source = getattr(module, "__file__", None)
    if not found and source:  # a wheel in the private folder: read its own dist-info
        root = str(Path(source).resolve().parent.parent)
        for dist in distributions(path=[root]):
            found += [
                ep
                for ep in dist.entry_points
                if ep.group == SCREEN_GROUP and ep.name == plugin.name
            ]
    for ep in found[:1]:
        try:
            return ep.load()
        except Exception as exc:  # third-party code
            log.warning("form screen %r left out: %s", plugin.name, exc)
    return None


class FormFillScreen(ModalScreen[FormDraft | None]):
    """Fill in (or view) a form; dismisses with the form draft, or None."""

    CSS_PATH = Path(__file__).with_name("formscreen.tcss")  # absolute: subclasses share it
    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "submit", "Submit", priority=True),
        Binding("ctrl+n", "add_row", "Add row"),
    ]

    def __new__(cls, plugin: FormPlugin, *args: Any, **kwargs: Any) -> FormFillScreen:
        if cls is FormFillScreen:  # the plug-in's own layout, when it has one
            own = plugin_screen(plugin)
            if isinstance(own, type) and issubclass(own, FormFillScreen):
                cls = own
        return super().__new__(cls)

    def __init__(
        self,
        plugin: FormPlugin,
        data: Mapping[str, Any] | None = None,
        client: Client | None = None,
        *,
        readonly: bool = False,
        chain: Chain | None = None,
    ) -> None:
        super().__init__()
        self.plugin = plugin
        self.client = client
        self.readonly = readonly
        self.chain = chain
        self.values, self.route = split_draft(data)
        draft = data if data is not None and is_draft(data) else {}
        self.wheel = draft.get("wheel")
        # a draft that says "autofill": true is filled from the server as the screen opens
        self.autofill_on_open = draft.get("autofill") is True
        self.rows: dict[str, int] = {}
        self.problems: list[str] = []

    # layout -----------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        plugin = self.plugin
        mode = " — esc closes" if self.readonly else " — ctrl+s submits, esc cancels"
        with Vertical(id="form-dialog"):
            yield Label(f"{plugin.title or plugin.name} {plugin.version}{mode}", id="form-title")
            with VerticalScroll(id="form-body"):
                for f in plugin.fields:
                    if f.kind == "table":
                        yield from self._table(f)
                    else:
                        yield self._scalar(f)
                if not self.readonly:
                    yield self._line(
                        "Route *",
                        Input(
                            self._route_text(),
                            placeholder="manager: bob@a.test; purchasing: pat@b.test",
                            id="form-route",
                            compact=True,
                        ),
                    )
                else:
                    yield Static(self._chain_text(), id="form-chain", markup=False)
            yield Static("", id="form-errors", markup=False)
            with Horizontal(id="form-buttons"):
                if not self.readonly and plugin.autofill and self.client is not None:
                    yield Button("Autofill…", id="form-autofill", compact=True)
                if self.readonly:
                    yield Button("Close", id="form-cancel", compact=True)
                else:
                    yield Button("Cancel", id="form-cancel", compact=True)
                    yield Button("Submit", id="form-submit", variant="primary", compact=True)

    def _route_text(self) -> str:
        try:
            return workflow.route_text(self.route) if self.route else ""
        except WsemailError:  # a malformed route in the draft: type it again
            return ""

    def _line(self, title: str, widget: Widget) -> Horizontal:
        return Horizontal(Label(title, classes="form-label"), widget, classes="form-line")

    def _scalar(self, f: FormField) -> Horizontal:
        mark = " *" if f.required and not self.readonly else ""
        if f.computed:
            value = _text(self.values.get(f.name)) if self.readonly else ""
            widget: Widget = Static(value, id=f"field-{f.name}", classes="computed", markup=False)
        else:
            widget = Input(
                _text(self.values.get(f.name)),
                placeholder=_HINTS.get(f.kind, ""),
                id=f"field-{f.name}",
                disabled=self.readonly,
                compact=True,
            )
        return self._line(f.title + mark, widget)

    def _start_rows(self, f: FormField) -> list[Mapping[str, Any]]:
        """The rows a table opens with: the given ones; when filling in, laid over the
        plug-in's own starting rows (a given Tuesday fills the Tuesday line)."""
        value = self.values.get(f.name)
        given = [r for r in value if isinstance(r, Mapping)] if isinstance(value, list) else []
        if self.readonly:
            return given
        template = self.plugin.rows(f.name)

        def fits(row: Mapping[str, Any], start: Mapping[str, Any]) -> bool:
            return all(row.get(k) == v for k, v in start.items())

        rows: list[Mapping[str, Any]] = [
            {**start, **next((r for r in given if fits(r, start)), {})} for start in template
        ]
        rows += [r for r in given if not any(fits(r, start) for start in template)]
        return rows or [{}]

    def _table(self, f: FormField) -> ComposeResult:
        rows = self._start_rows(f)
        mark = " *" if f.required and not self.readonly else ""
        add = "   (ctrl+n adds a row)" if self.growable(f) and not self.readonly else ""
        yield Label(f"{f.title}{mark}{add}", classes="form-table-title")
        yield Horizontal(
            *(Label(c.title, classes="form-head") for c in f.columns),
            classes="form-row form-header",
        )
        with Vertical(id=f"table-{f.name}", classes="form-table"):
            for i, row in enumerate(rows):
                yield self._row(f, i, row)
        self.rows[f.name] = len(rows)

    def _row(self, f: FormField, index: int, row: Mapping[str, Any]) -> Horizontal:
        return Horizontal(
            *(self.cell(f, c, index, row.get(c.name)) for c in f.columns),
            classes="form-row",
        )

    def growable(self, table: FormField) -> bool:
        """Whether the user may add rows to `table` (ctrl+n)."""
        return True

    def cell(self, table: FormField, column: FormField, index: int, value: object) -> Widget:
        """The widget of one table cell (an Input; read-only when viewing)."""
        return Input(
            _text(value),
            placeholder=_HINTS.get(column.kind, ""),
            id=f"cell-{table.name}-{index}-{column.name}",
            disabled=self.readonly,
            compact=True,
            classes="form-cell",
        )

    def _chain_text(self) -> str:
        if self.chain is None:
            return "Workflow: approval chain not checked"
        route = " → ".join(f"{s.role} ({', '.join(s.approvers)})" for s in self.chain.route)
        lines = [f"Route: {route}", f"Workflow: {self.chain.status}"]
        lines.extend(f"  {entry}" for entry in self.chain.entries)
        waiting = self.chain.next_approvers()
        if waiting:
            lines.append(f"  waiting for {', '.join(waiting)}")
        return "\n".join(lines)

    def on_mount(self) -> None:
        if not self.readonly:
            self._recompute()
            first = next(iter(self.query(Input)), None)
            if first is not None:
                first.focus()
            if self.autofill_on_open and self.query("#form-autofill"):
                self.query_one("#form-autofill", Button).press()

    # reading what was typed ---------------------------------------------------------------
    def _value(self, widget_id: str) -> str | None:
        widgets = self.query(f"#{widget_id}")
        if not widgets:
            return None
        widget = widgets.first()
        if isinstance(widget, Input):
            text = widget.value.strip()
        elif isinstance(widget, Static):
            text = str(widget.content).strip()
        else:
            return None
        return text or None

    def raw(self) -> dict[str, Any]:
        """What the user typed, as a draft's "data" (empty fields and rows left out)."""
        raw: dict[str, Any] = {}
        for f in self.plugin.fields:
            if f.computed:
                continue
            if f.kind != "table":
                value = self._value(f"field-{f.name}")
                if value is not None:
                    raw[f.name] = value
                continue
            rows = []
            for i in range(self.rows.get(f.name, 0)):
                row = {
                    c.name: v
                    for c in f.columns
                    if not c.computed
                    and (v := self._value(f"cell-{f.name}-{i}-{c.name}")) is not None
                }
                if self.row_filled(f, row):
                    rows.append(row)
            if rows:
                raw[f.name] = rows
        return raw

    def row_filled(self, table: FormField, row: Mapping[str, Any]) -> bool:
        """A row counts when the user typed into it (a cell the layout pre-fills, such as
        a weekday, does not count on its own)."""
        return bool(row)

    def _recompute(self) -> None:
        try:
            values = self.plugin.preview(self.raw())
        except Exception:  # a plug-in's own compute may fail (shown as —); submit says why
            values = {}
        for f in self.plugin.fields:
            if f.computed and f.kind != "table":
                shown = values.get(f.name)
                self.query_one(f"#field-{f.name}", Static).update(
                    "—" if shown is None else str(shown)
                )

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        if not self.readonly:
            self._recompute()

    # actions ------------------------------------------------------------------------------
    def action_add_row(self) -> None:
        if self.readonly:
            return
        focused = self.focused
        tables = [f for f in self.plugin.fields if f.kind == "table" and self.growable(f)]
        if not tables:
            return
        table = tables[0]
        if focused is not None and focused.id and focused.id.startswith("cell-"):
            table = next((t for t in tables if focused.id.startswith(f"cell-{t.name}-")), table)
        index = self.rows[table.name]
        self.rows[table.name] = index + 1
        row = self._row(table, index, {})
        self.query_one(f"#table-{table.name}", Vertical).mount(row)
        self.call_after_refresh(self._focus_row, row)

    def _focus_row(self, row: Horizontal) -> None:
        cells = row.query(Input)
        if cells:
            cells.first().focus()

    def show_problems(self, problems: list[str]) -> None:
        """Problems inline below the form (and the fields they name marked)."""
        self.problems = problems
        errors = self.query_one("#form-errors", Static)
        errors.update("\n".join(f"✗ {p}" for p in problems))
        errors.set_class(bool(problems), "-shown")
        for widget in self.query(Input):
            widget.set_class(self._named(widget.id or "", problems), "-invalid")

    def _named(self, widget_id: str, problems: list[str]) -> bool:
        if widget_id.startswith("field-"):
            name = widget_id.removeprefix("field-")
            return any(p.startswith((f"{name} ", f"{name!r}")) for p in problems)
        if widget_id.startswith("cell-"):
            table, index, column = widget_id.removeprefix("cell-").split("-", 2)
            where = f"{table} row {int(index) + 1} {column} "
            return any(p.startswith(where) for p in problems)
        if widget_id == "form-route":
            return any(p.startswith("route") for p in problems)
        return False

    def result(self) -> FormDraft:
        """The validated form draft; FormInvalid lists every problem."""
        problems: list[str] = []
        data: dict[str, Any] = {}
        try:
            data = self.plugin.plain(self.plugin.validate(self.raw()))
        except FormInvalid as exc:
            problems.extend(exc.problems)
        route: list[dict[str, object]] = []
        try:
            route = workflow.parse_route_text(self._value("form-route") or "")
        except WsemailError as exc:
            problems.append(str(exc) if str(exc).startswith("route") else f"route: {exc}")
        if problems:
            raise FormInvalid(problems)
        draft: FormDraft = {"form": self.plugin.name, "data": data, "route": route}
        if self.wheel:
            draft["wheel"] = self.wheel
        return draft

    def action_submit(self) -> None:
        if self.readonly:
            self.dismiss(None)
            return
        try:
            draft = self.result()
        except FormInvalid as exc:
            self.show_problems(exc.problems)
            return
        except Exception as exc:  # a plug-in's own rules failed: say so, never a traceback
            self.show_problems([f"the {self.plugin.name} plug-in failed: {describe(exc)}"])
            return
        self.dismiss(draft)

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "form-submit":
            self.action_submit()
        elif event.button.id == "form-cancel":
            self.action_cancel()
        elif event.button.id == "form-autofill":
            event.button.disabled = True
            self.notify("Asking your server for your record…", timeout=3)
            self.autofill()

    # Autofill -----------------------------------------------------------------------------
    @work(thread=True, group="form-autofill", exclusive=True)
    def autofill(self) -> None:
        assert self.client is not None
        try:
            record = workflow.autofill(self.client)
        except Exception as exc:  # a worker must report, never die with a traceback
            self.app.call_from_thread(self._autofilled, None, describe(exc))
        else:
            self.app.call_from_thread(self._autofilled, record, "")

    def _autofilled(self, record: dict[str, str] | None, error: str) -> None:
        button = self.query("#form-autofill")
        if button:
            button.first(Button).disabled = False
        if record is None:
            self.show_problems([f"Autofill: {error}"])
            return
        filled = []
        for f in self.plugin.fields:
            if f.kind != "table" and not f.computed and f.name in record:
                self.query_one(f"#field-{f.name}", Input).value = record[f.name]
                filled.append(f.title)
        self.notify(f"Filled in: {', '.join(filled) or 'nothing'}", timeout=4)


def view_screen(
    plugin: FormPlugin, data: Mapping[str, Any], chain: Chain | None = None
) -> FormFillScreen:
    """A received form, read-only, with its approval chain."""
    return FormFillScreen(plugin, data, readonly=True, chain=chain)


def shown_screen(form: FormShown) -> FormFillScreen | None:
    """The read-only screen of a form the message view shows (`formview.show_form`); None
    when its plug-in is not installed or the form did not read."""
    if form.plugin is None or form.data is None:
        return None
    return view_screen(form.plugin, form.data, form.chain)
