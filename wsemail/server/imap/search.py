"""SEARCH criteria (RFC 3501 §6.4.4), compiled strictly into a predicate over one message
of the selected folder. Text criteria match case-insensitively within the stored fields
(FROM, TO, CC, SUBJECT, BODY, TEXT); HEADER matches the rendered header."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from wsemail.server.imap import sequence
from wsemail.server.imap.parser import Atom, Refused, astring
from wsemail.server.imap.records import Entry, Row

MAX_CRITERIA = 200
_DATE = re.compile(r"^(\d{1,2})-([A-Za-z]{3})-(\d{4})$")
_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]


@dataclass
class Message:
    """What a predicate looks at: position, flags, stored row, and a way to the bytes."""

    number: int  # sequence number
    entry: Entry
    row: Row | None
    data: Callable[[], bytes]


Predicate = Callable[[Message], bool]


@dataclass
class Needs:
    rows: bool = False
    body: bool = False


def _date(value: object) -> date:
    text = astring(value, "a date")
    found = _DATE.match(text)
    if found is None or found.group(2).upper() not in _MONTHS:
        raise Refused(f"bad date {text[:20]!r} (like 1-Feb-2026)")
    try:
        return date(
            int(found.group(3)), _MONTHS.index(found.group(2).upper()) + 1, int(found.group(1))
        )
    except ValueError as exc:
        raise Refused(f"bad date {text[:20]!r}") from exc


def _message_date(m: Message) -> date:
    assert m.row is not None
    try:
        return datetime.strptime(m.row.date, "%Y-%m-%dT%H:%M:%SZ").date()
    except ValueError:
        return date(1970, 1, 1)


def compile_criteria(
    args: list[object], total: int, uids: Sequence[int]
) -> tuple[Predicate, Needs]:
    """The predicate for `args` (charset already taken off) and what it needs to read."""
    needs = Needs()
    tokens = list(args)
    if not tokens:
        raise Refused("SEARCH needs criteria")
    if len(tokens) > MAX_CRITERIA:
        raise Refused("too many search criteria")
    position = 0

    def take() -> object:
        nonlocal position
        if position >= len(tokens):
            raise Refused("search criteria end too early")
        value = tokens[position]
        position += 1
        return value

    def one(depth: int = 0) -> Predicate:
        if depth > 32:
            raise Refused("search criteria nest too deep")
        value = take()
        if isinstance(value, list):
            inner = compile_list(value, depth + 1)
            return inner
        if not isinstance(value, Atom):
            raise Refused("a search key is an atom")
        key = value.upper()
        flag = _FLAG_KEYS.get(key)
        if flag is not None:
            name, wanted = flag
            return lambda m: getattr(m.entry, name) is wanted
        if key in ("ALL", "OLD"):
            return lambda m: True
        if key in ("NEW", "RECENT"):
            return lambda m: False
        if key == "NOT":
            inner_pred = one(depth + 1)
            return lambda m: not inner_pred(m)
        if key == "OR":
            left, right = one(depth + 1), one(depth + 1)
            return lambda m: left(m) or right(m)
        if key in ("KEYWORD", "UNKEYWORD"):
            astring(take(), "a keyword")
            return (lambda m: False) if key == "KEYWORD" else (lambda m: True)
        if key == "UID":
            ranges = sequence.parse(astring(take(), "a UID set"))
            wanted_uids = {uids[i] for i in sequence.select_uids(ranges, uids)}
            return lambda m: m.entry.uid in wanted_uids
        if key in ("FROM", "TO", "CC", "BCC", "SUBJECT", "BODY", "TEXT"):
            needle = astring(take(), "a search string").casefold()
            needs.rows = True
            needs.body = needs.body or key in ("BODY", "TEXT")
            return _text(key, needle)
        if key == "HEADER":
            name = astring(take(), "a header name").lower()
            needle = astring(take(), "a search string").casefold()
            needs.rows = needs.body = True
            return _header(name, needle)
        if key in ("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"):
            day = _date(take())
            needs.rows = True
            test = key.removeprefix("SENT")
            if test == "BEFORE":
                return lambda m: _message_date(m) < day
            if test == "ON":
                return lambda m: _message_date(m) == day
            return lambda m: _message_date(m) >= day
        if key in ("LARGER", "SMALLER"):
            raw = astring(take(), "a size")
            if not raw.isdigit() or len(raw) > 10:
                raise Refused("LARGER and SMALLER take a number")
            size = int(raw)
            needs.rows = needs.body = True
            if key == "LARGER":
                return lambda m: len(m.data()) > size
            return lambda m: len(m.data()) < size
        try:
            ranges = sequence.parse(str(value))
        except Refused as exc:
            raise Refused(f"unknown search key {str(value)[:30]!r}") from exc
        numbers = set(sequence.select_seqnums(ranges, total))
        return lambda m: m.number in numbers

    def compile_list(values: list[object], depth: int) -> Predicate:
        nonlocal tokens, position
        saved = tokens, position
        tokens, position = values, 0
        if not values:
            raise Refused("empty search list")
        parts = []
        while position < len(tokens):
            parts.append(one(depth))
        tokens, position = saved
        return lambda m: all(p(m) for p in parts)

    predicates = []
    while position < len(tokens):
        predicates.append(one())
    return (lambda m: all(p(m) for p in predicates)), needs


_FLAG_KEYS = {
    "ANSWERED": ("answered", True),
    "UNANSWERED": ("answered", False),
    "DELETED": ("deleted", True),
    "UNDELETED": ("deleted", False),
    "DRAFT": ("draft", True),
    "UNDRAFT": ("draft", False),
    "FLAGGED": ("flagged", True),
    "UNFLAGGED": ("flagged", False),
    "SEEN": ("seen", True),
    "UNSEEN": ("seen", False),
}


def _text(key: str, needle: str) -> Predicate:
    def test(m: Message) -> bool:
        row = m.row
        assert row is not None
        if key == "FROM":
            return needle in row.sender.casefold()
        if key == "TO":
            return needle in " ".join(json.loads(row.to_json)).casefold()
        if key == "CC":
            return needle in " ".join(json.loads(row.cc_json)).casefold()
        if key == "BCC":
            return False
        if key == "SUBJECT":
            return needle in row.subject.casefold()
        if key == "BODY":
            return needle in row.body.casefold()
        fields = [row.sender, row.to_json, row.cc_json, row.subject, row.body]
        return any(needle in f.casefold() for f in fields)

    return test


def _header(name: str, needle: str) -> Predicate:
    def test(m: Message) -> bool:
        data = m.data()
        end = data.find(b"\r\n\r\n")
        head = data[: end if end >= 0 else len(data)].decode("utf-8", "replace")
        for line in head.replace("\r\n ", " ").replace("\r\n\t", " ").split("\r\n"):
            field_name, _, value = line.partition(":")
            if field_name.strip().lower() == name and needle in value.casefold():
                return True
        return False

    return test
