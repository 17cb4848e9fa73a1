"""In charge of converting between wsemail messages and Internet messages (RFC 5322/MIME):
a text/plain UTF-8 message for outgoing mail, and for incoming mail its text part as the
body, its other parts listed (wsemail has no attachments yet: their place is `parts`).

The standard library's email exceptions are translated here and nowhere else.
"""

from __future__ import annotations

import email.policy
import email.utils
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser

from wsemail.errors import RemoteFault, RequestInvalid
from wsemail.message import MAX_SUBJECT, Message, check_message_id, normalize_address

ISO = "%Y-%m-%dT%H:%M:%SZ"


def to_mime(message: Message) -> bytes:
    """An RFC 5322 message (CRLF line ends) for a wsemail message."""
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
    mime.set_content(message.body, subtype="plain", charset="utf-8", cte="quoted-printable")
    # attachments: when wsemail gets them, add_attachment() here (or a link, as configured)
    return mime.as_bytes()


@dataclass(frozen=True)
class Part:
    """A MIME part that is not the text body: kept as a listing for now."""

    content_type: str
    filename: str
    size: int


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
        body_part = mime.get_body(preferencelist=("plain",))
        body = ""
        if body_part is not None and isinstance(body_part, EmailMessage):
            content = body_part.get_content()
            body = content if isinstance(content, str) else ""
        parts = []
        for part in mime.walk():
            if part is body_part or part.is_multipart():
                continue
            payload = part.get_payload(decode=True)
            parts.append(
                Part(
                    part.get_content_type(),
                    part.get_filename() or "",
                    len(payload) if isinstance(payload, bytes) else 0,
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
    )


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
