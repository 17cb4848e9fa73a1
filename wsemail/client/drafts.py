"""In charge of drafts kept on one's own server (the Drafts folder): save, replace, list,
fetch, delete and send them, and the plain text form `wsemail draft edit` opens in an
editor:

    To: bob@b.test, carol@c.test
    Cc:
    Bcc:
    Subject: the subject

    the body, after the first empty line

    with Client(url, "alice@a.test", password="…") as client:
        drafts = Drafts(client)
        saved = drafts.save(SavedDraft(to=["bob@b.test"], subject="hi", body="…"))
        drafts.send(saved.id)

A first save carries a MessageId made here, so a save retried after a lost answer
replaces the draft it made instead of making a second one; a send retried after a lost
answer is recognised by the server and sent once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace

from lxml import etree

from wsemail.client.mail import Client, SendResult
from wsemail.protocol.drafts import SavedDraft
from wsemail.protocol.errors import RemoteFault, ServerError, TransportError, UsageError
from wsemail.protocol.message import domain_of, new_message_id, normalize_address
from wsemail.protocol.soap import element, q, text_of

HEADERS = ("To", "Cc", "Bcc", "Subject")
_SEPARATORS = re.compile(r"[,;\s]+")


class Drafts:
    """The drafts of `client`'s user."""

    def __init__(self, client: Client, *, retries: int = 2) -> None:
        self.client = client
        self.retries = retries

    def _call(self, op: etree._Element) -> etree._Element:
        """An idempotent call, asked again on a transport failure."""
        for attempt in range(self.retries + 1):
            try:
                return self.client.call(op, idempotent=True)
            except TransportError:
                if attempt == self.retries:
                    raise
        raise AssertionError("unreachable")

    def save(self, draft: SavedDraft, *, draft_id: str | None = None) -> SavedDraft:
        """Save a new draft, or replace the draft `draft_id`; the draft as saved (with its
        id, MessageId and time)."""
        if not draft_id and not draft.message_id:
            draft = replace(draft, message_id=new_message_id(domain_of(self.client.username)))
        op = etree.Element(q("SaveDraft"))
        if draft_id:
            element(op, "Id", draft_id)
        replace(draft, id="", saved="", size=0).to_xml(op)
        answer = self._call(op)
        return replace(
            draft,
            id=text_of(answer, "Id", "") or "",
            message_id=text_of(answer, "MessageId") or draft.message_id,
            saved=text_of(answer, "Saved", "") or "",
            size=len(draft.body.encode()) + len(draft.subject.encode()),
        )

    def get(self, draft_id: str) -> SavedDraft:
        op = etree.Element(q("GetDraft"))
        element(op, "Id", draft_id)
        node = self._call(op).find(q("Draft"))
        if node is None:
            raise ServerError("GetDraftResponse without a Draft")
        return SavedDraft.from_xml(node)

    def list(self, *, page_size: int = 100) -> Iterator[SavedDraft]:
        """Every draft in Drafts (without bodies), the most recently made first."""
        cursor: str | None = None
        while True:
            op = etree.Element(q("ListDrafts"))
            element(op, "Limit", str(page_size))
            if cursor:
                element(op, "Cursor", cursor)
            answer = self._call(op)
            for node in answer.findall(q("Draft")):
                yield SavedDraft.from_xml(node)
            cursor = text_of(answer, "NextCursor")
            if not cursor:
                return

    def delete(self, draft_id: str) -> None:
        """Delete a draft for good."""
        op = etree.Element(q("DeleteDraft"))
        element(op, "Id", draft_id)
        self.client.call(op)

    def send(self, draft_id: str) -> SendResult:
        """Send a draft: it leaves Drafts and its sent copy (in sent) keeps its id."""
        op = etree.Element(q("SendDraft"))
        element(op, "Id", draft_id)
        answer = self._call(op)
        return SendResult(text_of(answer, "Id", "") or "", text_of(answer, "MessageId", "") or "")


# the text form ---------------------------------------------------------------------------
def to_text(draft: SavedDraft) -> str:
    """A draft as header lines, an empty line and the body."""
    lines = [
        f"To: {', '.join(draft.to)}",
        f"Cc: {', '.join(draft.cc)}",
        f"Bcc: {', '.join(draft.bcc)}",
        f"Subject: {draft.subject}",
    ]
    return "\n".join(lines) + "\n\n" + draft.body


def addresses(text: str) -> list[str]:
    """ "a@x, b@y; c@z" → plain addresses, each once; UsageError naming a bad one."""
    try:
        found = [normalize_address(part) for part in _SEPARATORS.split(text) if part]
    except RemoteFault as exc:
        raise UsageError(exc.reason) from exc
    return list(dict.fromkeys(found))


def from_text(text: str, base: SavedDraft) -> SavedDraft:
    """`base` with the recipients, subject and body of the text form (attachments and
    flags kept); UsageError naming the line that is wrong."""
    head, sep, body = text.replace("\r\n", "\n").partition("\n\n")
    if not sep and not head.strip():
        head, body = "", ""
    values: dict[str, str] = {}
    for number, line in enumerate(head.split("\n"), 1):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        wanted = next((h for h in HEADERS if h.lower() == name.strip().lower()), None)
        if not colon or wanted is None:
            raise UsageError(
                f"line {number}: expected one of {', '.join(h + ':' for h in HEADERS)} "
                "(the body comes after an empty line)"
            )
        if wanted in values:
            raise UsageError(f"line {number}: {wanted}: given twice")
        values[wanted] = value.strip()
    subject = values.get("Subject", "")
    return replace(
        base,
        to=addresses(values.get("To", "")),
        cc=addresses(values.get("Cc", "")),
        bcc=addresses(values.get("Bcc", "")),
        subject=subject,
        body=body,
    )
