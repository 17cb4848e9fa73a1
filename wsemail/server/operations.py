"""The client operations. Each runs inside one unit of work, after authentication, and
returns its response element; whatever it raised rolls the whole unit back.

Send is the submission step of the message path: sending processors in priority order,
one copy in the sender's `sent` folder, then for every recipient the delivery processors
and the local MTA (local domain, through its mapped addresses: `mapping.deliver_locally`)
or one queue row per destination domain (elsewhere).
Blind copies: only the sender's copy names them; every other copy, and every signed form,
is made from the message without them, and each remote Bcc recipient gets a queue row
(so a signed form) of its own that names only that recipient.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from lxml import etree

from wsemail.protocol.errors import NotFound, RequestInvalid, ServerError
from wsemail.protocol.message import Draft, Message, domain_of, new_message_id
from wsemail.protocol.soap import element, from_text, int_of, q, text_of
from wsemail.server.mailbox import drafts, importing, retrieval, threads
from wsemail.server.mailbox import operations as mailbox
from wsemail.server.mapping import deliver_locally
from wsemail.server.pipeline import Environment

__all__ = ["AUTHENTICATED", "QUICK", "deliver_locally"]

MAX_PAGE = 500


def send(env: Environment, op: etree._Element) -> etree._Element:
    draft = Draft.from_xml(op.find(q("Message")))
    tx = env.tx
    message_id = draft.message_id or new_message_id(env.domain)
    result = etree.Element(q("SendResponse"))
    existing = tx.find_copy(env.principal, "sent", env.principal, message_id)
    if existing is not None:  # the client retried after a lost answer: same result, once
        element(result, "Id", existing)
        element(result, "MessageId", message_id)
        return result
    date = datetime.fromtimestamp(env.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    message = Message(
        id="",
        message_id=message_id,
        folder="sent",
        sender=env.principal,
        to=draft.to,
        cc=draft.cc,
        subject=draft.subject,
        date=date,
        size=len(draft.body.encode()) + len(draft.subject.encode()),
        seen=True,
        body=draft.body,
        in_reply_to=draft.in_reply_to,
        references=draft.references,
        bcc=draft.bcc,
    )
    for processor in env.pipeline.sending:
        processor.process_outgoing(message, env)
    sent_id, _ = tx.add_message(env.principal, "sent", message)
    public = replace(message, bcc=[])  # what every recipient gets
    remote: list[tuple[str, list[str]]] = []
    by_domain: dict[str, list[str]] = {}
    for recipient in draft.recipients:
        domain = domain_of(recipient)
        if domain == env.domain:
            deliver_locally(public, recipient, env)
        else:
            by_domain.setdefault(domain, []).append(recipient)
    remote += sorted(by_domain.items())
    for recipient in draft.bcc:  # each alone: no signed form names another recipient
        if domain_of(recipient) == env.domain:
            deliver_locally(public, recipient, env)
        else:
            remote.append((domain_of(recipient), [recipient]))
    for domain, recipients in remote:
        if env.pipeline.queue is None:
            raise ServerError("no mail queue is loaded")
        env.pipeline.queue.enqueue(public, domain, recipients, env)
    element(result, "Id", sent_id)
    element(result, "MessageId", message_id)
    return result


def list_headers(env: Environment, op: etree._Element) -> etree._Element:
    folder = mailbox.folder_named(env, text_of(op, "Folder") or "inbox")
    limit = int_of(op, "Limit", 1, MAX_PAGE, 50)
    cursor = text_of(op, "Cursor")
    before = int_of(op, "Cursor", 1, 2**62, 0) if cursor and cursor.strip() else None
    unread = (text_of(op, "UnreadOnly") or "false").strip()
    if unread not in ("true", "false", "1", "0"):
        raise RequestInvalid("UnreadOnly must be true or false")
    rows = env.tx.list_headers(env.principal, folder, limit + 1, before, unread in ("true", "1"))
    inner = "".join(header.xml_text() for _, header in rows[:limit])
    if len(rows) > limit:
        inner += f"<NextCursor>{rows[limit - 1][0]}</NextCursor>"
    return from_text("ListHeadersResponse", inner)


def _message_id(op: etree._Element) -> str:
    value = (text_of(op, "Id") or "").strip()
    if not value or len(value) > 64:
        raise RequestInvalid("a message Id is required")
    return value


def retrieve(env: Environment, op: etree._Element) -> etree._Element:
    public_id = _message_id(op)
    message = env.tx.get_message(env.principal, public_id)
    if message is None:
        raise NotFound("no such message")
    peek = (text_of(op, "Peek") or "false").strip()
    if peek not in ("true", "false", "1", "0"):
        raise RequestInvalid("Peek must be true or false")
    if peek in ("false", "0"):
        env.tx.mark_seen(env.principal, public_id)
        message.seen = True
    result = etree.Element(q("RetrieveResponse"))
    retrieval.for_reader(env.tx, message).to_xml(result)  # relayed: compact provenance
    return result


def get_certificate(env: Environment, op: etree._Element) -> etree._Element:
    """A server certificate this server verified when it accepted relayed mail, by the
    SHA-256 of its DER (what a compact provenance's dsig11:X509Digest names)."""
    try:
        digest = base64.b64decode((text_of(op, "Digest") or "").strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestInvalid("Digest must be base64") from exc
    if len(digest) != 32:
        raise RequestInvalid("Digest must be a SHA-256 digest (32 bytes)")
    der = env.tx.certificate(digest)
    if der is None:
        raise NotFound("no certificate with this digest")
    result = etree.Element(q("GetCertificateResponse"))
    element(result, "Certificate", base64.b64encode(der).decode("ascii"))
    return result


def delete(env: Environment, op: etree._Element) -> etree._Element:
    """Into Trash; a delete in Trash is final."""
    public_id = _message_id(op)
    outcome = mailbox.trash(env, public_id, env.trash_after)
    result = etree.Element(q("DeleteResponse"))
    element(result, "Id", public_id)
    element(result, "Outcome", outcome)
    return result


def extension(env: Environment, op: etree._Element) -> etree._Element:
    extension_id = (text_of(op, "ExtensionId") or "").strip()
    processor = env.pipeline.extensions.get(extension_id)
    if processor is None:
        raise NotFound(f"no extension {extension_id!r} is loaded")
    payload = op.find(q("Payload"))
    if payload is None:
        raise RequestInvalid("Extension needs a Payload")
    answer = processor.handle(payload, env)
    result = etree.Element(q("ExtensionResponse"))
    out = element(result, "Payload")
    if answer is not None:
        out.append(answer)
    return result


AUTHENTICATED: dict[str, Callable[[Environment, etree._Element], etree._Element]] = {
    "Send": send,
    "ListHeaders": list_headers,
    "Retrieve": retrieve,
    "Delete": delete,
    "Extension": extension,
    "GetCertificate": get_certificate,
    **mailbox.OPERATIONS,
    **drafts.operations(send),
    **importing.OPERATIONS,
    **threads.OPERATIONS,
}

# the operations whose unit of work is a few statements on one mailbox's rows (a page of
# at most MAX_PAGE, a message, its copies — a send reaches at most MAX_RECIPIENTS): run on
# the event loop with the others of its turn (see BatchStore.transact). Not here: a
# search, a folder renamed or deleted whole, an import, a plug-in's extension — they may
# take long, and run in the writer thread
QUICK = frozenset(
    {
        "Send",
        "ListHeaders",
        "Retrieve",
        "Delete",
        "GetCertificate",
        "ListFolders",
        "CreateFolder",
        "Move",
        "SetFlags",
        "ListThreads",
        "GetThread",
        "SaveDraft",
        "GetDraft",
        "ListDrafts",
        "DeleteDraft",
        "SendDraft",
    }
)
