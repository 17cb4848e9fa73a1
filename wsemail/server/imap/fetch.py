"""FETCH items (RFC 3501 §6.4.5): parsed strictly from the command's arguments into `Item`s;
the session answers them with `render`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from wsemail.server.imap.parser import Atom, Refused

MACROS = {
    "ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
    "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
    "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"],
}
SIMPLE = {
    "UID",
    "FLAGS",
    "INTERNALDATE",
    "RFC822.SIZE",
    "ENVELOPE",
    "BODYSTRUCTURE",
    "BODY",
    "RFC822",
    "RFC822.HEADER",
    "RFC822.TEXT",
}
MAX_ITEMS = 64
_BODY = re.compile(r"^(BODY|BODY\.PEEK)\[([^\]]*)\](?:<(\d{1,10})\.(\d{1,10})>)?$", re.IGNORECASE)
_FIELDS = re.compile(r"^([0-9.]*)(HEADER\.FIELDS(?:\.NOT)?) \(([^()]*)\)$", re.IGNORECASE)
_PART = re.compile(r"^[1-9]\d{0,3}(?:\.[1-9]\d{0,3}){0,7}$")
_WHAT = ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME")


def split_section(spec: str) -> tuple[str, str | None] | None:
    """A body section (upper-cased, no field list) as (part path, what), or None if it is
    not one: "" → ("", None); "1.2" → ("1.2", None); "2.MIME" → ("2", "MIME")."""
    if spec in _WHAT:
        return ("", spec) if spec != "MIME" else None
    for what in sorted(_WHAT, key=len, reverse=True):
        if spec.endswith("." + what):
            path = spec[: -len(what) - 1]
            return (path, what) if _PART.match(path) else None
    if spec == "" or _PART.match(spec):
        return spec, None
    return None


_FIELD_NAME = re.compile(r"^[!-9;-~]{1,128}$")


@dataclass
class Item:
    kind: str  # a SIMPLE name, or "SECTION"
    section: str = ""  # upper-cased, without the field list
    fields: list[str] = field(default_factory=list)
    partial: tuple[int, int] | None = None
    peek: bool = False

    @property
    def sets_seen(self) -> bool:
        return (self.kind == "SECTION" and not self.peek) or self.kind in ("RFC822", "RFC822.TEXT")

    def label(self) -> bytes:
        if self.kind != "SECTION":
            return self.kind.encode()
        inner = self.section
        if self.fields:
            inner += " (" + " ".join(self.fields) + ")"
        origin = f"<{self.partial[0]}>" if self.partial else ""
        return f"BODY[{inner}]{origin}".encode()


def parse_items(value: object) -> list[Item]:
    names: list[object]
    if isinstance(value, list):
        names = value
    elif isinstance(value, Atom) and value.upper() in MACROS:
        names = [Atom(n) for n in MACROS[value.upper()]]
    else:
        names = [value]
    if not names or len(names) > MAX_ITEMS:
        raise Refused("FETCH needs 1 to 64 items")
    items = []
    for name in names:
        if not isinstance(name, Atom):
            raise Refused("a FETCH item is an atom")
        items.append(_item(str(name)))
    return items


def _item(name: str) -> Item:
    upper = name.upper()
    if upper in SIMPLE:
        return Item(upper)
    found = _BODY.match(name)
    if found is None:
        raise Refused(f"unknown FETCH item {name[:40]!r}")
    peek = found.group(1).upper() == "BODY.PEEK"
    spec = found.group(2).upper()
    names: list[str] = []
    fields = _FIELDS.match(spec)
    if fields is not None:
        names = fields.group(3).split()
        if not names or any(_FIELD_NAME.match(n) is None for n in names):
            raise Refused("HEADER.FIELDS needs a list of header names")
        spec = fields.group(1) + fields.group(2)
    elif "(" in spec or " " in spec:
        raise Refused(f"bad body section {spec[:40]!r}")
    if split_section(spec) is None:
        raise Refused(f"bad body section {spec[:40]!r}")
    partial = None
    if found.group(3) is not None:
        length = int(found.group(4))
        if length == 0:
            raise Refused("a partial FETCH needs a length of at least 1")
        partial = (int(found.group(3)), length)
    return Item("SECTION", spec, names, partial, peek)
