"""In charge of the drafts the compose screen starts from: new, reply, reply-all, forward,
a draft reopened from the server's Drafts folder, and of reading the address lists a user
types. Pure Python (no Textual)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

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


def reopen(saved: SavedDraft) -> ComposeDraft:
    """The compose screen's start for a draft kept on the server."""
    return ComposeDraft(
        to=list(saved.to), cc=list(saved.cc), subject=saved.subject, body=saved.body, saved=saved
    )


def parse_addresses(text: str) -> list[str]:
    """ "a@x, b@y; c@z" → normalised addresses, each once; raises RequestInvalid."""
    found = [normalize_address(part) for part in _SEPARATORS.split(text) if part]
    return list(dict.fromkeys(found))


def _prefixed(prefix: str, subject: str) -> str:
    if subject.casefold().startswith(prefix.casefold()):
        return subject
    return f"{prefix} {subject}".strip()


def _quoted(message: Message) -> str:
    lines = message.body.splitlines() or [""]
    intro = f"On {message.date}, {message.sender} wrote:"
    return "\n\n" + intro + "\n" + "\n".join(f"> {line}" if line else ">" for line in lines)


def reply(message: Message, me: str, *, to_all: bool = False) -> ComposeDraft:
    """Reply to the sender (or, from the sent folder, to the original recipients); with
    `to_all` everyone else on To/Cc goes on Cc, except me."""
    if message.sender == me:
        to = list(message.to)
    else:
        to = [message.sender]
    cc: list[str] = []
    if to_all:
        others = [a for a in [*message.to, *message.cc] if a != me and a not in to]
        cc = list(dict.fromkeys(others))
    return ComposeDraft(
        to=to, cc=cc, subject=_prefixed("Re:", message.subject), body=_quoted(message)
    )


def forward(message: Message) -> ComposeDraft:
    header = [
        "",
        "",
        "---------- Forwarded message ----------",
        f"From: {message.sender}",
        f"Date: {message.date}",
        f"Subject: {message.subject}",
        f"To: {', '.join(message.to)}",
    ]
    if message.cc:
        header.append(f"Cc: {', '.join(message.cc)}")
    return ComposeDraft(
        subject=_prefixed("Fwd:", message.subject),
        body="\n".join(header) + "\n\n" + message.body,
    )
