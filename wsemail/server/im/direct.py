"""In charge of "send directly to recipient" (paper §2, Fig. 1, M2): a client away from home
gets a federated identity certificate from its own server (`IssueToken`, shared with the
attachment plug-in) and posts a `DirectInstant`, XMLDSIG-signed with that certificate's
key, straight to the recipient's server. Checked here, failing closed: the chain user
certificate → its domain's name-constrained issuing CA → a trusted root (with CRLs), the
signature's binding checks, freshness, that the request names this server, an unseen nonce
and that every recipient is local; the sender is the certificate's address, never a field.
The answer says, per recipient, what became of the message (pushed | mailbox | dropped |
rejected).

No server signs such a message, so the sender's own signed request is its record: kept
with each mailbox copy and sent with each push (`provenance.direct_record`), and checked
by the reader's client like a server signature (`provenance.check_direct`)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from lxml import etree

from wsemail.core.provenance import direct_record
from wsemail.protocol import soap
from wsemail.protocol.errors import (
    Forbidden,
    Rejected,
    ReplayDetected,
    RequestInvalid,
)
from wsemail.protocol.message import Draft, Message, domain_of, new_message_id
from wsemail.protocol.soap import element, q
from wsemail.server.attachments.federated import issue_token, verify_identity_request
from wsemail.server.store import Tx

if TYPE_CHECKING:
    from wsemail.server.app import Server
    from wsemail.server.pipeline import Environment

log = logging.getLogger("wsemail.im")
OPERATION = "DirectInstant"


class InstantMessaging(Protocol):
    """What a direct IM needs of the IM plug-in (`im.plugin.InstantMessaging`)."""

    token_lifetime: float

    def _environment(self, tx: Tx, principal: str) -> Environment: ...

    def deliver_instant(self, message: Message, recipient: str, env: Environment) -> str: ...


def register(server: Server, plugin: InstantMessaging) -> None:
    async def direct(srv: Server, envelope: soap.ReceivedEnvelope, peer: str) -> etree._Element:
        return await direct_instant(srv, envelope, peer, plugin)

    server.operations[OPERATION] = direct
    if "IssueToken" not in server.operations:  # the attachment plug-in may not be loaded

        async def issue(srv: Server, envelope: soap.ReceivedEnvelope, peer: str) -> etree._Element:
            return await issue_token(srv, envelope, peer, plugin.token_lifetime)

        server.operations["IssueToken"] = issue


def unregister(server: Server) -> None:
    server.operations.pop(OPERATION, None)


async def direct_instant(
    server: Server, envelope: soap.ReceivedEnvelope, peer: str, plugin: InstantMessaging
) -> etree._Element:
    request = verify_identity_request(server, envelope, OPERATION)
    op, sender, nonce = request.operation, request.address, request.nonce
    domain = server.config.domain
    draft = Draft.from_xml(op.find(q("Message")))
    if draft.attachments:
        raise RequestInvalid("a direct instant message carries no attachments")
    if draft.bcc:  # its signed request names every recipient: nothing would stay blind
        raise RequestInvalid("a direct instant message has no blind copies")
    recipients = draft.recipients
    if any(domain_of(r) != domain for r in recipients):
        raise Forbidden("recipients outside this domain: this server does not relay")
    now = datetime.fromtimestamp(server.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    message = Message(
        id="",
        message_id=draft.message_id or new_message_id(domain_of(sender)),
        folder="inbox",
        sender=sender,
        to=draft.to,
        cc=draft.cc,
        subject=draft.subject,
        date=now,
        size=len(draft.body.encode()) + len(draft.subject.encode()),
        seen=False,
        body=draft.body,
        origin=domain_of(sender),
        signed_xml=direct_record(etree.tostring(envelope.root)),
        instant=True,
        delete_if_undeliverable=draft.delete_if_undeliverable,
        in_reply_to=draft.in_reply_to,
        references=draft.references,
    )

    def work(tx: Tx) -> tuple[list[tuple[str, str, str]], Any]:
        if not tx.remember_nonce(f"user:{sender}", nonce, server.auth.keep_nonce):
            raise ReplayDetected("this request was already received")
        env = plugin._environment(tx, f"user:{sender}")
        outcomes = []
        for recipient in recipients:
            tx.conn.execute("SAVEPOINT direct_recipient")
            try:
                outcome, reason = plugin.deliver_instant(message, recipient, env), ""
            except Rejected as exc:
                tx.conn.execute("ROLLBACK TO direct_recipient")
                outcome, reason = "rejected", exc.reason
            tx.conn.execute("RELEASE direct_recipient")
            outcomes.append((recipient, outcome, reason))
        return outcomes, env

    outcomes, env = await server.store.transact(work)
    for callback in env.after_commit:
        callback()
    log.info("direct instant message from %r (peer %s): %s", sender, peer, outcomes)
    result = etree.Element(q("DirectInstantResponse"))
    element(result, "MessageId", message.message_id)
    for recipient, outcome, reason in outcomes:
        node = element(result, "Result")
        node.set("Recipient", recipient)
        node.set("Status", outcome)
        if reason:
            node.set("Reason", reason)
    return result
