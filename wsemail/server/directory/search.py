"""In charge of answering one directory search, the same for this server's users and for
a peer server asking on behalf of its user: the query's rules (at least `min_query`
characters unless the operator allows dumps, at most `max_query`), pages of at most
`max_page` entries, at most `max_results` entries per query over all its pages (past that
the answer says Truncated: refine the query), and the paging cursor.

The cursor is the position after the last entry served, the query it belongs to and how
many entries were served, authenticated with a key derived from the server secret: a
client cannot edit it to page past `max_results` or reuse it for another query.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from dataclasses import dataclass

from lxml import etree

from wsemail.protocol.errors import RequestInvalid
from wsemail.protocol.soap import element, int_of, q, text_of
from wsemail.server.directory import records
from wsemail.server.store import Tx

CURSOR_MAX = 2048


@dataclass(frozen=True)
class Policy:
    min_query: int = 2
    max_query: int = 100
    page: int = 20
    max_page: int = 50
    max_results: int = 100
    allow_dump: bool = False


@dataclass(frozen=True)
class Request:
    """A search as asked: the query text, the page size and the cursor (unchecked)."""

    query: str
    limit: int
    cursor: str

    @classmethod
    def from_xml(cls, op: etree._Element, policy: Policy) -> Request:
        query = text_of(op, "Query") or ""
        if len(query) > policy.max_query * 4:  # before folding: bounded work
            raise RequestInvalid(f"a directory query has at most {policy.max_query} characters")
        cursor = (text_of(op, "Cursor") or "").strip()
        if len(cursor) > CURSOR_MAX:
            raise RequestInvalid("Cursor is not one this server gave")
        limit = int_of(op, "Limit", 1, policy.max_page, policy.page)
        return cls(query, limit, cursor)

    def to_xml(self, op: etree._Element) -> None:
        element(op, "Query", self.query)
        element(op, "Limit", str(self.limit))
        if self.cursor:
            element(op, "Cursor", self.cursor)


@dataclass(frozen=True)
class Answer:
    entries: list[records.Entry]
    next_cursor: str | None
    truncated: bool

    def to_xml(self, domain: str) -> etree._Element:
        result = etree.Element(q("DirectoryResponse"))
        result.set("Domain", domain)
        for entry in self.entries:
            node = element(result, "Entry")
            element(node, "Address", entry.address)
            element(node, "Name", entry.name)
        if self.next_cursor:
            element(result, "NextCursor", self.next_cursor)
        if self.truncated:
            element(result, "Truncated", "true")
        return result


class Cursors:
    """Signs and checks paging cursors with a key of their own."""

    def __init__(self, secret: bytes) -> None:
        self._key = hmac.new(secret, b"wsemail directory cursor", "sha256").digest()

    def _mac(self, data: bytes) -> str:
        digest = hmac.new(self._key, data, "sha256").digest()[:16]
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def make(self, query: str, after: tuple[str, str], served: int) -> str:
        data = json.dumps([query, after[0], after[1], served], separators=(",", ":")).encode()
        body = base64.urlsafe_b64encode(data).decode().rstrip("=")
        return f"{body}.{self._mac(data)}"

    def read(self, cursor: str, query: str) -> tuple[tuple[str, str], int]:
        body, _, mac = cursor.partition(".")
        try:
            data = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError) as exc:
            raise RequestInvalid("Cursor is not one this server gave") from exc
        if not hmac.compare_digest(self._mac(data), mac):
            raise RequestInvalid("Cursor is not one this server gave")
        asked, name_key, address, served = json.loads(data)
        if asked != query:
            raise RequestInvalid("Cursor belongs to another query")
        return (str(name_key), str(address)), int(served)


def folded_query(raw: str, policy: Policy) -> str:
    query = records.fold(raw)
    if len(query) > policy.max_query:
        raise RequestInvalid(f"a directory query has at most {policy.max_query} characters")
    if len(query) < policy.min_query and not policy.allow_dump:
        raise RequestInvalid(
            f"a directory search needs at least {policy.min_query} characters "
            "(this server does not list everyone)"
        )
    return query


def answer(tx: Tx, request: Request, policy: Policy, cursors: Cursors) -> Answer:
    query = folded_query(request.query, policy)
    after, served = None, 0
    if request.cursor:
        after, served = cursors.read(request.cursor, query)
    want = request.limit
    if not policy.allow_dump:
        want = max(0, min(want, policy.max_results - served))
    if want == 0:
        return Answer([], None, True)
    rows = records.search(tx, query, after, want + 1)
    entries = rows[:want]
    more = len(rows) > want
    if not more:
        return Answer(entries, None, False)
    if not policy.allow_dump and served + len(entries) >= policy.max_results:
        return Answer(entries, None, True)
    last = entries[-1]
    position = (records.fold(last.name), last.address)
    return Answer(entries, cursors.make(query, position, served + len(entries)), False)


def read_answer(op: etree._Element) -> Answer:
    """A DirectoryResponse as received (a peer's): entries, cursor, truncated."""
    entries = [
        records.Entry(text_of(node, "Address", "") or "", text_of(node, "Name", "") or "")
        for node in op.findall(q("Entry"))
    ]
    truncated = (text_of(op, "Truncated") or "").strip() == "true"
    return Answer(entries, text_of(op, "NextCursor") or None, truncated)
