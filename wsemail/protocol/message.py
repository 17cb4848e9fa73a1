"""Messages and their headers as values, and their urn:wsemail XML form."""

from __future__ import annotations

import functools
import re
import secrets
import time
from dataclasses import dataclass, field

from lxml import etree

from wsemail.protocol.errors import RequestInvalid
from wsemail.protocol.soap import (
    Children,
    element,
    escaped,
    int_of,
    parse_int,
    q,
    text_of,
    texts_of,
)

_ADDRESS = re.compile(r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_MESSAGE_ID = re.compile(r"^<[!-;=?-~]{1,250}@[A-Za-z0-9.-]{1,253}>$")
FOLDERS = ("inbox", "sent")  # where mail arrives; every user also has these:
SYSTEM_FOLDERS = ("inbox", "sent", "Archive", "Drafts", "Trash")
SEALED_MARKER = '<e2e:Sealed xmlns:e2e="urn:wsemail:e2e"'  # an end-to-end encrypted Body
MAX_RECIPIENTS = 100
MAX_SUBJECT = 998
MAX_REFERENCES = 50  # message ids in References (a reply keeps the first and the newest)


def is_address(text: str) -> bool:
    """Whether `text` is a plain address (local@domain) as wsemail takes them: the one
    address check, used by messages, accounts, SMTP and forms alike."""
    return _ADDRESS.match(text) is not None


NAME_BYTES = 255  # the longest file name most file systems take, in UTF-8 bytes


def utf8_prefix(text: str, limit: int) -> str:
    """The longest prefix of `text` whose UTF-8 form has at most `limit` bytes (a file
    name's limit counts bytes, not characters)."""
    return text.encode("utf-8", "surrogatepass")[:limit].decode("utf-8", "ignore")


def normalize_address(address: str) -> str:
    """Lower-case the domain, keep the local part; raise on anything not a plain address."""
    address = address.strip()
    if not is_address(address):
        raise RequestInvalid(f"not a valid address: {address[:80]!r}")
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.lower()}"


def is_sealed_body(body: str) -> bool:
    """Whether a Body is end-to-end encrypted (only the recipients can read it)."""
    return body.lstrip().startswith(SEALED_MARKER)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2]


def new_message_id(domain: str) -> str:
    return f"<{ordered_token(15)}@{domain}>"


_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # in ASCII order


def ordered_token(random_bytes: int) -> str:
    """A unique token that sorts by the millisecond it was made: 7 base-62 digits of the
    time (until the year 5138), then `random_bytes` random bytes, URL-safe base64. Ids made
    one after another sit side by side in an index: storing one changes the index page the
    last one changed, not a random page (a random id cost a page write per index per copy).
    It never starts with "-", so it is never taken for a command-line option."""
    return _time_digits(time.time_ns() // 1_000_000) + secrets.token_urlsafe(random_bytes)


@functools.lru_cache(maxsize=64)  # ids made in the same millisecond share it
def _time_digits(ms: int) -> str:
    digits = []
    for _ in range(7):
        ms, digit = divmod(ms, 62)
        digits.append(_BASE62[digit])
    return "".join(reversed(digits))


def is_message_id(text: str) -> bool:
    """Whether `text` is a message id as wsemail takes them: <unique@domain>."""
    return _MESSAGE_ID.fullmatch(text) is not None  # fullmatch: `$` lets a newline through


def check_message_id(message_id: str) -> str:
    if not _MESSAGE_ID.match(message_id):
        raise RequestInvalid("MessageId must look like <unique@domain>")
    return message_id


def thread_fields_to_xml(parent: etree._Element, in_reply_to: str | None, refs: list[str]) -> None:
    """`<InReplyTo>` and one `<Reference>` per id of References, only when set (a message
    that starts a conversation keeps its old form, and its old signature)."""
    if in_reply_to:
        element(parent, "InReplyTo", in_reply_to)
    for ref in refs:
        element(parent, "Reference", ref)


def thread_fields(
    parent: etree._Element | Children, *, strict: bool = True
) -> tuple[str | None, list[str]]:
    """In-Reply-To and References of a Message / Draft / signed Content element. `strict`
    (what a server takes in, and what a reader checks in a signed form): each a message id
    like <unique@domain>, at most MAX_REFERENCES, else RequestInvalid naming the value."""
    fields = parent if isinstance(parent, Children) else Children(parent)
    replies_to = fields.texts("InReplyTo")
    in_reply_to = replies_to[0] if replies_to else None
    refs = fields.texts("Reference")
    if not strict:
        return in_reply_to or None, refs
    if len(replies_to) > 1:
        raise RequestInvalid("a message has at most one InReplyTo")
    if len(refs) > MAX_REFERENCES:
        raise RequestInvalid(f"References names at most {MAX_REFERENCES} message ids")
    for value in [*([in_reply_to] if in_reply_to is not None else []), *refs]:
        if not is_message_id(value):
            tag = "References" if value in refs else "InReplyTo"
            raise RequestInvalid(f"{tag}: not a message id like <unique@domain>: {value[:80]!r}")
    if len(set(refs)) != len(refs):
        raise RequestInvalid("References names a message id twice")
    return in_reply_to or None, refs


@dataclass(frozen=True)
class AttachmentRef:
    """An on-demand attachment left on the sender's server (DESIGN.md §8): where to fetch it
    (`server` domain, `url` of its SOAP endpoint, `guid`) and what the bytes must be."""

    server: str
    url: str
    guid: str
    name: str
    size: int
    media_type: str
    sha256: str  # lower-case hex

    def to_xml(self, parent: etree._Element) -> etree._Element:
        node = element(parent, "Attachment")
        for tag, value in (
            ("Server", self.server),
            ("Url", self.url),
            ("Guid", self.guid),
            ("Name", self.name),
            ("Size", str(self.size)),
            ("MediaType", self.media_type),
            ("Sha256", self.sha256),
        ):
            element(node, tag, value)
        return node

    @classmethod
    def from_xml(cls, node: etree._Element) -> AttachmentRef:
        size = parse_int(text_of(node, "Size"), "an attachment reference's Size", 0, 2**63 - 1)
        return cls(
            server=text_of(node, "Server", "") or "",
            url=text_of(node, "Url", "") or "",
            guid=text_of(node, "Guid", "") or "",
            name=text_of(node, "Name", "") or "",
            size=size,
            media_type=text_of(node, "MediaType", "") or "",
            sha256=text_of(node, "Sha256", "") or "",
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "server": self.server,
            "url": self.url,
            "guid": self.guid,
            "name": self.name,
            "size": self.size,
            "media_type": self.media_type,
            "sha256": self.sha256,
        }


def attachment_refs(parent: etree._Element) -> list[AttachmentRef]:
    return [AttachmentRef.from_xml(n) for n in parent.findall(q("Attachment"))]


def instant_flags_to_xml(parent: etree._Element, instant: bool, delete: bool) -> None:
    """`<Instant>true</Instant>` and `<DeleteIfUndeliverable>true</…>`, only when set (plain
    mail keeps its old form)."""
    if instant:
        element(parent, "Instant", "true")
    if delete:
        element(parent, "DeleteIfUndeliverable", "true")


# Header fields a server adds to a message and relays signed (issue 18): what tells an
# automatic reply (RFC 3834 Auto-Submitted), list and bulk mail from the SMTP gateway
# (Precedence, List-Id), and the mapped addresses a message was forwarded through
# (Forwarded-By, one per hop: loops between servers stop at MAX_HOPS). Clients do not set them.
HEADER_NAMES = ("Auto-Submitted", "Precedence", "List-Id", "Forwarded-By")
MAX_HEADERS = 32
MAX_HEADER_VALUE = 998


def headers_to_xml(parent: etree._Element, headers: list[tuple[str, str]]) -> None:
    """`<Header Name="Auto-Submitted">auto-replied</Header>`…, only when there are any."""
    for name, value in headers:
        element(parent, "Header", value).set("Name", name)


def headers_of(parent: etree._Element) -> list[tuple[str, str]]:
    """The Header fields of a Message or signed Content element: known names only (others
    are dropped), one line each, at most MAX_HEADERS."""
    found: list[tuple[str, str]] = []
    canonical = {n.lower(): n for n in HEADER_NAMES}
    for node in parent.findall(q("Header")):
        name = canonical.get((node.get("Name") or "").lower())
        value = " ".join((node.text or "").split())
        if name is None or len(value) > MAX_HEADER_VALUE:
            continue
        if len(found) >= MAX_HEADERS:
            raise RequestInvalid(f"a message carries at most {MAX_HEADERS} Header fields")
        found.append((name, value))
    return found


def instant_flags(parent: etree._Element | Children) -> tuple[bool, bool]:
    """The two IM flags (instant, delete if undeliverable) of a Message / Draft / signed
    Content element."""
    flags = []
    for tag in ("Instant", "DeleteIfUndeliverable"):
        if isinstance(parent, Children):
            found = parent.text(tag, "false")
        else:
            found = text_of(parent, tag, "false")
        raw = (found or "false").strip().lower()
        if raw not in ("true", "false", "1", "0"):
            raise RequestInvalid(f"{tag} must be true or false")
        flags.append(raw in ("true", "1"))
    return flags[0], flags[1]


@dataclass
class Draft:
    """What a client submits: the server adds sender, date and id."""

    to: list[str]
    subject: str = ""
    body: str = ""
    cc: list[str] = field(default_factory=list)
    message_id: str | None = None
    attachments: list[str] = field(default_factory=list)  # ids of uploads to reference
    instant: bool = False  # meant as an instant message (DESIGN.md §8)
    delete_if_undeliverable: bool = False  # an instant message: drop it, tell the sender
    # blind copies: they get the message, nobody else ever sees that they did
    bcc: list[str] = field(default_factory=list)
    in_reply_to: str | None = None  # the message id this answers
    references: list[str] = field(default_factory=list)  # the conversation's ids, oldest first

    def to_xml(self, parent: etree._Element) -> etree._Element:
        msg = element(parent, "Message")
        if self.message_id:
            element(msg, "MessageId", self.message_id)
        for address in self.to:
            element(msg, "To", address)
        for address in self.cc:
            element(msg, "Cc", address)
        for address in self.bcc:
            element(msg, "Bcc", address)
        element(msg, "Subject", self.subject)
        element(msg, "Body", self.body)
        for upload in self.attachments:
            element(msg, "AttachmentId", upload)
        instant_flags_to_xml(msg, self.instant, self.delete_if_undeliverable)
        thread_fields_to_xml(msg, self.in_reply_to, self.references)
        return msg

    @classmethod
    def from_xml(cls, msg: etree._Element | None) -> Draft:
        if msg is None:
            raise RequestInvalid("Send needs a Message")
        fields = Children(msg)  # one pass over its children for all the fields
        to = [normalize_address(a) for a in fields.texts("To")]
        cc = [normalize_address(a) for a in fields.texts("Cc")]
        bcc = [normalize_address(a) for a in fields.texts("Bcc")]
        if not to and not cc:  # a message only to blind copies would show no recipient
            raise RequestInvalid("a message needs at least one To or Cc recipient")
        if len(to) + len(cc) + len(bcc) > MAX_RECIPIENTS:
            raise RequestInvalid(f"at most {MAX_RECIPIENTS} recipients")
        subject = fields.text("Subject", "") or ""
        if len(subject) > MAX_SUBJECT or "\n" in subject or "\r" in subject:
            raise RequestInvalid("Subject must be one line of at most 998 characters")
        message_id = fields.text("MessageId")
        instant, delete = instant_flags(fields)
        in_reply_to, refs = thread_fields(fields)
        named = set(to) | set(cc)
        return cls(
            to=to,
            cc=cc,
            subject=subject,
            body=fields.text("Body", "") or "",
            message_id=check_message_id(message_id) if message_id else None,
            attachments=fields.texts("AttachmentId"),
            instant=instant,
            delete_if_undeliverable=delete,
            bcc=[a for a in dict.fromkeys(bcc) if a not in named],
            in_reply_to=in_reply_to,
            references=refs,
        )

    @property
    def recipients(self) -> list[str]:
        """To and Cc, each address once, in order (blind copies: `bcc`)."""
        return list(dict.fromkeys([*self.to, *self.cc]))


@dataclass
class MessageHeader:
    """One line of a mailbox listing."""

    id: str
    message_id: str
    folder: str
    sender: str
    to: list[str]
    cc: list[str]
    subject: str
    date: str
    size: int
    seen: bool
    # meant as an instant message (kept in the mailbox: no live session); keyword-only, so
    # a Message's positional fields stay as they were
    instant: bool = field(default=False, kw_only=True)
    delete_if_undeliverable: bool = field(default=False, kw_only=True)
    flagged: bool = field(default=False, kw_only=True)  # starred by the owner
    answered: bool = field(default=False, kw_only=True)

    def to_xml(self, parent: etree._Element, tag: str = "MessageHeader") -> etree._Element:
        node = element(parent, tag)
        element(node, "Id", self.id)
        element(node, "MessageId", self.message_id)
        element(node, "Folder", self.folder)
        element(node, "From", self.sender)
        for address in self.to:
            element(node, "To", address)
        for address in self.cc:
            element(node, "Cc", address)
        element(node, "Subject", self.subject)
        element(node, "Date", self.date)
        element(node, "Size", str(self.size))
        element(node, "Seen", "true" if self.seen else "false")
        instant_flags_to_xml(node, self.instant, self.delete_if_undeliverable)
        if self.flagged:
            element(node, "Flagged", "true")
        if self.answered:
            element(node, "Answered", "true")
        return node

    def xml_text(self, tag: str = "MessageHeader") -> str:
        """What `to_xml` builds, as XML text in the urn:wsemail default namespace (for
        `soap.from_text`: a page of headers is written as text and parsed once)."""
        parts = [
            f"<{tag}><Id>{escaped('Id', self.id)}</Id>"
            f"<MessageId>{escaped('MessageId', self.message_id)}</MessageId>"
            f"<Folder>{escaped('Folder', self.folder)}</Folder>"
            f"<From>{escaped('From', self.sender)}</From>"
        ]
        parts += [f"<To>{escaped('To', address)}</To>" for address in self.to]
        parts += [f"<Cc>{escaped('Cc', address)}</Cc>" for address in self.cc]
        parts.append(
            f"<Subject>{escaped('Subject', self.subject)}</Subject>"
            f"<Date>{escaped('Date', self.date)}</Date><Size>{self.size}</Size>"
            f"<Seen>{'true' if self.seen else 'false'}</Seen>"
        )
        if self.instant:
            parts.append("<Instant>true</Instant>")
        if self.delete_if_undeliverable:
            parts.append("<DeleteIfUndeliverable>true</DeleteIfUndeliverable>")
        if self.flagged:
            parts.append("<Flagged>true</Flagged>")
        if self.answered:
            parts.append("<Answered>true</Answered>")
        parts.append(f"</{tag}>")
        return "".join(parts)

    @classmethod
    def from_xml(cls, node: etree._Element) -> MessageHeader:
        instant, delete = instant_flags(node)
        return cls(
            id=text_of(node, "Id", "") or "",
            message_id=text_of(node, "MessageId", "") or "",
            folder=text_of(node, "Folder", "") or "",
            sender=text_of(node, "From", "") or "",
            to=texts_of(node, "To"),
            cc=texts_of(node, "Cc"),
            subject=text_of(node, "Subject", "") or "",
            date=text_of(node, "Date", "") or "",
            size=int_of(node, "Size", 0, 2**63 - 1, 0),
            seen=text_of(node, "Seen") == "true",
            instant=instant,
            delete_if_undeliverable=delete,
            flagged=text_of(node, "Flagged") == "true",
            answered=text_of(node, "Answered") == "true",
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "message_id": self.message_id,
            "folder": self.folder,
            "from": self.sender,
            "to": self.to,
            "cc": self.cc,
            "subject": self.subject,
            "date": self.date,
            "size": self.size,
            "seen": self.seen,
            "flagged": self.flagged,
            "answered": self.answered,
            **({"instant": True} if self.instant else {}),
            **({"delete_if_undeliverable": True} if self.delete_if_undeliverable else {}),
        }


@dataclass
class Message(MessageHeader):
    """A stored message: its header, its text body, references to on-demand attachments
    and, for a message relayed from another domain, the sending server (`origin`) and its
    signed form (`signed_xml`)."""

    body: str = ""
    origin: str | None = None
    signed_xml: bytes | None = field(default=None, repr=False)
    attachments: list[AttachmentRef] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)  # HEADER_NAMES fields
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)  # only ever on the sender's own copy

    def header(self, name: str) -> list[str]:
        """The values of header field `name` (any case) this message carries."""
        return [v for n, v in self.headers if n.lower() == name.lower()]

    @property
    def recipients(self) -> list[str]:
        """To, Cc and Bcc, each address once, in order: everyone the message goes to."""
        return list(dict.fromkeys([*self.to, *self.cc, *self.bcc]))

    def to_xml(self, parent: etree._Element, tag: str = "Message") -> etree._Element:
        node = super().to_xml(parent, tag)
        element(node, "Body", self.body)
        for ref in self.attachments:
            ref.to_xml(node)
        headers_to_xml(node, self.headers)
        thread_fields_to_xml(node, self.in_reply_to, self.references)
        for address in self.bcc:
            element(node, "Bcc", address)
        if self.signed_xml is not None:
            provenance = element(node, "Provenance")
            provenance.set("origin", self.origin or "")
            provenance.append(etree.fromstring(self.signed_xml))
        return node

    @classmethod
    def from_xml(cls, node: etree._Element) -> Message:
        header = MessageHeader.from_xml(node)
        provenance = node.find(q("Provenance"))
        signed = None
        if provenance is not None and len(provenance):
            signed = etree.tostring(provenance[0])
        in_reply_to, refs = thread_fields(node, strict=False)
        return cls(
            **vars(header),
            body=text_of(node, "Body", "") or "",
            origin=provenance.get("origin") if provenance is not None else None,
            signed_xml=signed,
            attachments=attachment_refs(node),
            headers=headers_of(node),
            in_reply_to=in_reply_to,
            references=refs,
            bcc=texts_of(node, "Bcc"),
        )

    def as_dict(self) -> dict[str, object]:
        found: dict[str, object] = (
            {"attachments": [a.as_dict() for a in self.attachments]} if self.attachments else {}
        )
        if self.in_reply_to:
            found["in_reply_to"] = self.in_reply_to
        if self.references:
            found["references"] = self.references
        if self.bcc:
            found["bcc"] = self.bcc
        return {**super().as_dict(), "body": self.body, **found}
