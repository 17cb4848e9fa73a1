"""A draft kept on the user's own server, in the Drafts folder, and its urn:wsemail XML
form: what SaveDraft takes and GetDraft / ListDrafts answer.

    <Draft> Id? MessageId? To* Cc* Bcc* Subject Body? AttachmentId* Instant?
            DeleteIfUndeliverable? InReplyTo? Reference* Saved? Size? </Draft>

A reply's draft keeps its conversation (InReplyTo, References), so sending it links the
sent message into the conversation as `wsemail reply` does.

A draft is nobody's signed mail: it is the owner's text until SendDraft turns it into a
real Send (with the draft's MessageId, so a retried send is stored once)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from wsemail.protocol.errors import RequestInvalid
from wsemail.protocol.message import (
    MAX_RECIPIENTS,
    MAX_SUBJECT,
    check_message_id,
    instant_flags,
    instant_flags_to_xml,
    normalize_address,
    thread_fields,
    thread_fields_to_xml,
)
from wsemail.protocol.soap import element, int_of, text_of, texts_of

MAX_ATTACHMENTS = 32  # what one message may reference (the attachments plug-in's limit)
MAX_ID = 64  # characters of a message or upload id


def _addresses(node: etree._Element, tag: str) -> list[str]:
    return list(dict.fromkeys(normalize_address(a) for a in texts_of(node, tag)))


@dataclass
class SavedDraft:
    """A draft: recipients (Bcc included), subject, body, ids of finished uploads to attach
    and the instant-message flags; `id`, `message_id`, `saved` and `size` are the server's."""

    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    subject: str = ""
    body: str = ""
    attachments: list[str] = field(default_factory=list)
    instant: bool = False
    delete_if_undeliverable: bool = False
    id: str = ""
    message_id: str | None = None
    saved: str = ""  # when it was last saved, UTC, YYYY-MM-DDTHH:MM:SSZ
    size: int = 0
    in_reply_to: str | None = None  # a reply's: the message id it answers
    references: list[str] = field(default_factory=list)  # its conversation, oldest first

    @property
    def recipients(self) -> list[str]:
        """To, Cc and Bcc, each address once, in order."""
        return list(dict.fromkeys([*self.to, *self.cc, *self.bcc]))

    def to_xml(
        self, parent: etree._Element, tag: str = "Draft", *, body: bool = True
    ) -> etree._Element:
        node = element(parent, tag)
        if self.id:
            element(node, "Id", self.id)
        if self.message_id:
            element(node, "MessageId", self.message_id)
        for kind, addresses in (("To", self.to), ("Cc", self.cc), ("Bcc", self.bcc)):
            for address in addresses:
                element(node, kind, address)
        element(node, "Subject", self.subject)
        if body:
            element(node, "Body", self.body)
        for upload in self.attachments:
            element(node, "AttachmentId", upload)
        instant_flags_to_xml(node, self.instant, self.instant and self.delete_if_undeliverable)
        thread_fields_to_xml(node, self.in_reply_to, self.references)
        if self.saved:
            element(node, "Saved", self.saved)
        if self.size:
            element(node, "Size", str(self.size))
        return node

    @classmethod
    def from_xml(cls, node: etree._Element | None) -> SavedDraft:
        """Read a draft strictly: plain addresses (at most MAX_RECIPIENTS in all), a
        one-line subject, at most MAX_ATTACHMENTS distinct upload ids; RequestInvalid
        otherwise. A draft may have no recipient yet."""
        if node is None:
            raise RequestInvalid("a Draft is required")
        to, cc, bcc = (_addresses(node, tag) for tag in ("To", "Cc", "Bcc"))
        if len(set([*to, *cc, *bcc])) > MAX_RECIPIENTS:
            raise RequestInvalid(f"at most {MAX_RECIPIENTS} recipients")
        subject = text_of(node, "Subject", "") or ""
        if len(subject) > MAX_SUBJECT or "\n" in subject or "\r" in subject:
            raise RequestInvalid(f"Subject must be one line of at most {MAX_SUBJECT} characters")
        uploads = [u.strip() for u in texts_of(node, "AttachmentId")]
        if len(uploads) > MAX_ATTACHMENTS or len(set(uploads)) != len(uploads):
            raise RequestInvalid(f"at most {MAX_ATTACHMENTS} distinct attachments per draft")
        if any(not u or len(u) > MAX_ID for u in uploads):
            raise RequestInvalid("an AttachmentId is the id of one of your uploads")
        message_id = (text_of(node, "MessageId") or "").strip()
        instant, delete = instant_flags(node)
        in_reply_to, refs = thread_fields(node)
        return cls(
            to=to,
            cc=cc,
            bcc=bcc,
            subject=subject,
            body=text_of(node, "Body", "") or "",
            attachments=uploads,
            instant=instant,
            delete_if_undeliverable=instant and delete,
            id=(text_of(node, "Id") or "").strip(),
            message_id=check_message_id(message_id) if message_id else None,
            saved=(text_of(node, "Saved") or "").strip(),
            size=int_of(node, "Size", 0, 2**63 - 1, 0),
            in_reply_to=in_reply_to,
            references=refs,
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "message_id": self.message_id,
            "to": self.to,
            "cc": self.cc,
            "bcc": self.bcc,
            "subject": self.subject,
            "body": self.body,
            "attachments": self.attachments,
            "saved": self.saved,
            "size": self.size,
            **({"instant": True} if self.instant else {}),
            **({"delete_if_undeliverable": True} if self.delete_if_undeliverable else {}),
            **({"in_reply_to": self.in_reply_to} if self.in_reply_to else {}),
            **({"references": self.references} if self.references else {}),
        }
