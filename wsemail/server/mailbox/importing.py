"""ImportMessages: Internet messages (RFC 5322, base64 in the request, up to
MAX_PER_REQUEST) into one folder of the caller's own mailbox, created if it does not exist
(not Drafts or Trash). Each is read by the SMTP gateway's MIME reader (the text part is the
body; an HTML-only body becomes text by html2text; attachments are listed in the record, not
kept) and stored as the owner's own row with an `ImportedMessage` provenance record: a
reader always sees "imported, NOT signed by anyone", whatever the headers claim. It is
never queued or relayed, and never taken for a delivered copy (its idempotency key is
`import:FOLDER`), so a real delivery of the same message still arrives.

A message whose Message-ID (or, without one, whose bytes) was imported into the folder
before is not imported again. Every message must be within the size-limit plug-in's
limit and all of them within the quota; otherwise the request stores nothing."""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import UTC, datetime

from lxml import etree

from wsemail.core.provenance import imported_record
from wsemail.protocol.errors import MessageTooLarge, QuotaExceeded, RequestInvalid
from wsemail.protocol.soap import element, q, text_of
from wsemail.server.mailbox import records
from wsemail.server.mailbox.limits import max_message_bytes, quota_of, used_bytes
from wsemail.server.mailbox.names import DRAFTS, TRASH, check_name
from wsemail.server.pipeline import Environment

MAX_PER_REQUEST = 500
ORIGIN = "import"
_BOOL = {"true": True, "1": True, "false": False, "0": False}


def _target(env: Environment, raw: str | None) -> str:
    """The folder to import into, created when it does not exist yet."""
    name = check_name(raw)
    found = records.resolve(env.tx, env.principal, name)
    if found in (DRAFTS, TRASH):
        raise RequestInvalid(f"messages cannot be imported into {found}")
    if found is None:
        records.create_folder(env.tx, env.principal, name)
        found = name
    return found


def _flag(node: etree._Element, name: str) -> bool:
    raw = (node.get(name) or "false").strip().lower()
    if raw not in _BOOL:
        raise RequestInvalid(f"{name} must be true or false")
    return _BOOL[raw]


def _raw(node: etree._Element, index: int) -> bytes:
    try:
        return base64.b64decode("".join((node.text or "").split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestInvalid(f"message {index}: not base64") from exc


def import_messages(env: Environment, op: etree._Element) -> etree._Element:
    folder = _target(env, text_of(op, "Folder"))
    nodes = op.findall(q("Message"))
    if not nodes:
        raise RequestInvalid("ImportMessages needs at least one Message")
    if len(nodes) > MAX_PER_REQUEST:
        raise RequestInvalid(f"at most {MAX_PER_REQUEST} messages per request")
    tx, owner = env.tx, env.principal
    arrival = f"{ORIGIN}:{folder}"
    now = env.clock()
    at = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    limit = max_message_bytes(env)
    quota = quota_of(env)
    used = used_bytes(env) if quota > 0 else 0
    result = etree.Element(q("ImportMessagesResponse"))
    element(result, "Folder", folder)
    counts = {"imported": 0, "duplicate": 0}
    items = []
    # the MIME reader (the email package, html2text: ~1 MB) is loaded by the first import
    from wsemail.server.smtp.mime import from_mime

    for index, node in enumerate(nodes, 1):
        raw = _raw(node, index)
        if limit is not None and len(raw) > limit:
            raise MessageTooLarge(
                f"message {index} of the request is {len(raw)} bytes, over the limit of {limit}"
            )
        seen, flagged, answered = (_flag(node, n) for n in ("Seen", "Flagged", "Answered"))
        try:
            incoming = from_mime(raw)
        except RequestInvalid as exc:
            raise RequestInvalid(f"message {index} of the request: {exc.reason}") from exc
        message_id = incoming.message_id or (
            f"<{hashlib.sha256(raw).hexdigest()[:40]}@import.invalid>"
        )
        existing = records.imported_copy(tx, owner, arrival, message_id)
        if existing is not None:
            items.append((existing, "duplicate"))
            counts["duplicate"] += 1
            continue
        dropped = [(p.content_type, p.filename, p.size) for p in incoming.parts if p.keep]
        row = records.NewRow(
            folder=folder,
            arrival=arrival,
            message_id=message_id,
            sender=incoming.sender or "",
            to=incoming.to,
            cc=incoming.cc,
            subject=incoming.subject,
            date=incoming.date,
            body=incoming.body,
            seen=seen,
            flagged=flagged,
            answered=answered,
            origin=ORIGIN,
            record=imported_record(at, folder, dropped),
            imported=now,
            in_reply_to=incoming.in_reply_to or "",
            references=incoming.references,
        )
        used += row.size
        if quota > 0 and used > quota:
            raise QuotaExceeded(
                f"mailbox quota of {quota} bytes: message {index} of the request "
                "does not fit (nothing of this request was imported)"
            )
        items.append((records.insert(tx, owner, row), "imported"))
        counts["imported"] += 1
    element(result, "Imported", str(counts["imported"]))
    element(result, "Duplicates", str(counts["duplicate"]))
    for public_id, outcome in items:
        item = element(result, "Item")
        element(item, "Id", public_id)
        element(item, "Outcome", outcome)
    return result


OPERATIONS = {"ImportMessages": import_messages}
