"""In charge of the address directory on the user's side (the `directory` plug-in; not
the certificate directory of `wsemail.client.usercerts`): choosing whether one is listed
and under which name, and searching by prefix of a name or an address — one's own domain,
or another domain through one's own server (which asks that domain's server, signed).

    with Client(url, "alice@a.test", password=pw) as client:
        book = AddressDirectory(client)
        book.publish("Alice Example")
        page = book.search("bo", domain="b.test")
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from lxml import etree

from wsemail.client.mail import Client
from wsemail.core.people import display_name
from wsemail.protocol.errors import ServerError
from wsemail.protocol.soap import element, q, text_of

EXTENSION_ID = "directory"


@dataclass(frozen=True)
class Entry:
    address: str
    name: str

    def as_dict(self) -> dict[str, str]:
        return {"address": self.address, "name": self.name}


@dataclass(frozen=True)
class Listing:
    """One's own place in the directory."""

    address: str
    listed: bool
    name: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"address": self.address, "listed": self.listed, "name": self.name}


@dataclass
class DirectoryPage:
    domain: str
    entries: list[Entry] = field(default_factory=list)
    next_cursor: str | None = None
    truncated: bool = False  # more match than the server shows for one query: refine it


class AddressDirectory:
    def __init__(self, client: Client) -> None:
        self.client = client

    def _listing(self, tag: str, name: str | None = None) -> Listing:
        request = etree.Element(q(tag))
        if name is not None:
            element(request, "Name", display_name(name))
        answer = self.client.extension(EXTENSION_ID, request)
        if answer is None:
            raise ServerError("the directory extension answered nothing")
        return Listing(
            text_of(answer, "Address", "") or "",
            text_of(answer, "Listed") == "true",
            text_of(answer, "Name", "") or "",
        )

    def publish(self, name: str = "") -> Listing:
        """Be listed (or change the name shown)."""
        return self._listing("Publish", name)

    def unpublish(self) -> Listing:
        return self._listing("Unpublish")

    def show(self) -> Listing:
        return self._listing("Show")

    def search(
        self,
        query: str,
        *,
        domain: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> DirectoryPage:
        """Listed people of `domain` (default: one's own) whose address or a word of whose
        name starts with `query`."""
        op = etree.Element(q("Directory"))
        element(op, "Query", query)
        if domain:
            element(op, "Domain", domain.strip().lower())
        element(op, "Limit", str(limit))
        if cursor:
            element(op, "Cursor", cursor)
        answer = self.client.call(op, idempotent=True)
        return DirectoryPage(
            answer.get("Domain", ""),
            [
                Entry(text_of(n, "Address", "") or "", text_of(n, "Name", "") or "")
                for n in answer.findall(q("Entry"))
            ],
            text_of(answer, "NextCursor"),
            (text_of(answer, "Truncated") or "") == "true",
        )

    def iter(
        self, query: str, *, domain: str | None = None, page_size: int = 20
    ) -> Iterator[Entry]:
        cursor: str | None = None
        while True:
            page = self.search(query, domain=domain, limit=page_size, cursor=cursor)
            yield from page.entries
            if not page.next_cursor:
                return
            cursor = page.next_cursor
