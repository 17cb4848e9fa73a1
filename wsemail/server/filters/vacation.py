"""The vacation responder (RFC 5230 semantics): while on (and before `until`), a message
addressed to the user (in To or Cc) from a sender who got no reply in the last `days` days
gets one, unless `autoreply.refusal` says it is automatic, list or bulk mail or the user's
own. The reply is real mail from the user's address, signed by this server when it leaves
the domain, with `Auto-Submitted: auto-replied`."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time

from wsemail.protocol.errors import RequestInvalid
from wsemail.protocol.message import MAX_SUBJECT, Message
from wsemail.server import autoreply
from wsemail.server.filters import records
from wsemail.server.pipeline import Environment

log = logging.getLogger("wsemail.filters.vacation")
MAX_BODY = 16 << 10
MAX_DAYS = 365
DAY = 86400.0


def settings(subject: str, body: str, until: str | None, days: int, now: float) -> records.Vacation:
    """Checked settings, or RequestInvalid."""
    subject = subject.strip()
    if len(subject) > MAX_SUBJECT or "\n" in subject or "\r" in subject:
        raise RequestInvalid("the vacation subject must be one line of at most 998 characters")
    if not body.strip():
        raise RequestInvalid("the vacation reply needs a body")
    if len(body.encode()) > MAX_BODY:
        raise RequestInvalid(f"the vacation body is at most {MAX_BODY} bytes")
    if not 1 <= days <= MAX_DAYS:
        raise RequestInvalid(f"days must be between 1 and {MAX_DAYS}")
    end = None
    if until:
        try:
            day = date.fromisoformat(until.strip())
        except ValueError as exc:
            raise RequestInvalid(f"until must be a date YYYY-MM-DD, not {until[:40]!r}") from exc
        end = datetime.combine(day, time.max, UTC).timestamp()  # to the end of that day
        if end <= now:
            raise RequestInvalid(f"until {day} is in the past")
    return records.Vacation(subject, body, end, days)


def respond(message: Message, recipient: str, found: records.Vacation, env: Environment) -> None:
    """Answer `message` for `recipient`, whose responder `found` is on, if the rules let it."""
    now = env.clock()
    if found.until is not None and now > found.until:
        return
    why = autoreply.refusal(message, recipient)
    if why is None and recipient.lower() not in [a.lower() for a in (*message.to, *message.cc)]:
        why = "not addressed to the user in To or Cc"
    if why is not None:
        log.info("vacation of %s does not answer %s: %s", recipient, message.sender, why)
        return
    last = records.replied_at(env.tx, recipient, message.sender)
    if last is not None and now - last < found.days * DAY:
        return
    records.note_reply(env.tx, recipient, message.sender, now)
    subject = found.subject or f"Auto: {message.subject}"
    autoreply.reply(message, recipient, subject, found.body, env)
