"""In charge of the rules for automatic replies (RFC 3834, RFC 5230 §4.5), shared by the
vacation responder and auto-responder addresses: never to automatic mail (Auto-Submitted
other than "no"), list or bulk mail (Precedence bulk / list / junk, List-Id, from the SMTP
gateway), a mailer-daemon or list robot, nor to oneself; and the reply itself, a real
message from the responding address carrying `Auto-Submitted: auto-replied`, so a second
responder never answers it (no loop between two of them)."""

from __future__ import annotations

from wsemail.protocol.message import Message
from wsemail.server.mapping import dispatch, server_message
from wsemail.server.pipeline import Environment

AUTO_REPLIED = ("Auto-Submitted", "auto-replied")
_ROBOTS = ("mailer-daemon", "postmaster", "listserv", "majordomo", "owner-", "noreply", "no-reply")


def refusal(message: Message, responder: str) -> str | None:
    """Why `message` gets no automatic reply from `responder`, or None if it may get one."""
    sender = message.sender.lower()
    if not sender or sender == responder.lower():
        return "from the responder itself"
    local = sender.partition("@")[0]
    if local.startswith(_ROBOTS) or local.endswith("-request"):
        return f"from a robot address ({sender})"
    if any(v.strip().lower() != "no" for v in message.header("Auto-Submitted")):
        return "automatic mail (Auto-Submitted)"
    if any(v.strip().lower() in ("bulk", "list", "junk") for v in message.header("Precedence")):
        return "bulk or list mail (Precedence)"
    if message.header("List-Id"):
        return "list mail (List-Id)"
    return None


def reply(message: Message, responder: str, subject: str, body: str, env: Environment) -> None:
    """Send the automatic reply from `responder` to the message's sender."""
    answer = server_message(
        env,
        responder,
        [message.sender],
        subject or f"Auto: {message.subject}",
        body,
        [AUTO_REPLIED],
    )
    dispatch(answer, [message.sender], env)
