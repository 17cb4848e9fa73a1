"""In charge of the user's personal contacts kept on their server (the `contacts`
plug-in): add, edit, remove, list, import and export in bulk, and the addresses the user
sent mail to that are no contact yet (offered for adding).

    with Client(url, "alice@a.test", password=pw) as client:
        book = Contacts(client)
        book.add(NewContact("Bob Example", ["bob@b.test"]))
        for contact in book.iter(prefix="bo"):
            print(contact.name, contact.emails)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from lxml import etree

from wsemail.client.mail import Client
from wsemail.core.people import NOTE_MAX, ORG_MAX, check_emails, check_text, display_name
from wsemail.protocol.errors import ServerError
from wsemail.protocol.soap import element, q, text_of, texts_of

EXTENSION_ID = "contacts"


@dataclass
class Contact:
    """A contact as the server keeps it (`id` is empty until stored)."""

    name: str
    emails: list[str]
    org: str = ""
    note: str = ""
    id: str = ""

    def checked(self) -> Contact:
        """The same contact with every field checked as the server will (RequestInvalid)."""
        return Contact(
            display_name(self.name),
            check_emails(self.emails),
            check_text(self.org, "an organisation", ORG_MAX),
            check_text(self.note, "a note", NOTE_MAX, lines=True),
            self.id,
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "emails": list(self.emails),
            "org": self.org,
            "note": self.note,
        }

    def to_xml(self, parent: etree._Element) -> etree._Element:
        node = element(parent, "Contact")
        element(node, "Name", self.name)
        for address in self.emails:
            element(node, "Email", address)
        element(node, "Org", self.org)
        element(node, "Note", self.note)
        return node

    @classmethod
    def from_xml(cls, node: etree._Element) -> Contact:
        return cls(
            text_of(node, "Name", "") or "",
            texts_of(node, "Email"),
            text_of(node, "Org", "") or "",
            text_of(node, "Note", "") or "",
            node.get("Id", ""),
        )


@dataclass(frozen=True)
class SeenAddress:
    """An address the user sent mail to: how many messages, when last (Unix time)."""

    address: str
    times: int
    last: float

    def as_dict(self) -> dict[str, object]:
        return {"address": self.address, "times": self.times, "last": self.last}


@dataclass(frozen=True)
class Imported:
    added: int
    updated: int


@dataclass
class ContactPage:
    contacts: list[Contact] = field(default_factory=list)
    next_cursor: str | None = None


class Contacts:
    """The `contacts` extension of the user's own server."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def _call(self, request: etree._Element) -> etree._Element:
        answer = self.client.extension(EXTENSION_ID, request)
        if answer is None:
            raise ServerError("the contacts extension answered nothing")
        return answer

    def _one(self, request: etree._Element) -> Contact:
        node = self._call(request).find(q("Contact"))
        if node is None:
            raise ServerError("the contacts extension answered no contact")
        return Contact.from_xml(node)

    @staticmethod
    def _named(tag: str, ref: str) -> etree._Element:
        """A request naming a contact by id, or by an address when `ref` has an @."""
        request = etree.Element(q(tag))
        element(request, "Address" if "@" in ref else "Id", ref)
        return request

    def add(self, contact: Contact) -> Contact:
        request = etree.Element(q("Add"))
        contact.checked().to_xml(request)
        return self._one(request)

    def edit(
        self,
        ref: str,
        *,
        name: str | None = None,
        emails: list[str] | None = None,
        org: str | None = None,
        note: str | None = None,
    ) -> Contact:
        """Change the fields given of the contact with id (or address) `ref`."""
        request = self._named("Edit", ref)
        node = element(request, "Contact")
        if name is not None:
            element(node, "Name", display_name(name))
        for address in check_emails(emails) if emails is not None else []:
            element(node, "Email", address)
        if org is not None:
            element(node, "Org", check_text(org, "an organisation", ORG_MAX))
        if note is not None:
            element(node, "Note", check_text(note, "a note", NOTE_MAX, lines=True))
        return self._one(request)

    def remove(self, ref: str) -> str:
        return text_of(self._call(self._named("Remove", ref)), "Id", "") or ""

    def get(self, ref: str) -> Contact:
        return self._one(self._named("Get", ref))

    def page(self, prefix: str = "", *, limit: int = 100, cursor: str | None = None) -> ContactPage:
        request = etree.Element(q("List"))
        element(request, "Prefix", prefix)
        element(request, "Limit", str(limit))
        if cursor:
            element(request, "Cursor", cursor)
        answer = self._call(request)
        return ContactPage(
            [Contact.from_xml(n) for n in answer.findall(q("Contact"))],
            text_of(answer, "NextCursor"),
        )

    def iter(self, prefix: str = "", *, page_size: int = 200) -> Iterator[Contact]:
        cursor: str | None = None
        while True:
            page = self.page(prefix, limit=page_size, cursor=cursor)
            yield from page.contacts
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def import_contacts(self, contacts: list[Contact]) -> Imported:
        """Store `contacts` (a contact holding an address already known updates that one)
        in one request: all stored or none. Every contact is checked here first, so a bad
        one sends nothing."""
        checked = [c.checked() for c in contacts]
        request = etree.Element(q("Import"))
        for contact in checked:
            contact.to_xml(request)
        answer = self._call(request)
        return Imported(
            int(text_of(answer, "Added", "0") or 0), int(text_of(answer, "Updated", "0") or 0)
        )

    def export(self) -> list[Contact]:
        answer = self._call(etree.Element(q("Export")))
        return [Contact.from_xml(n) for n in answer.findall(q("Contact"))]

    def seen(self, prefix: str = "", *, limit: int = 50) -> list[SeenAddress]:
        """Addresses sent to that are no contact yet, most recent first."""
        request = etree.Element(q("Seen"))
        element(request, "Prefix", prefix)
        element(request, "Limit", str(limit))
        return [
            SeenAddress(n.text or "", int(n.get("Times", "0") or 0), float(n.get("Last", "0") or 0))
            for n in self._call(request).findall(q("Seen"))
        ]

    def dismiss(self, address: str) -> None:
        request = etree.Element(q("Dismiss"))
        element(request, "Address", address)
        self._call(request)
