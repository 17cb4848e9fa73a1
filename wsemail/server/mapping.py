"""In charge of where local mail goes (issue 18): a local recipient expanded through the
mapped-address plug-ins (`AddressMap`: aliases, role addresses, auto-responders, a third
party's) into the mailboxes and outside addresses it reaches, each mailbox once per message
however many addresses lead to it; the delivery processors and the local MTA for each
mailbox; outside addresses forwarded through the mail queue; and mail the server itself
sends (auto-replies, redirects) to local or outside addresses.

Loops: an address met again on its own path is not followed, nor one deeper than
MAX_DEPTH (configuration refuses both; this caps what a third-party plug-in claims). Across
servers, every forwarded copy carries one `Forwarded-By` header field per hop: a server
never forwards a message that already went through the same address, nor one with
MAX_HOPS of them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from wsemail.protocol.errors import RemoteFault, ServerError
from wsemail.protocol.message import Message, domain_of, new_message_id, normalize_address
from wsemail.server.pipeline import AddressMap, Claim, Environment, Verdict

log = logging.getLogger("wsemail.mapping")
MAX_DEPTH = 8
MAX_HOPS = 8
MAX_EXPANDED = 1000  # mailboxes and outside addresses one recipient may expand to
FORWARDED_BY = "Forwarded-By"


@dataclass
class Expansion:
    """Where mail for one address goes: local `mailboxes` (the address itself when nothing
    claims it), `remote` addresses, the claims whose plug-in `take`s the mail, and the
    addresses not followed (`capped`: a loop, or too deep)."""

    mailboxes: list[str] = field(default_factory=list)
    remote: list[str] = field(default_factory=list)
    taken: list[tuple[AddressMap, str, Claim]] = field(default_factory=list)
    capped: list[str] = field(default_factory=list)


def claim_of(address: str, env: Environment) -> tuple[AddressMap, Claim] | None:
    """The first claim of a loaded mapped-address plug-in on `address`, if any."""
    for plugin in env.pipeline.mapped:
        found = plugin.claim(address, env)
        if found is not None:
            return plugin, found
    return None


def expand(address: str, env: Environment) -> Expansion:
    out = Expansion()
    seen: set[str] = set()

    def walk(addr: str, path: tuple[str, ...]) -> None:
        if addr in path:
            out.capped.append(addr)
            log.warning("mapped address loop: %s", " -> ".join([*path, addr]))
            return
        if addr in seen or len(out.mailboxes) + len(out.remote) >= MAX_EXPANDED:
            return
        seen.add(addr)
        if domain_of(addr) != env.domain:
            out.remote.append(addr)
            return
        found = claim_of(addr, env)
        if found is None:
            out.mailboxes.append(addr)
            return
        if len(path) >= MAX_DEPTH:
            out.capped.append(addr)
            log.warning("mapped address deeper than %d: %s", MAX_DEPTH, addr)
            return
        plugin, claim = found
        out.taken.append((plugin, addr, claim))
        for target in claim.targets:
            try:
                walk(normalize_address(target), (*path, addr))
            except RemoteFault:
                log.warning("%s maps to a bad address %r", addr, target[:80])

    walk(address, ())
    return out


def deliver_locally(message: Message, recipient: str, env: Environment) -> None:
    """Deliver to a local recipient: through its mapping (if any plug-in claims it), then
    for each mailbox the delivery processors (any may take the message) and the local MTA.
    A mailbox that already got this message in this unit of work is skipped."""
    if not env.pipeline.mapped:
        to_mailbox(message, recipient, env)
        return
    if recipient in forwarded_through(message) and claim_of(recipient, env) is not None:
        log.warning(
            "%s came back to %s, which forwarded it before: a loop, not delivered again",
            message.message_id,
            recipient,
        )
        return
    expansion = expand(recipient, env)
    for plugin, address, _ in expansion.taken:
        key = (message.sender, message.message_id, f"take:{address}")
        if key not in env.delivered:
            env.delivered.add(key)
            plugin.take(message, address, env)
    for mailbox in expansion.mailboxes:
        if mailbox != recipient and env.tx.user(mailbox) is None:
            log.warning("%s maps to %s, which is no account: skipped", recipient, mailbox)
            continue
        to_mailbox(message, mailbox, env)
    if expansion.remote:
        forward(message, expansion.remote, recipient, env)


def to_mailbox(message: Message, mailbox: str, env: Environment) -> None:
    """One real mailbox: the delivery processors, then the local MTA; once per message."""
    key = (message.sender, message.message_id, mailbox)
    if key in env.delivered:
        return
    before = set(env.delivered)
    env.delivered.add(key)
    try:
        for processor in env.pipeline.delivery:
            if processor.deliver(message, mailbox, env) is Verdict.TAKEN:
                return
        if env.pipeline.local_mta is None:
            raise ServerError("no local delivery plug-in is loaded")
        env.pipeline.local_mta.store(message, mailbox, env)
    except BaseException:
        env.delivered.intersection_update(before)  # rolled back: it may be delivered again
        raise


def forwarded_through(message: Message) -> list[str]:
    return message.header(FORWARDED_BY)


def forward(message: Message, targets: list[str], via: str, env: Environment) -> bool:
    """Send `message`, which reached `via`, on to outside `targets` through the queue. A
    message from this domain goes as it is (this server may sign for its sender); one from
    elsewhere goes as a new message from `via` quoting the original sender (no server
    signs for another domain's users). False when the hop limit or a loop stops it."""
    hops = forwarded_through(message)
    if via in hops or len(hops) >= MAX_HOPS:
        log.warning(
            "not forwarding %s from %s via %s: it went through %s",
            message.message_id,
            message.sender,
            via,
            ", ".join(hops) or "nothing",
        )
        return False
    copy = replace(message, headers=[*message.headers, (FORWARDED_BY, via)])
    if domain_of(message.sender) != env.domain:
        note = f"[forwarded by {via}: from {message.sender}, {message.date}]\n\n"
        copy = replace(
            copy,
            sender=via,
            message_id=new_message_id(env.domain),
            body=note + message.body,
            size=message.size + len(note),
            origin=None,
            signed_xml=None,
        )
    send_remote(copy, targets, env)
    return True


def send_remote(message: Message, recipients: list[str], env: Environment) -> None:
    """Queue `message` for outside `recipients`, one row per destination domain."""
    by_domain: dict[str, list[str]] = {}
    for address in recipients:
        by_domain.setdefault(domain_of(address), []).append(address)
    queue = env.pipeline.queue
    if queue is None:
        raise ServerError("no mail queue is loaded")
    for domain, addresses in sorted(by_domain.items()):
        queue.enqueue(replace(message, origin=None, signed_xml=None), domain, addresses, env)


def dispatch(message: Message, recipients: list[str], env: Environment) -> None:
    """Mail this server sends on its own (an auto-reply, a redirect): local recipients
    through `deliver_locally`, the others through the queue."""
    local = [r for r in recipients if domain_of(r) == env.domain]
    remote = [r for r in recipients if domain_of(r) != env.domain]
    for recipient in local:
        deliver_locally(message, recipient, env)
    if remote:
        send_remote(message, remote, env)


def server_message(
    env: Environment,
    sender: str,
    to: list[str],
    subject: str,
    body: str,
    headers: list[tuple[str, str]],
) -> Message:
    """A new message made by this server for one of its addresses."""
    date = datetime.fromtimestamp(env.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    subject = " ".join(subject.split())[:998]
    return Message(
        id="",
        message_id=new_message_id(env.domain),
        folder="inbox",
        sender=sender,
        to=to,
        cc=[],
        subject=subject,
        date=date,
        size=len(body.encode()) + len(subject.encode()),
        seen=False,
        body=body,
        headers=headers,
    )


def role_members(addresses: tuple[str, ...], env: Environment) -> tuple[str, ...]:
    """Approvers for a forms routing rule (issue 18): each role address of this domain
    replaced by whom it reaches now, the other addresses as they are."""
    out: list[str] = []
    for address in addresses:
        found = claim_of(address, env) if domain_of(address) == env.domain else None
        if found is not None and found[1].kind == "role":
            reached = expand(address, env)
            out.extend([*reached.mailboxes, *reached.remote])
        else:
            out.append(address)
    return tuple(dict.fromkeys(out))
