"""In charge of the compose screen's draft on the server: saved every few seconds while the
text changes and when the app quits, sent with SendDraft (so it leaves Drafts in the same
step; a reply's draft names its conversation, and the server marks what it answers
answered), or discarded. Pure Python (no Textual): the screen calls it from its thread workers;
one lock keeps an autosave and a send from racing (a second draft, or a draft left behind).

A message being written for Send encrypted is not saved: the server would read its text."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from wsemail.client.mail import Client, SendResult

if TYPE_CHECKING:
    from wsemail.protocol.drafts import SavedDraft

AUTOSAVE_SECONDS = 5.0  # how often a changed draft is saved while one types (the app reads
# it at start, so the drafts modules are imported when a compose screen first keeps a draft)


@dataclass(frozen=True)
class Content:
    """What the user typed, as typed (addresses unparsed)."""

    to: str
    cc: str
    subject: str
    body: str


class DraftKeeper:
    """The draft behind one compose screen: `saved` is None until the first save."""

    def __init__(
        self,
        client: Client,
        start: Content,
        saved: SavedDraft | None = None,
        *,
        thread: SavedDraft | None = None,
    ) -> None:
        """`thread`: a reply's In-Reply-To and References, kept in the draft it saves."""
        from wsemail.client.drafts import Drafts
        from wsemail.protocol.drafts import SavedDraft

        self.drafts = Drafts(client)
        self.saved = saved
        self.base = thread or SavedDraft()
        self.last = start  # the content the server holds (or the screen opened with)
        self._lock = threading.Lock()

    @property
    def draft_id(self) -> str | None:
        return self.saved.id if self.saved is not None else None

    def changed(self, content: Content) -> bool:
        return content != self.last

    def _draft(self, to: list[str], cc: list[str], content: Content) -> SavedDraft:
        """The draft to save: the saved one's Bcc, attachments, flags and thread kept."""
        base = self.saved or self.base
        return replace(base, to=to, cc=cc, subject=content.subject, body=content.body)

    def save(self, to: list[str], cc: list[str], content: Content) -> SavedDraft | None:
        """Blocking: save `content` unless the server has it already; the draft as saved."""
        with self._lock:
            if not self.changed(content) and self.saved is not None:
                return None
            saved = self.drafts.save(self._draft(to, cc, content), draft_id=self.draft_id)
            self.saved, self.last = saved, content
            return saved

    def send(
        self,
        to: list[str],
        cc: list[str],
        content: Content,
        attachments: list[str],
        *,
        instant: bool = False,
        delete_if_undeliverable: bool = False,
    ) -> SendResult | None:
        """Blocking: with a draft on the server, save the final text into it and send it
        (it leaves Drafts as it is sent); None when there is no draft (send as usual)."""
        with self._lock:
            if self.saved is None:
                return None
            draft = replace(
                self._draft(to, cc, content),
                attachments=[*self.saved.attachments, *attachments],
                instant=instant,
                delete_if_undeliverable=delete_if_undeliverable,
            )
            saved = self.drafts.save(draft, draft_id=self.saved.id)
            result = self.drafts.send(saved.id)
            self.saved = None
            return result

    def discard(self) -> None:
        """Blocking: delete the draft on the server, if there is one."""
        with self._lock:
            if self.saved is not None:
                self.drafts.delete(self.saved.id)
                self.saved = None
