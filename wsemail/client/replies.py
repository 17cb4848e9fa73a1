"""In charge of answering a message and passing it on: reply (to the sender, or with
`to_all` to everyone on it), and forward (with its attachments), each placed in its
conversation by In-Reply-To and References.

    with Client(url, "bob@b.test", password, trust_roots=[root]) as client:
        reply(client, message_id, "Yes, see you there.")
        forward(client, message_id, ["carol@b.test"], "FYI")

Both start from the original as its VERIFIED signed form says (`Client.verify`): a message
whose signature check failed is neither quoted nor answered (SignatureInvalid), and an end-
to-end encrypted one is refused (quoting it would send its text unencrypted). The pure
parts (`reply_to`, `forward_of`, `Answer.body`) take a Message and need no server.

A reply goes to the sender (to the original recipients when the original is one's own),
with `to_all` to everyone else on To and Cc too (never to oneself, never to a Bcc); its
subject gets "Re: " once; its body is the text, then "On DATE, SENDER wrote:" and the
original quoted with "> "; In-Reply-To is the original's MessageId and References the
original's References plus its MessageId (at most MAX_REFERENCES: the first and the
newest); the original is marked answered (and seen) once the reply is accepted. A forward gets
"Fwd: " once, the original's headers and body below the text, References (no
In-Reply-To: it answers nobody), and the original's on-demand attachments: each is
fetched (checked against the signed SHA-256) and uploaded again to one's own server, since
an attachment's server lets only the original recipients fetch it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from wsemail.client.attachments import Attachments, safe_file_name
from wsemail.client.mail import Client, SendResult
from wsemail.protocol.errors import NotFound, SignatureInvalid, UsageError
from wsemail.protocol.message import (
    MAX_REFERENCES,
    MAX_SUBJECT,
    AttachmentRef,
    Message,
    is_message_id,
    is_sealed_body,
)

if TYPE_CHECKING:
    from wsemail.core.provenance import Provenance

REPLY_PREFIX = "Re:"
FORWARD_PREFIX = "Fwd:"
FORWARD_MARK = "---------- Forwarded message ----------"


def prefixed(prefix: str, subject: str) -> str:
    """`subject` with `prefix` in front, once: "Re: x" stays "Re: x" (any case)."""
    if subject.casefold().startswith(prefix.casefold()):
        return subject
    return f"{prefix} {subject}".strip()[:MAX_SUBJECT]


def quote(message: Message) -> str:
    """ "On DATE, SENDER wrote:" and the body, each line behind "> "."""
    lines = message.body.splitlines() or [""]
    quoted = "\n".join(f"> {line}" if line else ">" for line in lines)
    return f"On {message.date}, {message.sender} wrote:\n{quoted}\n"


def references_for(message: Message) -> list[str]:
    """What a message answering `message` names in References: its References and its
    MessageId, oldest first, each once; when too many, the first and the newest."""
    found = [r for r in dict.fromkeys([*message.references, message.message_id])]
    found = [r for r in found if is_message_id(r)]  # e.g. legacy mail's odd ids
    if len(found) > MAX_REFERENCES:
        found = [found[0], *found[-(MAX_REFERENCES - 1) :]]
    return found


@dataclass(frozen=True)
class Answer:
    """A reply or a forward, ready to send once its text is known."""

    original: Message
    to: list[str]
    cc: list[str]
    subject: str
    below: str  # what follows the text: the quote, or the forwarded message
    in_reply_to: str | None
    references: list[str]
    attachments: list[AttachmentRef] = field(default_factory=list)

    def body(self, text: str) -> str:
        """The whole body: `text`, a blank line, then the quote / forwarded message."""
        text = text.rstrip()
        return f"{text}\n\n{self.below}" if text else self.below


def reply_to(message: Message, me: str, *, to_all: bool = False) -> Answer:
    """The reply to `message` (a pure function: see the module doc for the rules)."""
    to = list(message.to) if message.sender == me else [message.sender]
    cc: list[str] = []
    if to_all:
        others = [a for a in [*message.to, *message.cc] if a != me and a not in to]
        cc = list(dict.fromkeys(others))
    if not to:  # one's own message to Cc only
        to, cc = cc[:1] or list(message.cc[:1]), cc[1:]
    in_reply_to = message.message_id if is_message_id(message.message_id) else None
    return Answer(
        original=message,
        to=to,
        cc=cc,
        subject=prefixed(REPLY_PREFIX, message.subject),
        below=quote(message),
        in_reply_to=in_reply_to,
        references=references_for(message),
    )


def forward_of(message: Message, attachments: list[AttachmentRef] | None = None) -> Answer:
    """The forward of `message`, without recipients yet (never naming its Bcc), carrying
    `attachments` (default: the message's own references)."""
    lines = [
        FORWARD_MARK,
        f"From: {message.sender}",
        f"Date: {message.date}",
        f"Subject: {message.subject}",
        f"To: {', '.join(message.to)}",
    ]
    if message.cc:
        lines.append(f"Cc: {', '.join(message.cc)}")
    return Answer(
        original=message,
        to=[],
        cc=[],
        subject=prefixed(FORWARD_PREFIX, message.subject),
        below="\n".join(lines) + "\n\n" + message.body,
        in_reply_to=None,
        references=references_for(message),
        attachments=list(message.attachments if attachments is None else attachments),
    )


def original(client: Client, message_id: str) -> tuple[Provenance, Message]:
    """The message to answer, as its verified signed form says (not marked seen). Raises
    NotFound (also for another user's id), SignatureInvalid when its signature check
    failed, UsageError when it is end-to-end encrypted."""
    proof, message = client.verify(client.retrieve(message_id, peek=True))
    if proof.status == "failed":
        raise SignatureInvalid(
            f"will not answer {message_id}: its signature check FAILED ({proof.reason})"
        )
    if is_sealed_body(message.body):
        raise UsageError(
            f"{message_id} is end-to-end encrypted: answering it here would quote or forward "
            "its text unencrypted"
        )
    return proof, message


def attachments_of(
    client: Client, message_id: str, proof: Provenance, message: Message
) -> list[AttachmentRef]:
    """The on-demand attachments of a message to forward: for mail from another domain the
    references its verified signed form carries, each on the server of the domain that
    signed it; for mail of one's own domain, what one's own server lists for it."""
    if message.signed_xml is None:
        return Attachments(client).list(message_id, peek=True).refs
    if message.attachments and proof.status != "verified":
        raise SignatureInvalid(f"attachment references cannot be trusted: {proof}")
    for ref in message.attachments:
        if ref.server != proof.signer:
            raise SignatureInvalid(f"{proof.signer} signed a reference to {ref.server}")
    return list(message.attachments)


def send_reply(
    client: Client, answer: Answer, body: str, *, bcc: list[str] | None = None
) -> SendResult:
    """Send `answer` with this whole `body` (see `Answer.body`) and mark the original
    answered (and seen: it was answered, so it was read)."""
    result = client.send(
        answer.to,
        answer.subject,
        body,
        cc=answer.cc,
        bcc=bcc,
        in_reply_to=answer.in_reply_to,
        references=answer.references,
    )
    try:
        client.set_flags([answer.original.id], answered=True, seen=True)
    except NotFound:
        pass  # deleted for good meanwhile: the reply went all the same
    return result


Progress = Callable[[int, int], None]


def send_forward(
    client: Client,
    answer: Answer,
    to: list[str],
    body: str,
    *,
    cc: list[str] | None = None,
    bcc: list[str] | None = None,
    progress: Callable[[AttachmentRef], Progress | None] | None = None,
) -> SendResult:
    """Send the forward `answer` to `to` with this whole `body`, its attachments (see
    `attachments_of`) fetched, checked against their signed SHA-256 and uploaded again.
    `progress(ref)` may give a callback for each transfer."""
    if not to:
        raise UsageError("no recipient: give --to (repeatable)")
    uploads: list[str] = []
    if answer.attachments:
        box = Attachments(client)
        with tempfile.TemporaryDirectory(prefix="wsemail-forward-") as folder:
            for n, ref in enumerate(answer.attachments):
                path = Path(folder) / f"{n}-{safe_file_name(ref.name)}"
                callback = progress(ref) if progress is not None else None
                box.fetch(ref, path, progress=callback)
                uploaded = box.upload(path, name=ref.name, media_type=ref.media_type)
                path.unlink()
                uploads.append(uploaded.guid)
    return client.send(
        to,
        answer.subject,
        body,
        cc=cc,
        bcc=bcc,
        attachments=uploads,
        references=answer.references,
    )


def reply(
    client: Client,
    message_id: str,
    text: str,
    *,
    to_all: bool = False,
    bcc: list[str] | None = None,
) -> SendResult:
    """Reply to one of your messages: `text` above the quoted original."""
    _, message = original(client, message_id)
    answer = reply_to(message, client.username, to_all=to_all)
    return send_reply(client, answer, answer.body(text), bcc=bcc)


def forward(
    client: Client,
    message_id: str,
    to: list[str],
    text: str = "",
    *,
    cc: list[str] | None = None,
    bcc: list[str] | None = None,
) -> SendResult:
    """Forward one of your messages, attachments included, with `text` above it."""
    proof, message = original(client, message_id)
    answer = forward_of(message, attachments_of(client, message_id, proof, message))
    return send_forward(client, answer, to, answer.body(text), cc=cc, bcc=bcc)
