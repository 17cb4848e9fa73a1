"""In charge of the drafts the compose screen starts from: new, reply, reply-all, forward,
a draft reopened from the server's Drafts folder, and of reading the address lists a user
types. Replies and forwards come from `wsemail.client.replies` (quoting, In-Reply-To,
References), as `wsemail reply` makes them. Pure Python (no Textual)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from wsemail.client.replies import Answer, forward_of, reply_to
from wsemail.protocol.drafts import SavedDraft
from wsemail.protocol.message import Message, normalize_address

_SEPARATORS = re.compile(r"[,;\s]+")


@dataclass
class ComposeDraft:
    """What the compose screen opens with; addresses as the user sees them. `saved` is the
    draft on the server it continues (reopened from Drafts), if any."""

    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    subject: str = ""
    body: str = ""
    saved: SavedDraft | None = None
    in_reply_to: str | None = None  # a reply's conversation (see wsemail.client.replies)
    references: list[str] = field(default_factory=list)
    answers: str | None = None  # the id of the message a reply answers (flagged when sent)


def reopen(saved: SavedDraft) -> ComposeDraft:
    """The compose screen's start for a draft kept on the server."""
    return ComposeDraft(
        to=list(saved.to),
        cc=list(saved.cc),
        subject=saved.subject,
        body=saved.body,
        saved=saved,
        in_reply_to=saved.in_reply_to,
        references=list(saved.references),
    )


def parse_addresses(text: str) -> list[str]:
    """ "a@x, b@y; c@z" → normalised addresses, each once; raises RequestInvalid."""
    found = [normalize_address(part) for part in _SEPARATORS.split(text) if part]
    return list(dict.fromkeys(found))


def _answer(answer: Answer, answers: str | None = None) -> ComposeDraft:
    """The compose screen's start for a reply or forward: the text goes above `below`."""
    return ComposeDraft(
        to=list(answer.to),
        cc=list(answer.cc),
        subject=answer.subject,
        body="\n\n" + answer.below,
        in_reply_to=answer.in_reply_to,
        references=list(answer.references),
        answers=answers,
    )


def reply(message: Message, me: str, *, to_all: bool = False) -> ComposeDraft:
    """Reply to the sender (or, from the sent folder, to the original recipients); with
    `to_all` everyone else on To/Cc goes on Cc, except me. It names the conversation
    (`wsemail.client.replies.reply_to`), and sending it marks `message` answered."""
    return _answer(reply_to(message, me, to_all=to_all), answers=message.id or None)


def forward(message: Message) -> ComposeDraft:
    """Forward the text (References kept; the attachments are not carried here)."""
    return _answer(forward_of(message, attachments=[]))
