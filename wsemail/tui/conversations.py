"""In charge of what the inbox shows in its conversations view (`t`): the conversations of
a folder as far as they have been paged in (ListThreads), which of them are expanded, and
the table rows that make: one row per conversation (its subject, how many messages, unread
if any is), and under an expanded one its messages, oldest first, so a conversation's
replies stay together.

Rows are MessageHeaders, so the header table shows them as it shows a folder: a
conversation's row is keyed by THREAD_KEY + the id of its newest message. Pure Python (no
Textual), so it is tested without a terminal.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from wsemail.client.mail import Conversation, ThreadPage
from wsemail.protocol.message import Message, MessageHeader

THREAD_KEY = "thread:"
COLLAPSED, EXPANDED = "▸", "▾"
CHILD = "  ↳ "


def thread_key(conversation: Conversation) -> str:
    return THREAD_KEY + conversation.latest.id


def is_thread_key(key: str) -> bool:
    return key.startswith(THREAD_KEY)


@dataclass
class Conversations:
    """One folder's conversations, newest first."""

    folder: str = "inbox"
    threads: list[Conversation] = field(default_factory=list)
    next_cursor: str | None = None
    loaded: bool = False
    expanded: set[str] = field(default_factory=set)  # thread keys
    # the whole conversation, fetched when the listing holds only its newest messages
    whole: dict[str, list[MessageHeader]] = field(default_factory=dict)

    @property
    def more(self) -> bool:
        return not self.loaded or self.next_cursor is not None

    def add_page(self, page: ThreadPage) -> list[Conversation]:
        known = {thread_key(c) for c in self.threads}
        fresh = [c for c in page.threads if c.headers and thread_key(c) not in known]
        self.threads.extend(fresh)
        self.next_cursor = page.next_cursor
        self.loaded = True
        return fresh

    def find(self, key: str) -> Conversation | None:
        return next((c for c in self.threads if thread_key(c) == key), None)

    def messages(self, key: str) -> list[MessageHeader]:
        """The messages of a conversation: all of them when fetched, else the listing's."""
        found = self.find(key)
        if found is None:
            return []
        return self.whole.get(key, found.headers)

    def toggle(self, key: str) -> bool:
        """Expand or collapse a conversation; True when it is expanded now."""
        if key in self.expanded:
            self.expanded.discard(key)
            return False
        if self.find(key) is None:
            return False
        self.expanded.add(key)
        return True

    def incomplete(self, key: str) -> bool:
        """The listing holds only the newest of its messages (and they were not fetched)."""
        found = self.find(key)
        return found is not None and key not in self.whole and found.count > len(found.headers)

    def get(self, message_id: str) -> MessageHeader | None:
        for conversation in self.threads:
            for header in self.whole.get(thread_key(conversation), conversation.headers):
                if header.id == message_id:
                    return header
        return None

    def mark_seen(self, message_id: str) -> None:
        header = self.get(message_id)
        if header is not None:
            header.seen = True

    def remove(self, message_id: str) -> None:
        """Forget a deleted message (a conversation left with none goes)."""
        kept: list[Conversation] = []
        for conversation in self.threads:
            key = thread_key(conversation)
            headers = [h for h in conversation.headers if h.id != message_id]
            if key in self.whole:
                self.whole[key] = [h for h in self.whole[key] if h.id != message_id]
            if len(headers) == len(conversation.headers):
                kept.append(conversation)
            elif headers:
                gone = Conversation(conversation.count - 1, conversation.unread, headers)
                if key in self.expanded:
                    self.expanded.add(thread_key(gone))
                if key in self.whole:
                    self.whole[thread_key(gone)] = self.whole.pop(key)
                kept.append(gone)
        self.threads = kept

    def rows(self) -> list[MessageHeader]:
        """The table's rows: each conversation, and the messages of the expanded ones."""
        shown: list[MessageHeader] = []
        for conversation in self.threads:
            key = thread_key(conversation)
            messages = self.whole.get(key, conversation.headers)
            # read once every message shown is (and the server counted none unread beyond them)
            seen = all(h.seen for h in messages) and (
                conversation.unread == 0 or len(messages) >= conversation.count
            )
            open_ = key in self.expanded
            first, latest = messages[0], conversation.latest
            count = f" ({conversation.count})" if conversation.count > 1 else ""
            mark = EXPANDED if open_ else COLLAPSED
            shown.append(
                replace(
                    latest,
                    id=key,
                    subject=f"{mark} {first.subject or '(no subject)'}{count}",
                    seen=seen,
                    size=sum(h.size for h in messages),
                )
            )
            if open_:
                shown += [
                    replace(h, subject=CHILD + (h.subject or "(no subject)")) for h in messages
                ]
        return shown


def reply_order(messages: list[Message]) -> list[tuple[int, Message]]:
    """A conversation (oldest first) as (depth, message): each reply right under what it
    answers (by In-Reply-To, else the newest of its References that is here), replies to
    one message oldest first; a message answering none of them starts at depth 0."""
    by_id = {m.message_id: m for m in messages}
    children: dict[str, list[Message]] = {}
    roots: list[Message] = []
    for message in messages:
        named = [message.in_reply_to or "", *reversed(message.references)]
        parent = next((p for p in named if p in by_id and p != message.message_id), None)
        if parent is None:
            roots.append(message)
        else:
            children.setdefault(parent, []).append(message)
    ordered: list[tuple[int, Message]] = []
    seen: set[int] = set()

    def walk(message: Message, depth: int) -> None:
        if id(message) in seen:  # a loop of references: each message once
            return
        seen.add(id(message))
        ordered.append((depth, message))
        for child in children.get(message.message_id, []):
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    for message in messages:  # caught in a loop with no root: still shown
        walk(message, 0)
    return ordered
