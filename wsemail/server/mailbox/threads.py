"""Conversations: the operations ListThreads and GetThread (registered in
server/operations.py `AUTHENTICATED`).

A conversation is a set of copies in one mailbox linked by message ids: a copy's own
MessageId, its InReplyTo and its References. The links are kept by the store itself
(`Tx.add_message`; a trigger of schema.py migration 8 for rows written another way), so
a reply that arrives before the message it answers joins it when that one arrives, and a
copy that links two conversations merges them. There is no grouping by subject: two strangers'
"Hello" stay apart, and nobody joins a conversation without naming one of its ids.
For relayed mail the ids come from the signed form the sending server signed (a relay
cannot re-thread a message).

ListThreads: the conversations with a copy in a folder, the one whose newest copy in that
folder is newest first (a reply of one's own, in `sent`, does not move a conversation up
the inbox), each with its size, its unread count and its newest headers from every
folder but Trash (from Trash only, when listing Trash). GetThread: the whole conversation
of one copy, oldest first, as Retrieve answers each copy; Trash is left out unless the
copy named is in Trash. Another user's id is answered as a missing one (NotFound).
"""

from __future__ import annotations

from collections.abc import Callable

from lxml import etree

from wsemail.protocol.errors import NotFound, RequestInvalid
from wsemail.protocol.soap import element, from_text, int_of, q, text_of
from wsemail.server.mailbox import records, retrieval
from wsemail.server.mailbox.names import TRASH
from wsemail.server.mailbox.operations import folder_named
from wsemail.server.pipeline import Environment

MAX_THREADS = 100  # conversations per ListThreads page
HEADERS_PER_THREAD = 20  # the newest of each conversation in a listing
MAX_MESSAGES = 200  # copies per GetThread page
PAGE_BYTES = 16 << 20  # a GetThread page stops growing past this many bytes of bodies
_BOOL = {"true": True, "1": True, "false": False, "0": False}


def _flag(op: etree._Element, name: str) -> bool:
    raw = (text_of(op, name) or "false").strip().lower()
    if raw not in _BOOL:
        raise RequestInvalid(f"{name} must be true or false")
    return _BOOL[raw]


def _cursor(op: etree._Element) -> int | None:
    raw = text_of(op, "Cursor")
    if raw is None or not raw.strip():
        return None
    return int_of(op, "Cursor", 1, 2**62, 0)


def list_threads(env: Environment, op: etree._Element) -> etree._Element:
    folder = folder_named(env, text_of(op, "Folder") or "inbox")
    limit = int_of(op, "Limit", 1, MAX_THREADS, 20)
    before = _cursor(op)
    unread = _flag(op, "UnreadOnly")
    page = records.newest_threads(env.tx, env.principal, folder, limit + 1, before, unread)
    shown = page[:limit]
    found = records.conversations(
        env.tx, env.principal, [t for t, _ in shown], folder == TRASH, HEADERS_PER_THREAD
    )
    parts: list[str] = []
    for thread, _ in shown:
        conversation = found.get(thread)
        if conversation is None:  # not possible in one transaction; never an empty Thread
            continue
        parts.append(
            f"<Thread><Count>{conversation.count}</Count><Unread>{conversation.unread}</Unread>"
        )
        parts += [header.xml_text() for header in conversation.headers]
        parts.append("</Thread>")
    if len(page) > limit:
        parts.append(f"<NextCursor>{shown[-1][1]}</NextCursor>")
    return from_text("ListThreadsResponse", "".join(parts))


def get_thread(env: Environment, op: etree._Element) -> etree._Element:
    public_id = (text_of(op, "Id") or "").strip()
    if not public_id or len(public_id) > 64:
        raise RequestInvalid("a message Id is required")
    found = records.thread_of(env.tx, env.principal, public_id)
    if found is None:
        raise NotFound("no such message")
    thread, folder = found
    limit = int_of(op, "Limit", 1, MAX_MESSAGES, 50)
    after = _cursor(op)
    peek = _flag(op, "Peek")
    trash = folder == TRASH
    rows = records.thread_messages(env.tx, env.principal, thread, trash, after, limit + 1)
    result = etree.Element(q("GetThreadResponse"))
    element(result, "Count", str(records.thread_size(env.tx, env.principal, thread, trash)))
    shown: list[int] = []
    size = 0
    for seq, message in rows[:limit]:
        if shown and size + message.size > PAGE_BYTES:
            break
        size += message.size
        shown.append(seq)
        if not peek:
            message.seen = True
        retrieval.for_reader(env.tx, message).to_xml(result)
    if not peek:
        records.mark_seen(env.tx, env.principal, shown)
    if len(shown) < len(rows):
        element(result, "NextCursor", str(shown[-1]))
    return result


OPERATIONS: dict[str, Callable[[Environment, etree._Element], etree._Element]] = {
    "ListThreads": list_threads,
    "GetThread": get_thread,
}
