"""In charge of converting between wsemail messages and Internet messages (RFC 5322/MIME):
outgoing mail is text/plain UTF-8 with its on-demand attachments attached as MIME parts
(`attached`) or described as links (`linked`); for incoming mail its text part is the body
and its other parts come with their decoded bytes (`parts`, kept by the gateway as on-demand
attachments) under sanitised names.

The standard library's email exceptions are translated here and nowhere else.
"""

from __future__ import annotations

import codecs
import email.policy
import email.utils
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser

import html2text

from wsemail.protocol.errors import RemoteFault, RequestInvalid
from wsemail.protocol.message import (
    MAX_HEADER_VALUE,
    MAX_REFERENCES,
    MAX_SUBJECT,
    NAME_BYTES,
    AttachmentRef,
    Message,
    check_message_id,
    is_message_id,
    normalize_address,
    utf8_prefix,
)

ISO = "%Y-%m-%dT%H:%M:%SZ"


_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}$")


def link_text(ref: AttachmentRef) -> str:
    """How an attachment left on the sender's server is described in a legacy message."""
    return (
        f"[attachment kept on the sender's wsemail server: {ref.name} "
        f"({ref.media_type}, {ref.size} bytes)\n"
        f" server {ref.server}, endpoint {ref.url}, id {ref.guid}\n"
        f" SHA-256 {ref.sha256}]"
    )


def to_mime(
    message: Message,
    attached: list[tuple[AttachmentRef, bytes]] | None = None,
    linked: list[AttachmentRef] | None = None,
) -> bytes:
    """An RFC 5322 message (CRLF line ends) for a wsemail message: its text, then the
    `attached` attachments as MIME parts and the `linked` ones described in the text."""
    mime = EmailMessage(policy=email.policy.SMTP)
    mime["From"] = message.sender
    if message.to:
        mime["To"] = ", ".join(message.to)
    if message.cc:
        mime["Cc"] = ", ".join(message.cc)
    mime["Subject"] = message.subject
    try:
        when = datetime.strptime(message.date, ISO).replace(tzinfo=UTC)
    except ValueError:
        when = datetime.now(UTC)
    mime["Date"] = email.utils.format_datetime(when)
    mime["Message-ID"] = message.message_id
    if message.in_reply_to:  # its conversation, for the reader's mail program
        mime["In-Reply-To"] = message.in_reply_to
    if message.references:
        mime["References"] = " ".join(message.references)
    for value in message.header("Auto-Submitted")[:1]:  # an auto-reply says so (RFC 3834)
        mime["Auto-Submitted"] = value
    body = message.body
    if linked:
        body = body.rstrip("\n") + "\n\n" + "\n".join(link_text(r) for r in linked) + "\n"
    mime.set_content(body, subtype="plain", charset="utf-8", cte="quoted-printable")
    for ref, data in attached or []:
        media = ref.media_type if _MEDIA_TYPE.match(ref.media_type) else ""
        maintype, _, subtype = (media or "application/octet-stream").partition("/")
        mime.add_attachment(data, maintype=maintype, subtype=subtype, filename=safe_name(ref.name))
    return mime.as_bytes()


def safe_name(raw: str | None) -> str:
    """A part's file name as a plain name: the last path segment, no control characters,
    no leading dots, at most 255 UTF-8 bytes; "attachment" when nothing is left."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if ord(c) >= 32 and ord(c) != 127).strip().lstrip(".")
    return utf8_prefix(name.strip(), NAME_BYTES).strip() or "attachment"


def media_type(part: EmailMessage) -> str:
    value = part.get_content_type().lower()
    return value if _MEDIA_TYPE.match(value) else "application/octet-stream"


@dataclass(frozen=True)
class Part:
    """A MIME part that is not the text body, decoded; `filename` is already sanitised,
    `keep` says whether it is an attachment (a named part or a non-text part) rather than
    an alternative rendering of the text."""

    content_type: str
    filename: str
    size: int
    data: bytes = field(default=b"", repr=False)
    keep: bool = False


@dataclass
class Incoming:
    sender: str | None  # the header From address, None if missing or unparseable
    to: list[str]
    cc: list[str]
    subject: str
    date: str
    message_id: str | None
    body: str
    parts: list[Part] = field(default_factory=list)
    # what tells automatic, list and bulk mail (the vacation responder reads them)
    headers: list[tuple[str, str]] = field(default_factory=list)
    in_reply_to: str | None = None  # its conversation (ids as wsemail takes them, else none)
    references: list[str] = field(default_factory=list)


KEPT_HEADERS = ("Auto-Submitted", "Precedence", "List-Id")


def _kept_headers(mime: EmailMessage) -> list[tuple[str, str]]:
    found = []
    for name in KEPT_HEADERS:
        value = mime.get(name)
        if value is not None:
            found.append((name, " ".join(str(value).split())[:MAX_HEADER_VALUE]))
    return found


def _addresses(values: list[str]) -> list[str]:
    found: list[str] = []
    for _, address in email.utils.getaddresses(values):
        try:
            found.append(normalize_address(address))
        except RemoteFault:
            continue
    return list(dict.fromkeys(found))


def from_mime(data: bytes) -> Incoming:
    """Read an incoming message; RequestInvalid when it cannot be parsed at all."""
    try:
        mime = BytesParser(policy=email.policy.default).parsebytes(data)
        subject = " ".join(str(mime.get("Subject", "")).split())[:MAX_SUBJECT]
        senders = _addresses([str(v) for v in mime.get_all("From", [])])
        to = _addresses([str(v) for v in mime.get_all("To", [])])
        cc = _addresses([str(v) for v in mime.get_all("Cc", [])])
        date = _iso_date(str(mime.get("Date", "")))
        message_id = _message_id(str(mime.get("Message-ID", "")))
        headers = _kept_headers(mime)
        in_reply_to, references = _thread_ids(mime)
        body_part = mime.get_body(preferencelist=("plain",)) or mime.get_body(
            preferencelist=("html",)
        )
        body = ""
        if body_part is not None and isinstance(body_part, EmailMessage):
            body = text_of(body_part)
            if body_part.get_content_subtype() == "html":  # HTML-only mail: its text
                body = html_text(body)
        parts = []
        for part in mime.walk():
            if part is body_part or part.is_multipart():
                continue
            payload = part.get_payload(decode=True)
            data = payload if isinstance(payload, bytes) else b""
            raw_name = part.get_filename()
            kind = media_type(part)
            named = bool(raw_name) or part.get_content_disposition() == "attachment"
            parts.append(
                Part(
                    kind,
                    safe_name(raw_name) if raw_name else "",
                    len(data),
                    data,
                    keep=named or not kind.startswith("text/"),
                )
            )
    except (ValueError, LookupError, TypeError, IndexError, AttributeError) as exc:
        raise RequestInvalid(f"unreadable message: {exc}") from exc
    return Incoming(
        sender=senders[0] if len(senders) == 1 else None,
        to=to,
        cc=cc,
        subject=subject,
        date=date,
        message_id=message_id,
        body=body.replace("\r\n", "\n"),
        parts=parts,
        headers=headers,
        in_reply_to=in_reply_to,
        references=references,
    )


_ID_TOKEN = re.compile(r"<[^<>\s]+>")


def _thread_ids(mime: EmailMessage) -> tuple[str | None, list[str]]:
    """In-Reply-To and References of legacy mail, leniently: the <id> tokens wsemail takes
    as message ids (others dropped), each once, the first and the newest when too many."""
    raw_in_reply_to = _ID_TOKEN.findall(str(mime.get("In-Reply-To", "")))
    raw_references = _ID_TOKEN.findall(" ".join(str(v) for v in mime.get_all("References", [])))
    in_reply_to = next((i for i in raw_in_reply_to if is_message_id(i)), None)
    references = list(dict.fromkeys(r for r in raw_references if is_message_id(r)))
    if len(references) > MAX_REFERENCES:
        references = [references[0], *references[-(MAX_REFERENCES - 1) :]]
    return in_reply_to, references


MAX_HTML = 256 << 10  # characters of markup converted (Gmail clips at 102 KB); the rest is cut


def html_text(markup: str) -> str:
    """Plain text for an HTML-only message body, by html2text: link targets stay visible
    ("[your bank](https://…)": a phishing link shows where it goes), <pre> is kept, images
    become their alt text; nothing is fetched (html2text has no network code, and remote
    images, styles and scripts are never rendered). Malformed markup gives the text as far
    as it goes; markup past MAX_HTML is cut (html.parser costs 5-15 µs a tag: 10 MB of
    nesting would take a minute of CPU, its first 256 KiB take about 2 s)."""
    cut = len(markup) > MAX_HTML
    converter = html2text.HTML2Text()
    converter.body_width = 0  # no re-wrapping
    converter.unicode_snob = True  # keep non-ASCII letters as they are
    converter.images_to_alt = True
    converter.ignore_emphasis = True
    converter.single_line_break = False
    try:
        text = converter.handle(markup[:MAX_HTML])
    except (RecursionError, ValueError, AssertionError, IndexError) as exc:
        text = f"[the HTML of this message could not be read: {type(exc).__name__}]"
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    text = "\n".join(lines)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    if cut:
        text = text.rstrip() + f"\n\n[HTML cut after {MAX_HTML} characters]"
    return text.strip("\n") + "\n"


def text_of(part: EmailMessage) -> str:
    """A text part's content decoded per its charset; an unknown charset or bytes that are
    not in it are read as UTF-8 with U+FFFD for what does not decode (never an error)."""
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    charset = part.get_content_charset() or "us-ascii"
    try:
        codecs.lookup(charset)
    except LookupError:
        charset = "utf-8"
    if charset.lower().replace("_", "-") in ("us-ascii", "ascii"):
        charset = "utf-8"  # 8-bit bytes under a missing or ASCII label are most often UTF-8
    try:
        return data.decode(charset, "replace")
    except (LookupError, UnicodeError):  # codecs that are not text encodings
        return data.decode("utf-8", "replace")


def _iso_date(value: str) -> str:
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return datetime.now(UTC).strftime(ISO)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime(ISO)


def _message_id(value: str) -> str | None:
    value = value.strip()
    try:
        return check_message_id(value) if value else None
    except RemoteFault:
        return None
