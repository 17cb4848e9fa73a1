"""In charge of the form plug-in contract (entry-point group `wsemail.forms`, DESIGN.md §8):
a form's schema (typed fields, tables, computed fields), validation of user data, and the
XML (one namespace per form) and text/JSON renderings every form shares.

A plug-in subclasses `FormPlugin` and declares `name`, `version`, `namespace`, `title` and
`fields`; it may override `compute` (computed fields, e.g. totals), `check` (rules across
fields), and `rows` (the rows a new form's tables start with); `autofill = True` offers the
"Autofill…" button. A plug-in with a layout of its own registers its Textual screen as an
entry point of the same name in `SCREEN_GROUP` (`wsemail.form_screens`); the TUI finds it
there, so the contract never imports the TUI.
Values are normalised to str, int, Decimal or lists of row dicts; `preview` computes what it
can from half-typed input (the fill screen's live totals); `plain` turns validated data
back into the JSON a draft carries.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from lxml import etree

from wsemail.protocol.errors import UsageError
from wsemail.protocol.message import is_address

GROUP = "wsemail.forms"
# A plug-in's own Textual screen (optional): an entry point of the same name in this group,
# found by the TUI; headless code never loads it.
SCREEN_GROUP = "wsemail.form_screens"
KINDS = ("text", "int", "decimal", "date", "address", "table")
MAX_ROWS = 200
MAX_TEXT = 2000

Data = dict[str, Any]


class FormInvalid(UsageError):
    """Form data that does not fit the plug-in's schema or rules (lists every problem)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Field:
    name: str
    kind: str = "text"
    label: str = ""
    required: bool = False
    columns: tuple[Field, ...] = ()  # for kind="table"
    computed: bool = False  # filled by FormPlugin.compute, never by the user

    @property
    def title(self) -> str:
        return self.label or self.name.replace("_", " ").capitalize()


def _scalar(f: Field, raw: object, where: str, problems: list[str]) -> object:
    if raw is None or raw == "":
        if f.required:
            problems.append(f"{where} is required")
        return None
    try:
        if f.kind == "int":
            if isinstance(raw, bool) or not isinstance(raw, (int, str)):
                raise ValueError
            return int(str(raw).strip())
        if f.kind == "decimal":
            if isinstance(raw, (bool, float)) or not isinstance(raw, (int, str, Decimal)):
                raise ValueError  # floats lose money; give decimals as strings or ints
            value = Decimal(str(raw).strip())
            if not value.is_finite():
                raise ValueError
            return value
        if f.kind == "date":
            return date.fromisoformat(str(raw).strip()).isoformat()
        if f.kind == "address":
            text = str(raw).strip()
            if not is_address(text):
                raise ValueError
            return text
        text = str(raw)
        if len(text) > MAX_TEXT or any(ord(c) < 32 and c not in "\n\t" for c in text):
            raise ValueError
        return text
    except (ValueError, InvalidOperation):
        problems.append(f"{where} is not a valid {f.kind}")
        return None


class FormPlugin:
    """Base of every form plug-in: subclass, declare the schema, override the hooks."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = ""
    namespace: ClassVar[str] = ""
    title: ClassVar[str] = ""
    fields: ClassVar[tuple[Field, ...]] = ()
    autofill: ClassVar[bool] = False  # fields may come from the own server's Autofill

    # hooks ------------------------------------------------------------------------------
    def compute(self, data: Data) -> Data:
        """Values of the computed fields, from validated user data."""
        return {}

    def check(self, data: Data) -> list[str]:
        """Problems across fields (beyond types and required); empty when fine."""
        return []

    def rows(self, table: str) -> list[Data]:
        """The rows table `table` of a new form starts with (e.g. one per weekday)."""
        return []

    # validation -------------------------------------------------------------------------
    def validate(self, raw: Mapping[str, object]) -> Data:
        """Normalised user data plus computed fields, or FormInvalid listing every problem."""
        problems: list[str] = []
        known = {f.name: f for f in self.fields}
        for key in raw:
            if key not in known:
                problems.append(f"unknown field {key!r}")
            elif known[key].computed:
                problems.append(f"{key!r} is computed and cannot be given")
        data: Data = {}
        for f in self.fields:
            if f.computed:
                continue
            value = raw.get(f.name)
            if f.kind == "table":
                data[f.name] = self._table(f, value, problems)
            else:
                data[f.name] = _scalar(f, value, f.name, problems)
        if not problems:
            problems.extend(self.check(data))
        if problems:
            raise FormInvalid(problems)
        data.update(self.compute(data))
        return data

    def preview(self, raw: Mapping[str, object]) -> Data:
        """What can be computed from half-typed input: values that do not parse count as
        empty, table rows missing a required cell are left out; a computed field that still
        cannot be computed is None. Never raises."""
        ignored: list[str] = []
        data: Data = {}
        for f in self.fields:
            if f.computed:
                continue
            value = raw.get(f.name)
            if f.kind != "table":
                data[f.name] = _scalar(replace(f, required=False), value, f.name, ignored)
                continue
            rows = []
            for row in value if isinstance(value, list) else []:
                cells = {
                    c.name: _scalar(replace(c, required=False), row.get(c.name), "", ignored)
                    for c in f.columns
                    if not c.computed and isinstance(row, Mapping)
                }
                if all(cells.get(c.name) is not None for c in f.columns if c.required):
                    rows.append(cells)
            data[f.name] = rows
        try:
            data.update(self.compute(data))
        except (TypeError, ValueError, ArithmeticError, KeyError):
            data.update({f.name: None for f in self.fields if f.computed})
        return data

    def plain(self, data: Mapping[str, object]) -> dict[str, object]:
        """Validated data as a draft's JSON "data": user fields only (not computed), decimals
        as strings, empty values left out; `validate(plain(d))` gives `d` back."""

        def value(v: object) -> object:
            return str(v) if isinstance(v, Decimal) else v

        out: dict[str, object] = {}
        for f in self.fields:
            v = data.get(f.name)
            if f.computed or v is None:
                continue
            if f.kind == "table" and isinstance(v, list):
                keep = [c.name for c in f.columns if not c.computed]
                out[f.name] = [{c: value(r[c]) for c in keep if r.get(c) is not None} for r in v]
            else:
                out[f.name] = value(v)
        return out

    def _table(self, f: Field, value: object, problems: list[str]) -> list[Data]:
        if value is None:
            if f.required:
                problems.append(f"{f.name} is required")
            return []
        if not isinstance(value, list) or len(value) > MAX_ROWS:
            problems.append(f"{f.name} must be a list of at most {MAX_ROWS} rows")
            return []
        columns = {c.name: c for c in f.columns}
        rows: list[Data] = []
        for i, row in enumerate(value, 1):
            if not isinstance(row, Mapping):
                problems.append(f"{f.name} row {i} must be an object")
                continue
            for key in row:
                if key not in columns or columns[key].computed:
                    problems.append(f"{f.name} row {i}: unknown column {key!r}")
            rows.append(
                {
                    c.name: _scalar(c, row.get(c.name), f"{f.name} row {i} {c.name}", problems)
                    for c in f.columns
                    if not c.computed
                }
            )
        if f.required and not rows:
            problems.append(f"{f.name} needs at least one row")
        return rows

    # XML --------------------------------------------------------------------------------
    def to_xml(self, data: Data) -> etree._Element:
        """The form's data in its own namespace (computed fields marked computed="1")."""
        root = etree.Element(f"{{{self.namespace}}}{self.name}", nsmap={"f": self.namespace})
        for f in self.fields:
            self._put(root, f, data.get(f.name))
        return root

    def _put(self, parent: etree._Element, f: Field, value: object) -> None:
        node = etree.SubElement(parent, f"{{{self.namespace}}}{f.name}")
        if f.computed:
            node.set("computed", "1")
        if f.kind == "table":
            for row in value if isinstance(value, list) else []:
                row_node = etree.SubElement(node, f"{{{self.namespace}}}row")
                for c in f.columns:
                    self._put(row_node, c, row.get(c.name))
        elif value is not None:
            node.text = str(value)

    def from_xml(self, root: etree._Element) -> Data:
        """Read and re-validate form data; computed fields must equal the recomputation."""
        if root.tag != f"{{{self.namespace}}}{self.name}":
            raise FormInvalid([f"not a {self.name} form ({self.namespace})"])
        raw: dict[str, object] = {}
        given: dict[str, str | None] = {}
        for node in root:
            if not isinstance(node.tag, str):
                continue
            qname = etree.QName(node)
            if qname.namespace != self.namespace:
                raise FormInvalid([f"element {qname.localname!r} outside the form namespace"])
            f = next((x for x in self.fields if x.name == qname.localname), None)
            if f is None:
                raise FormInvalid([f"unknown field {qname.localname!r}"])
            if f.computed:
                given[f.name] = node.text
            elif f.kind == "table":
                raw[f.name] = [
                    {etree.QName(c).localname: c.text for c in row if isinstance(c.tag, str)}
                    for row in node
                    if isinstance(row.tag, str)
                ]
            else:
                raw[f.name] = node.text
        data = self.validate(raw)
        for f in self.fields:
            if f.computed and given.get(f.name) != _text(data.get(f.name)):
                raise FormInvalid([f"computed field {f.name!r} does not match its inputs"])
        return data

    # renderings -------------------------------------------------------------------------
    def to_json(self, data: Data) -> str:
        return json.dumps(data, default=str, indent=2, sort_keys=False)

    def render_text(self, data: Data) -> str:
        lines = [self.title or self.name, "=" * len(self.title or self.name)]
        for f in self.fields:
            value = data.get(f.name)
            if f.kind != "table":
                mark = " (computed)" if f.computed else ""
                lines.append(f"{f.title + ':':28} {_text(value) or ''}{mark}")
                continue
            lines.append(f"{f.title}:")
            cols = [c for c in f.columns]
            lines.append("  " + "  ".join(f"{c.title:>12.12}" for c in cols))
            for row in value if isinstance(value, list) else []:
                lines.append(
                    "  " + "  ".join(f"{_text(row.get(c.name)) or '':>12.12}" for c in cols)
                )
        return "\n".join(lines)


def _text(value: object) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class Step:
    """One step of a route: a role and the addresses who may sign it."""

    role: str
    approvers: tuple[str, ...] = field(default_factory=tuple)
