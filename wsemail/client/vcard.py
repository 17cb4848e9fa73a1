"""In charge of vCard files (RFC 2426 / 6350) for personal contacts, read and written by
vobject: a file is read whole before anything is sent, so a file that is not vCard, or a
card with a bad address or an over-long name, refuses the import in one line with nothing
stored.

A card becomes a contact with FN (or N) as its name, its EMAILs (a card without one is
skipped: a contact here is someone to write to), ORG and NOTE; written back the same way,
with the contact's id as the card's UID.
"""

from __future__ import annotations

from dataclasses import dataclass

import vobject

from wsemail.client.contacts import Contact
from wsemail.protocol.errors import RemoteFault, UsageError

MAX_BYTES = 8 << 20  # a vCard file larger than this is refused before parsing


@dataclass(frozen=True)
class Read:
    contacts: list[Contact]
    skipped: int  # cards without an e-mail address


def _name(card: vobject.base.Component) -> str:
    fn = card.contents.get("fn")
    if fn and str(fn[0].value).strip():
        return str(fn[0].value)
    n = card.contents.get("n")
    if n:
        value = n[0].value
        parts = [getattr(value, p, "") for p in ("prefix", "given", "additional", "family")]
        return " ".join(" ".join(p) if isinstance(p, list) else str(p) for p in parts if p)
    return ""


def _text(card: vobject.base.Component, key: str) -> str:
    found = card.contents.get(key)
    if not found:
        return ""
    value = found[0].value
    return "; ".join(str(v) for v in value if v) if isinstance(value, list) else str(value)


def read_vcards(text: str, source: str = "the file") -> Read:
    """The contacts in a vCard text; UsageError (one line) when it is not vCard or a card
    holds something a contact cannot (naming the card)."""
    if len(text) > MAX_BYTES:
        raise UsageError(f"{source} is larger than {MAX_BYTES >> 20} MB")
    try:
        cards = list(vobject.readComponents(text, validate=False))
    except Exception as exc:  # vobject raises ParseError and a few plain ones
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"{source} is not a vCard file: {first}") from exc
    if not cards or any(card.name != "VCARD" for card in cards):
        raise UsageError(f"{source} is not a vCard file (no BEGIN:VCARD … END:VCARD)")
    contacts: list[Contact] = []
    skipped = 0
    for number, card in enumerate(cards, start=1):
        emails = [str(e.value).strip() for e in card.contents.get("email", []) if e.value]
        if not emails:
            skipped += 1
            continue
        name = _name(card)
        contact = Contact(name.strip(), emails, _text(card, "org"), _text(card, "note"))
        try:
            contacts.append(contact.checked())
        except RemoteFault as exc:
            label = name.strip()[:40] or emails[0][:80]
            raise UsageError(f"{source}: card {number} ({label!r}): {exc.reason}") from exc
    return Read(contacts, skipped)


def write_vcards(contacts: list[Contact]) -> str:
    """The contacts as one vCard 3.0 text (CRLF line ends, as RFC 2426 writes them)."""
    out: list[str] = []
    for contact in contacts:
        card = vobject.vCard()
        card.add("fn").value = contact.name or contact.emails[0]
        card.add("n").value = vobject.vcard.Name(given=contact.name or contact.emails[0])
        for address in contact.emails:
            email = card.add("email")
            email.value = address
            email.type_param = "INTERNET"
        if contact.org:
            card.add("org").value = [contact.org]
        if contact.note:
            card.add("note").value = contact.note
        if contact.id:
            card.add("uid").value = contact.id
        out.append(card.serialize())
    return "".join(out)
