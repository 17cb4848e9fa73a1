"""The search language, parsed strictly (a mistake is a RequestInvalid naming it, never a
guess):

    budget "quarterly numbers"        words and phrases in subject, body, from or to
    from:alice  to:b.test  subject:"weekly report"
    has:attachment  is:unread  is:read  is:flagged  is:answered  in:Archive
    before:2026-01-31  after:2026-01-01   (dates of the message, UTC; before is exclusive,
                                          after inclusive)

Terms are ANDed. Words become quoted FTS5 phrases (the user's text never reaches FTS5 as
syntax); on PostgreSQL the same terms (`Query.texts`) are bound as parameters, each a
phraseto_tsquery or an address match (mailbox/records.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

from wsemail.protocol.errors import RequestInvalid

MAX_QUERY_BYTES = 1024
MAX_TERMS = 32
_OPERATOR = re.compile(r"([A-Za-z]+):(.*)", re.DOTALL)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TEXT_COLUMNS = {"from": "sender", "to": "recipients", "subject": "subject"}
_ALL_TEXT = ("subject", "body", "sender", "recipients")  # not `mailbox`, the owner token
_OPERATORS = ("from", "to", "subject", "has", "is", "in", "before", "after")
_IS = {
    "unread": ("seen", False),
    "read": ("seen", True),
    "flagged": ("flagged", True),
    "starred": ("flagged", True),
    "answered": ("answered", True),
}


@dataclass
class Query:
    """A parsed query: FTS5 terms (ANDed) and the filters on the stored columns."""

    terms: list[str] = field(default_factory=list)
    # the same terms as (column, text): column None for every text column, else "subject",
    # "sender" or "recipients" (PostgreSQL binds the text as a parameter)
    texts: list[tuple[str | None, str]] = field(default_factory=list)
    flags: dict[str, bool] = field(default_factory=dict)  # seen / flagged / answered
    has_attachment: bool = False
    folder: str | None = None  # as typed; resolved against the user's folders
    before: str | None = None  # YYYY-MM-DD, exclusive
    after: str | None = None  # YYYY-MM-DD, inclusive

    @property
    def match(self) -> str | None:
        """The FTS5 MATCH expression, or None when only filters were given."""
        return " AND ".join(self.terms) or None


def _phrase(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _words(text: str) -> bool:
    return any(c.isalnum() for c in text)


def _tokens(raw: str) -> list[tuple[str, str | None]]:
    """(head, quoted value) pairs: `word`, `op:value`, `"a phrase"`, `op:"a phrase"`."""
    found: list[tuple[str, str | None]] = []
    i, n = 0, len(raw)
    while i < n:
        if raw[i].isspace():
            i += 1
            continue
        j = i
        while j < n and not raw[j].isspace() and raw[j] != '"':
            j += 1
        head, quoted = raw[i:j], None
        if j < n and raw[j] == '"':
            end = raw.find('"', j + 1)
            if end < 0:
                raise RequestInvalid("unbalanced quotes in the search query")
            if end + 1 < n and not raw[end + 1].isspace():
                raise RequestInvalid("a quoted phrase must be followed by a space")
            if head and not head.endswith(":"):
                raise RequestInvalid(f"a quote inside {head!r}: quote whole phrases")
            quoted, j = raw[j + 1 : end], end + 1
        found.append((head, quoted))
        i = j
    return found


def parse(raw: str) -> Query:
    if len(raw.encode("utf-8")) > MAX_QUERY_BYTES:
        raise RequestInvalid(f"a search query is at most {MAX_QUERY_BYTES} bytes")
    if any(ord(c) < 32 and not c.isspace() or ord(c) == 127 for c in raw):
        raise RequestInvalid("a search query must not contain control characters")
    tokens = _tokens(raw)
    if not tokens:
        raise RequestInvalid("the search query is empty")
    if len(tokens) > MAX_TERMS:
        raise RequestInvalid(f"a search query has at most {MAX_TERMS} terms")
    query = Query()
    for head, quoted in tokens:
        operator = _OPERATOR.fullmatch(head)
        if operator is None:  # a word, or a phrase
            text = quoted if quoted is not None else head
            if _words(text):
                query.terms.append(f"{{{' '.join(_ALL_TEXT)}}} : {_phrase(text)}")
                query.texts.append((None, text))
            continue
        name, value = operator.group(1).lower(), operator.group(2)
        if quoted is not None:
            value = quoted
        _apply(query, name, value)
    if not (query.terms or query.flags or query.has_attachment or query.folder):
        if not (query.before or query.after):
            raise RequestInvalid("the search query has nothing to search for")
    return query


def _apply(query: Query, name: str, value: str) -> None:
    if name not in _OPERATORS:
        raise RequestInvalid(f"unknown search operator {name}: (known: {' '.join(_OPERATORS)})")
    if not value.strip():
        raise RequestInvalid(f"{name}: needs a value")
    if name in _TEXT_COLUMNS:
        if not _words(value):
            raise RequestInvalid(f"{name}: needs a word")
        query.terms.append(f"{_TEXT_COLUMNS[name]} : {_phrase(value)}")
        query.texts.append((_TEXT_COLUMNS[name], value))
    elif name == "has":
        if value.lower() not in ("attachment", "attachments"):
            raise RequestInvalid("has: knows only has:attachment")
        query.has_attachment = True
    elif name == "is":
        if value.lower() not in _IS:
            raise RequestInvalid(f"is: is one of {', '.join(_IS)}")
        column, wanted = _IS[value.lower()]
        if query.flags.get(column, wanted) != wanted:
            raise RequestInvalid(f"is:{value} contradicts another is: term")
        query.flags[column] = wanted
    elif name == "in":
        if query.folder is not None:
            raise RequestInvalid("in: may be given once")
        query.folder = value
    else:  # before, after
        if not _DATE.fullmatch(value):
            raise RequestInvalid(f"{name}: takes a date as YYYY-MM-DD")
        try:
            date.fromisoformat(value)
        except ValueError as exc:
            raise RequestInvalid(f"{name}:{value} is not a date") from exc
        setattr(query, name, value)
