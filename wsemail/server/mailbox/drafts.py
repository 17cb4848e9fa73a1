"""Drafts kept on the server, in the owner's Drafts folder (registered in
server/operations.py `AUTHENTICATED`):

    SaveDraft    a new draft, or (with Id) the draft replaced; a retried first save (same
                 MessageId) replaces the draft it made instead of making another
    GetDraft     one draft, whole          ListDrafts   the drafts, newest first
    DeleteDraft  a draft, for good         SendDraft    the draft becomes a real Send

A draft is a row of the owner's mailbox (searchable by the owner only, counted in the
quota like other mail) that is nobody's signed mail: its provenance record says "draft", it
is never queued or relayed. SendDraft runs the ordinary Send (sending processors, the sent
copy, local delivery, the queue) with the draft's MessageId and deletes the draft in the
same unit of work: both happen or neither does. A reply's draft carries InReplyTo and
References: the sent message joins the conversation and the owner's copies of the message
it answers are marked answered (and seen) in that unit of work too. The sent copy keeps
the draft's id, so a SendDraft retried after a lost answer is answered with the first
result, sent once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from lxml import etree

from wsemail.core.provenance import DRAFT_RECORD
from wsemail.protocol.drafts import SavedDraft
from wsemail.protocol.errors import NotFound, RequestInvalid
from wsemail.protocol.message import Draft, new_message_id
from wsemail.protocol.soap import element, int_of, q, text_of
from wsemail.server.mailbox import records
from wsemail.server.mailbox.limits import check_quota, check_size
from wsemail.server.mailbox.names import DRAFTS
from wsemail.server.pipeline import Environment

Operation = Callable[[Environment, etree._Element], etree._Element]
MAX_PAGE = 500


def _now(env: Environment) -> str:
    return datetime.fromtimestamp(env.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _id(op: etree._Element) -> str:
    value = (text_of(op, "Id") or "").strip()
    if not value or len(value) > 64:
        raise RequestInvalid("a draft Id is required")
    return value


def _own_draft(env: Environment, public_id: str) -> tuple[str, SavedDraft]:
    found = records.draft(env.tx, env.principal, public_id)
    if found is None:
        raise NotFound("no such draft")
    return found


def save_draft(env: Environment, op: etree._Element) -> etree._Element:
    new = SavedDraft.from_xml(op.find(q("Draft")))
    public_id = _id(op) if (text_of(op, "Id") or "").strip() else ""
    saved = _now(env)
    size = len(new.body.encode()) + len(new.subject.encode())
    check_size(env, size)
    tx, owner = env.tx, env.principal
    if not public_id and new.message_id:  # the client retried a first save
        public_id = records.draft_by_message_id(tx, owner, new.message_id) or ""
    if public_id:
        old = _own_draft(env, public_id)[1]
        check_quota(env, size - old.size)
        records.replace_draft(tx, owner, public_id, new, saved)
        message_id = old.message_id
    else:
        check_quota(env, size)
        message_id = new.message_id or new_message_id(env.domain)
        row = records.NewRow(
            folder=DRAFTS,
            arrival=DRAFTS,
            message_id=message_id,
            sender=owner,
            to=new.to,
            cc=new.cc,
            subject=new.subject,
            date=saved,
            body=new.body,
            record=DRAFT_RECORD,
            draft=records.draft_json(new),
        )
        public_id = records.insert(tx, owner, row)
    result = etree.Element(q("SaveDraftResponse"))
    element(result, "Id", public_id)
    element(result, "MessageId", message_id or "")
    element(result, "Saved", saved)
    return result


def get_draft(env: Environment, op: etree._Element) -> etree._Element:
    folder, found = _own_draft(env, _id(op))
    result = etree.Element(q("GetDraftResponse"))
    found.to_xml(result).set("Folder", folder)
    return result


def list_drafts(env: Environment, op: etree._Element) -> etree._Element:
    limit = int_of(op, "Limit", 1, MAX_PAGE, 50)
    cursor = int_of(op, "Cursor", 1, 2**62, 0) or None
    rows = records.drafts(env.tx, env.principal, limit + 1, cursor)
    result = etree.Element(q("ListDraftsResponse"))
    for _, found in rows[:limit]:
        found.to_xml(result, body=False)
    if len(rows) > limit:
        element(result, "NextCursor", str(rows[limit - 1][0]))
    return result


def delete_draft(env: Environment, op: etree._Element) -> etree._Element:
    public_id = _id(op)
    _own_draft(env, public_id)
    env.tx.delete_message(env.principal, public_id)
    result = etree.Element(q("DeleteDraftResponse"))
    element(result, "Id", public_id)
    return result


def _send_request(found: SavedDraft) -> etree._Element:
    """The Send request a draft stands for (its MessageId included: sent once)."""
    request = etree.Element(q("Send"))
    message = Draft(
        to=found.to,
        cc=found.cc,
        subject=found.subject,
        body=found.body,
        message_id=found.message_id,
        attachments=found.attachments,
        instant=found.instant,
        delete_if_undeliverable=found.delete_if_undeliverable,
        in_reply_to=found.in_reply_to,
        references=found.references,
    ).to_xml(request)
    for address in found.bcc:
        element(message, "Bcc", address)
    return request


def _bcc_supported(request: etree._Element) -> bool:
    """Whether this server's Send reads Bcc (the message format grew it later)."""
    read = Draft.from_xml(request.find(q("Message")))
    return bool(getattr(read, "bcc", None))


def send_draft(env: Environment, op: etree._Element, submit: Operation) -> etree._Element:
    """`submit` is the core Send operation (passed in: it lives above this module)."""
    public_id = _id(op)
    result = etree.Element(q("SendDraftResponse"))
    found = records.draft(env.tx, env.principal, public_id)
    if found is None:
        sent = records.sent_from_draft(env.tx, env.principal, public_id)
        if sent is None:
            raise NotFound("no such draft")
        element(result, "Id", public_id)  # sent already: a retry after a lost answer
        element(result, "MessageId", sent)
        return result
    folder, draft = found
    if folder != DRAFTS:
        raise RequestInvalid(f"that draft is in {folder}: move it back to {DRAFTS} to send it")
    if not draft.recipients:
        raise RequestInvalid("the draft has no recipient yet")
    request = _send_request(draft)
    if draft.bcc and not _bcc_supported(request):
        raise RequestInvalid("this server cannot send Bcc yet: move the addresses to To or Cc")
    extra = records.draft_json(draft)
    env.tx.delete_message(env.principal, public_id)
    answer = submit(replace(env, request=request), request)
    records.adopt_draft(env.tx, env.principal, text_of(answer, "Id", "") or "", public_id, extra)
    if draft.in_reply_to:  # a reply: what it answers is marked answered, in the same step
        records.mark_answered(env.tx, env.principal, draft.in_reply_to)
    element(result, "Id", public_id)
    element(result, "MessageId", text_of(answer, "MessageId", "") or "")
    return result


def operations(submit: Operation) -> dict[str, Operation]:
    """The draft operations, SendDraft bound to the core Send `submit`."""
    return {
        "SaveDraft": save_draft,
        "GetDraft": get_draft,
        "ListDrafts": list_drafts,
        "DeleteDraft": delete_draft,
        "SendDraft": lambda env, op: send_draft(env, op, submit),
    }
