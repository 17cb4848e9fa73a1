"""In charge of the personal-contacts plug-in, one composite (DESIGN.md §5):

- extension `contacts` (password MAC, via `Extension`): Add, Edit, Remove, Get, List
  (paged, by prefix of a name word or an address), Import (many at once: all stored or,
  on the first bad one, none), Export, Seen (addresses sent to that are no contact yet:
  what the client offers for adding), Dismiss (stop offering one);
- sending processor: each submitted message's To and Cc count as addresses sent to, in
  the transaction that accepts the message (a refused message counts for nothing).

Each request reads and writes the caller's own rows only. Options: `max_contacts` per
user (Add and Import beyond it are refused), `max_seen` addresses sent to kept per user.
"""

from __future__ import annotations

import json
from typing import Any

from lxml import etree

from wsemail.core.people import NOTE_MAX, ORG_MAX, check_email, check_emails, check_text
from wsemail.core.people import display_name as check_name
from wsemail.protocol.errors import NotFound, QuotaExceeded, RequestInvalid
from wsemail.protocol.message import Message
from wsemail.protocol.soap import element, int_of, q, text_of, texts_of
from wsemail.server.contacts import records
from wsemail.server.contacts.records import Contact
from wsemail.server.pipeline import Environment, ExtensionProcessor, SendingProcessor, dispatch

EXTENSION_ID = "contacts"
MAX_PAGE = 500


def contact_xml(parent: etree._Element, contact: Contact) -> etree._Element:
    node = element(parent, "Contact")
    node.set("Id", contact.id)
    element(node, "Name", contact.name)
    for address in contact.emails:
        element(node, "Email", address)
    if contact.org:
        element(node, "Org", contact.org)
    if contact.note:
        element(node, "Note", contact.note)
    return node


def read_contact(node: etree._Element, old: Contact | None = None) -> Contact:
    """A contact as sent: every field checked; with `old`, absent fields keep its values."""
    base = old or Contact("", "")
    name = text_of(node, "Name")
    emails = texts_of(node, "Email")
    org, note = text_of(node, "Org"), text_of(node, "Note")
    return Contact(
        base.id,
        check_name(name) if name is not None else base.name,
        check_emails(emails) if emails or old is None else list(base.emails),
        check_text(org, "an organisation", ORG_MAX) if org is not None else base.org,
        check_text(note, "a note", NOTE_MAX, lines=True) if note is not None else base.note,
    )


class PersonalContacts(SendingProcessor, ExtensionProcessor):
    """Personal contacts on the server, and the addresses each user sent mail to."""

    name = "contacts"
    extension_id = EXTENSION_ID

    def __init__(self, max_contacts: int = 5000, max_seen: int = 1000) -> None:
        self.max_contacts = int(max_contacts)
        self.max_seen = int(max_seen)
        if self.max_contacts < 1 or self.max_seen < 1:
            raise ValueError("max_contacts and max_seen must be at least 1")

    def attach(self, server: Any) -> None:
        server.store.ensure_schema(self.name, records.MIGRATIONS)

    # sending processor ----------------------------------------------------------------------
    def process_outgoing(self, message: Message, env: Environment) -> None:
        addresses = [a for a in dict.fromkeys([*message.to, *message.cc]) if a != env.principal]
        if addresses:
            records.record_seen(env.tx, env.principal, addresses, self.max_seen)

    # extension ------------------------------------------------------------------------------
    def handle(self, payload: etree._Element, env: Environment) -> etree._Element | None:
        handlers = {
            "Add": self._add,
            "Edit": self._edit,
            "Remove": self._remove,
            "Get": self._get,
            "List": self._list,
            "Import": self._import,
            "Export": self._export,
            "Seen": self._seen,
            "Dismiss": self._dismiss,
        }
        return dispatch(payload, handlers, env, EXTENSION_ID)

    def _node(self, op: etree._Element) -> etree._Element:
        node = op.find(q("Contact"))
        if node is None:
            raise RequestInvalid(f"{etree.QName(op).localname} needs a Contact")
        return node

    def _target(self, op: etree._Element, env: Environment) -> Contact:
        """The caller's contact named by Id or by one of its addresses."""
        contact_id = (text_of(op, "Id") or "").strip()
        address = (text_of(op, "Address") or "").strip()
        found = None
        if contact_id and len(contact_id) <= 64:
            found = records.get(env.tx, env.principal, contact_id)
        elif address:
            found = records.by_address(env.tx, env.principal, check_email(address))
        if found is None:
            raise NotFound("no such contact of yours")
        return found

    def _store(self, env: Environment, contact: Contact) -> tuple[str, bool]:
        """Add `contact`, or update the one contact that already holds its addresses;
        (id, added)."""
        holders = records.owners_of(env.tx, env.principal, contact.emails)
        if contact.id:
            holders.discard(contact.id)
            if holders:
                raise RequestInvalid("an address of this contact belongs to another contact")
            records.update(env.tx, env.principal, contact)
            return contact.id, False
        if len(holders) > 1:
            raise RequestInvalid(
                f"the addresses of {contact.name or contact.emails[0]!r} belong to "
                "different contacts"
            )
        if holders:
            contact.id = holders.pop()
            records.update(env.tx, env.principal, contact)
            return contact.id, False
        if records.count(env.tx, env.principal) >= self.max_contacts:
            raise QuotaExceeded(f"at most {self.max_contacts} contacts per user")
        return records.add(env.tx, env.principal, contact), True

    def _add(self, op: etree._Element, env: Environment) -> etree._Element:
        contact = read_contact(self._node(op))
        taken = records.owners_of(env.tx, env.principal, contact.emails)
        if taken:
            raise RequestInvalid(
                f"{contact.emails[0]} is already in your contacts (edit that one instead)"
            )
        contact.id, _ = self._store(env, contact)
        result = etree.Element(q("Contacts"))
        contact_xml(result, contact)
        return result

    def _edit(self, op: etree._Element, env: Environment) -> etree._Element:
        old = self._target(op, env)
        contact = read_contact(self._node(op), old)
        self._store(env, contact)
        result = etree.Element(q("Contacts"))
        contact_xml(result, contact)
        return result

    def _remove(self, op: etree._Element, env: Environment) -> etree._Element:
        contact = self._target(op, env)
        records.remove(env.tx, env.principal, contact.id)
        result = etree.Element(q("Removed"))
        element(result, "Id", contact.id)
        return result

    def _get(self, op: etree._Element, env: Environment) -> etree._Element:
        result = etree.Element(q("Contacts"))
        contact_xml(result, self._target(op, env))
        return result

    def _list(self, op: etree._Element, env: Environment) -> etree._Element:
        prefix = records.fold(check_text(text_of(op, "Prefix") or "", "a prefix", 320))
        limit = int_of(op, "Limit", 1, MAX_PAGE, 100)
        cursor = (text_of(op, "Cursor") or "").strip()
        after = None
        if cursor:
            try:
                key, last = json.loads(cursor)
                after = (str(key), str(last))
            except (ValueError, TypeError) as exc:
                raise RequestInvalid("Cursor is not one this server gave") from exc
        rows = records.listing(env.tx, env.principal, prefix, after, limit + 1)
        result = etree.Element(q("Contacts"))
        for contact in rows[:limit]:
            contact_xml(result, contact)
        if len(rows) > limit:
            last_one = rows[limit - 1]
            element(result, "NextCursor", json.dumps([records.fold(last_one.name), last_one.id]))
        return result

    def _import(self, op: etree._Element, env: Environment) -> etree._Element:
        """All or nothing: the first bad contact refuses the whole request (the unit of
        work rolls back whatever was stored before it)."""
        nodes = op.findall(q("Contact"))
        if not nodes:
            raise RequestInvalid("Import needs at least one Contact")
        if len(nodes) > self.max_contacts:
            raise QuotaExceeded(f"at most {self.max_contacts} contacts per user")
        added = updated = 0
        for number, node in enumerate(nodes, start=1):
            try:
                contact = read_contact(node)
                _, new = self._store(env, contact)
            except RequestInvalid as exc:
                raise type(exc)(f"contact {number}: {exc.reason}") from exc
            added, updated = added + new, updated + (not new)
        result = etree.Element(q("Imported"))
        element(result, "Added", str(added))
        element(result, "Updated", str(updated))
        return result

    def _export(self, op: etree._Element, env: Environment) -> etree._Element:
        result = etree.Element(q("Contacts"))
        for contact in records.listing(env.tx, env.principal, "", None, self.max_contacts):
            contact_xml(result, contact)
        return result

    def _seen(self, op: etree._Element, env: Environment) -> etree._Element:
        prefix = records.fold(check_text(text_of(op, "Prefix") or "", "a prefix", 320))
        limit = int_of(op, "Limit", 1, MAX_PAGE, 50)
        result = etree.Element(q("SeenAddresses"))
        for row in records.seen(env.tx, env.principal, prefix, limit):
            node = element(result, "Seen", row.address)
            node.set("Times", str(row.times))
            node.set("Last", f"{row.last:.0f}")
        return result

    def _dismiss(self, op: etree._Element, env: Environment) -> etree._Element:
        address = check_email(text_of(op, "Address") or "")
        if not records.dismiss(env.tx, env.principal, address):
            raise NotFound(f"{address} is not among the addresses you sent to")
        result = etree.Element(q("Dismissed"))
        element(result, "Address", address)
        return result
