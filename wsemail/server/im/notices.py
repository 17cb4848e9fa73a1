"""In charge of telling a sender that an instant message was dropped ("delete if
undeliverable" and no listener took it): a local sender gets a notice in the inbox and a
live push; another domain's sender a notice mail from this domain's mailer-daemon, relayed
and signed like any mail from here. Never about a mailer-daemon's own message."""

from __future__ import annotations

from datetime import UTC, datetime

from wsemail.protocol.message import Message, domain_of, new_message_id
from wsemail.server.im.hub import Hub, event
from wsemail.server.pipeline import Environment
from wsemail.server.relay import MAILER_DAEMON


def undeliverable(env: Environment, message: Message, recipient: str, hub: Hub) -> None:
    """Tell the sender that an instant message was dropped: a local one by `notice`,
    another domain's by a notice mail from this domain's mailer-daemon (relayed, signed
    by this server like any mail from here); never about a mailer-daemon's message."""
    if domain_of(message.sender) == env.domain:
        notice(env, message, recipient, hub)
        return
    if message.sender.startswith(f"{MAILER_DAEMON}@") or env.pipeline.queue is None:
        return
    notice_mail = _notice_message(env, message, recipient)
    env.pipeline.queue.enqueue(notice_mail, domain_of(message.sender), [message.sender], env)


def _notice_message(env: Environment, message: Message, recipient: str) -> Message:
    date = datetime.fromtimestamp(env.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = (
        f"{recipient} did not take your instant message in time. As you asked, it was "
        f"deleted and not delivered.\n\nOriginal Message-Id: {message.message_id}\n"
    )
    return Message(
        id="",
        message_id=new_message_id(env.domain),
        folder="sent",
        sender=f"{MAILER_DAEMON}@{env.domain}",
        to=[message.sender],
        cc=[],
        subject=f"Undeliverable instant message to {recipient}"[:998],
        date=date,
        size=len(body),
        seen=True,
        body=body,
    )


def notice(env: Environment, message: Message, recipient: str, hub: Hub) -> None:
    """Tell a local sender that an instant message was dropped (inbox and live push)."""
    sender = message.sender
    if env.tx.user(sender) is None:
        return
    date = datetime.fromtimestamp(env.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = (
        f"{recipient} was not online. As you asked, your instant message was deleted "
        f"and not delivered.\n\nOriginal Message-Id: {message.message_id}\n"
    )
    mail = Message(
        id="",
        message_id=new_message_id(env.domain),
        folder="inbox",
        sender=f"{MAILER_DAEMON}@{env.domain}",
        to=[sender],
        cc=[],
        subject=f"Undeliverable instant message to {recipient}"[:998],
        date=date,
        size=len(body),
        seen=False,
        body=body,
    )
    env.tx.add_message(sender, "inbox", mail)
    payload = {"kind": "undeliverable", "recipient": recipient, "message_id": message.message_id}
    data = event("notice", payload)
    env.after_commit.append(lambda: hub.notify(sender, data))
    if hub.on_notice is not None:  # the sender's sessions on the other nodes
        hub.on_notice(env.tx, sender, payload)
