"""In charge of showing a stored wsemail message as an Internet message (RFC 5322/MIME) and
answering FETCH about it: the bytes, ENVELOPE, BODYSTRUCTURE and body sections.

- the wsemail fields become From, To, Cc, Subject, Date, Message-ID; `X-WSEmail-Id` is the
  message's id for the wsemail CLI; `X-WSEmail-Provenance` says what this server knows of
  where the message comes from (`provenance_line`);
- the text is a text/plain UTF-8 part; each on-demand attachment is a text/plain part
  (named `<name>.wsemail-link.txt`) saying where the bytes are (server, endpoint, id,
  SHA-256): the bytes stay on the sender's server and are fetched with wsemail;
- an end-to-end encrypted message is delivered as is: its sealed XML as an
  application/xml part (`X-WSEmail-Encrypted: yes`); only the recipient's device opens it.

A message's bytes never change (the same stored copy always renders the same), so
RFC822.SIZE and UIDs stay true; the plug-in caches renderings.
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import email.utils
import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import Header
from email.parser import BytesHeaderParser

from wsemail.core.provenance import read_kept, read_legacy, read_signed
from wsemail.protocol.errors import RemoteFault, WsemailError
from wsemail.protocol.message import AttachmentRef, domain_of
from wsemail.protocol.xmlsafe import XmlLimits, parse_untrusted
from wsemail.server.imap.fetch import split_section
from wsemail.server.imap.parser import Refused
from wsemail.server.imap.records import Row
from wsemail.server.smtp.mime import link_text, safe_name

_HEADER_PARSER = BytesHeaderParser(policy=email.policy.compat32)


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _when(iso: str) -> datetime:
    """A stored date (YYYY-MM-DDTHH:MM:SSZ), parsed without strptime (a sync reads 10,000)."""
    try:
        if len(iso) != 20 or iso[10] != "T" or iso[19] != "Z":
            raise ValueError(iso)
        return datetime(
            int(iso[0:4]), int(iso[5:7]), int(iso[8:10]),
            int(iso[11:13]), int(iso[14:16]), int(iso[17:19]), tzinfo=UTC,
        )  # fmt: skip
    except ValueError:
        return _EPOCH


def rfc_date(iso: str) -> str:
    when = _when(iso)
    return (
        f"{_DAYS[when.weekday()]}, {when.day:02d} {_MONTHS[when.month - 1]} {when.year:04d} "
        f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} +0000"
    )


def internal_date(iso: str) -> str:
    when = _when(iso)
    return (
        f"{when.day:02d}-{_MONTHS[when.month - 1]}-{when.year:04d} "
        f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} +0000"
    )


def provenance_line(row: Row, owner: str, domain: str) -> str:
    """What this server knows of the message's origin, in one header line."""
    if row.signed_xml is None:
        if domain_of(row.sender) == domain:
            return f"local {domain} (sent by a user of this server)"
        return "none (a message from another domain without a signature)"
    kept = read_kept(row.signed_xml)
    if kept is not None:  # a draft saved here, or mail imported by its owner
        return f"{kept.status} ({kept.reason}); NOT signed by a wsemail server"
    legacy = read_legacy(row.signed_xml)
    if legacy is not None:
        return f"legacy ({legacy.reason}); NOT signed by a wsemail server"
    if b"SignedRequest" in row.signed_xml[:200]:
        return f"verified {row.sender} (direct instant message, checked by {domain} on delivery)"
    return f"verified {row.origin} (signature checked by {domain} on delivery)"


def attachment_refs(row: Row) -> list[AttachmentRef]:
    """The attachments named in a relayed message's signed form."""
    if row.signed_xml is None:
        return []
    try:
        root = parse_untrusted(row.signed_xml, XmlLimits(max_bytes=64 << 20))
        if root.tag.endswith("}SignedMessage"):
            return read_signed(root).message.attachments
    except (RemoteFault, WsemailError):
        return []
    return []


def _clean(text: str) -> str:
    """A header value of ours on one line, printable ASCII (RFC 2047 words otherwise)."""
    return header_text(" ".join(text.split()))


def _filename(name: str) -> str:
    if all(32 <= ord(c) < 127 for c in name) and '"' not in name and "\\" not in name:
        return f'filename="{name}"'
    return "filename*=" + email.utils.encode_rfc2231(name, "utf-8")


def _qp(text: str) -> bytes:
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    if not data.endswith(b"\n"):
        data += b"\n"
    return binascii.b2a_qp(data, istext=True).replace(b"\n", b"\r\n")


def render(row: Row, owner: str, domain: str, refs: list[AttachmentRef]) -> bytes:
    """The message as RFC 5322 bytes (CRLF line ends), built directly (the email package
    takes over a millisecond a message)."""
    to, cc = json.loads(row.to_json), json.loads(row.cc_json)
    head = [f"From: {row.sender}"]
    if to:
        head.append("To: " + ", ".join(to))
    if cc:
        head.append("Cc: " + ", ".join(cc))
    head += [
        "Subject: " + _clean(row.subject),
        "Date: " + rfc_date(row.date),
        "Message-ID: " + row.message_id,
        "X-WSEmail-Id: " + row.public_id,
        "X-WSEmail-Provenance: " + _clean(provenance_line(row, owner, domain)),
        "MIME-Version: 1.0",
    ]
    text_part = [
        'Content-Type: text/plain; charset="utf-8"',
        "Content-Transfer-Encoding: quoted-printable",
    ]
    if row.sealed:
        head.append("X-WSEmail-Encrypted: yes (end-to-end; open it with wsemail on your device)")
        head += [
            'Content-Type: application/xml; name="sealed-message.xml"',
            "Content-Transfer-Encoding: base64",
            'Content-Disposition: attachment; filename="sealed-message.xml"',
        ]
        body = base64.encodebytes(row.body.encode("utf-8")).replace(b"\n", b"\r\n")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body
    links = [(safe_name(r.name) + ".wsemail-link.txt", link_text(r) + "\n") for r in refs]
    if row.has_attachment and not refs:
        note = "[this message has attachments kept on a wsemail server: open it with wsemail]\n"
        links.append(("attachments.wsemail-link.txt", note))
    if not links:
        head += text_part
        return ("\r\n".join(head) + "\r\n\r\n").encode() + _qp(row.body)
    # the same bytes every time: sizes and UIDs stay true
    boundary = "wsemail-" + hashlib.sha256(row.public_id.encode()).hexdigest()[:32]
    head.append(f'Content-Type: multipart/mixed; boundary="{boundary}"')
    out = [("\r\n".join(head) + "\r\n\r\n").encode()]
    out.append(f"--{boundary}\r\n".encode() + ("\r\n".join(text_part) + "\r\n\r\n").encode())
    out.append(_qp(row.body))
    for name, text in links:
        part = [
            f"\r\n--{boundary}",
            'Content-Type: text/plain; charset="utf-8"',
            "Content-Transfer-Encoding: 8bit",
            "Content-Disposition: attachment; " + _filename(name),
        ]
        out.append(("\r\n".join(part) + "\r\n\r\n").encode())
        out.append(text.replace("\n", "\r\n").encode("utf-8"))
    out.append(f"\r\n--{boundary}--\r\n".encode())
    return b"".join(out)


# output syntax ---------------------------------------------------------------------------
_QUOTABLE = re.compile(rb"^[\x20-\x7e]{0,500}$")


def string(value: str | bytes | None) -> bytes:
    """An IMAP nstring: NIL, a quoted string, or a literal."""
    if value is None:
        return b"NIL"
    if isinstance(value, str):
        if len(value) < 500 and value.isascii() and value.isprintable():
            if '"' not in value and "\\" not in value:
                return b'"' + value.encode("ascii") + b'"'
        data = value.encode("utf-8")
    else:
        data = value
    if _QUOTABLE.match(data):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data


def _address(address: str) -> bytes:
    local, _, host = address.rpartition("@")
    return b"(NIL NIL " + string(local) + b" " + string(host) + b")"


def _addresses(values: list[str]) -> bytes:
    if not values:
        return b"NIL"
    return b"(" + b"".join(_address(a) for a in values) + b")"


@functools.lru_cache(maxsize=4096)
def _addresses_json(stored: str) -> bytes:
    """An address list as stored (JSON) in ENVELOPE form; a mailbox repeats a few often."""
    return _addresses(json.loads(stored))


@functools.lru_cache(maxsize=4096)
def _sender(address: str) -> bytes:
    return _addresses([address])


def header_text(value: str) -> str:
    """A header value as it is written (RFC 2047 words for text that is not ASCII)."""
    if value.isascii() and value.isprintable():
        return value
    return Header(value, "utf-8").encode(linesep="\r\n")


def envelope(row: Row) -> bytes:
    """ENVELOPE straight from the stored columns (no rendering: a sync of thousands)."""
    sender = _sender(row.sender)
    return (
        b"("
        + b" ".join(
            [
                string(rfc_date(row.date)),
                string(header_text(" ".join(row.subject.split())).replace("\r\n", "")),
                sender,
                sender,
                sender,
                _addresses_json(row.to_json),
                _addresses_json(row.cc_json),
                b"NIL",
                b"NIL",
                string(row.message_id),
            ]
        )
        + b")"
    )


# MIME structure --------------------------------------------------------------------------
@dataclass
class Part:
    header: bytes  # up to and including the empty line
    body: bytes
    children: list[Part] = field(default_factory=list)

    def info(self) -> tuple[str, str, list[tuple[str, str]], str, str | None]:
        """(type, subtype, parameters, transfer encoding, disposition filename)."""
        parsed = _HEADER_PARSER.parsebytes(self.header)
        maintype, subtype = parsed.get_content_maintype(), parsed.get_content_subtype()
        found = parsed.get_params(header="content-type") or []
        params = [(str(k), str(v)) for k, v in found[1:] if v]
        encoding = (parsed.get("content-transfer-encoding") or "7bit").strip()
        filename = parsed.get_filename()
        return maintype, subtype, params, encoding, filename


def split(data: bytes) -> Part:
    """A message (or part) into its header, body and, for a multipart, its children."""
    if data.startswith(b"\r\n"):
        header, body = b"\r\n", data[2:]
    else:
        end = data.find(b"\r\n\r\n")
        header, body = (data, b"") if end < 0 else (data[: end + 4], data[end + 4 :])
    part = Part(header, body)
    parsed = _HEADER_PARSER.parsebytes(header)
    boundary = parsed.get_boundary() if parsed.get_content_maintype() == "multipart" else None
    if boundary:
        delimiter = b"\r\n--" + boundary.encode("ascii", "replace")
        pieces = (b"\r\n" + body).split(delimiter)
        for piece in pieces[1:]:
            if piece.startswith(b"--"):
                break
            newline = piece.find(b"\r\n")
            part.children.append(split(piece[newline + 2 :] if newline >= 0 else b""))
    return part


def bodystructure(part: Part, extensible: bool) -> bytes:
    maintype, subtype, params, encoding, filename = part.info()
    if part.children:
        inner = b"".join(bodystructure(c, extensible) for c in part.children)
        out = inner + b" " + string(subtype.upper())
        if extensible:
            out += b" " + _params(params) + b" NIL NIL NIL"
        return b"(" + out + b")"
    fields = [
        string(maintype.upper()),
        string(subtype.upper()),
        _params(params),
        b"NIL",
        b"NIL",
        string(encoding.upper()),
        str(len(part.body)).encode(),
    ]
    if maintype == "text":
        fields.append(str(part.body.count(b"\n")).encode())
    if extensible:
        fields.append(b"NIL")
        if filename:
            fields.append(b'("ATTACHMENT" ("FILENAME" ' + string(filename) + b"))")
        else:
            fields.append(b"NIL")
        fields.append(b"NIL NIL")
    return b"(" + b" ".join(fields) + b")"


def _params(params: list[tuple[str, str]]) -> bytes:
    if not params:
        return b"NIL"
    return b"(" + b" ".join(string(k.upper()) + b" " + string(str(v)) for k, v in params) + b")"


def _header_lines(header: bytes) -> list[tuple[str, bytes]]:
    """(lower-case name, the whole field with its continuation lines) of a header."""
    fields: list[tuple[str, bytes]] = []
    for line in header.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:
            name, text = fields[-1]
            fields[-1] = (name, text + line + b"\r\n")
            continue
        name = line.split(b":", 1)[0].strip().lower().decode("ascii", "replace")
        fields.append((name, line + b"\r\n"))
    return fields


def section(data: bytes, spec: str, names: list[str]) -> bytes:
    """The bytes of BODY[spec] (spec upper-cased, without the field list `names`)."""
    found = split_section(spec)
    if found is None:
        raise Refused(f"unknown body section {spec[:40]!r}")
    path, what = found
    part = split(data)
    if path:
        for number in (int(n) for n in path.split(".")):
            if not part.children:
                if number != 1:
                    return b""
                part = Part(b"", part.body)  # the body of a single-part message is part 1
                continue
            if number > len(part.children):
                return b""
            part = part.children[number - 1]
        if what is None:
            return part.body
        if what == "MIME":
            return part.header
        if not part.header or part.info()[:2] != ("message", "rfc822"):
            return b""  # HEADER and TEXT of a part are for message/rfc822 parts
        part = split(part.body)
    elif what is None:
        return data
    elif what == "MIME":
        raise Refused("MIME needs a part number")
    if what == "TEXT":
        return part.body
    if what == "HEADER":
        return part.header
    wanted = {n.lower() for n in names}
    keep = what == "HEADER.FIELDS"
    lines = [text for name, text in _header_lines(part.header) if (name in wanted) == keep]
    return b"".join(lines) + b"\r\n"
