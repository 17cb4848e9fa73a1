"""In charge of the compose screen's delivery options that go past a plain `Client.send`:
Send Encrypted (end to end to every recipient's certificate and the sender's, signed by
default, exactly as `wsemail send --encrypt [--sign]`), send directly to the recipients'
servers (an instant message signed with a federated identity, `wsemail im send --direct`),
and opening a sealed message and its encrypted attachments the way `wsemail retrieve` and
`wsemail fetch` do. Pure Python (no Textual).

Everything here refuses before anything is sent: no key on this device, a recipient
without a trusted certificate, a recipient server that cannot be located."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wsemail.client.attachments import Attachments, Progress
from wsemail.client.im import InstantMessenger
from wsemail.client.mail import Client, SendResult
from wsemail.client.usercerts import (
    EncryptedAttachment,
    fetch_encrypted,
    is_sealed,
    keystore,
    send_encrypted,
)
from wsemail.client.usercerts.device import (
    locate_server,
    open_attachments,
    open_directory,
    open_messages,
)
from wsemail.client.usercerts.sealed import status_line
from wsemail.protocol.errors import UsageError, WsemailError
from wsemail.protocol.message import AttachmentRef, Message, domain_of, normalize_address

Item = AttachmentRef | EncryptedAttachment
"""An on-demand attachment as the message view lists it: plain, or of encrypted mail."""


@dataclass(frozen=True)
class Options:
    """The compose screen's delivery options as ticked."""

    instant: bool = False
    delete_if_undeliverable: bool = False
    direct: bool = False
    encrypt: bool = False
    sign: bool = True
    form: bool = False  # a form is attached

    def refusal(self, files: bool) -> str | None:
        """Why these options cannot send this message (nothing is sent), or None."""
        if self.form and (self.encrypt or self.instant):
            return "a form goes as mail: untick the encrypted and instant options"
        if self.encrypt and (self.instant or self.direct):
            return "an encrypted message goes as mail, not as an instant message"
        if self.direct and files:
            return "a message sent directly carries no files"
        return None


def send_sealed(
    client: Client,
    to: Sequence[str],
    cc: Sequence[str],
    subject: str,
    body: str,
    *,
    sign: bool = True,
    files: Sequence[Path] = (),
) -> SendResult:
    """Encrypt subject, body and files to every recipient (certificates from their domains'
    directories, checked) and send; raises UsageError (nothing uploaded or sent) without a
    key here or with a recipient that has no usable certificate."""
    if not keystore.exists(client.username):
        raise UsageError(
            f"no key for {client.username} on this device (run 'wsemail keys create'); "
            "nothing was sent"
        )
    own = keystore.load(client.username)
    with open_directory() as directory:
        return send_encrypted(
            client,
            own,
            directory,
            list(to),
            subject,
            body,
            cc=list(cc),
            sign=sign,
            attachments=files,
        )


@dataclass(frozen=True)
class DirectOutcome:
    recipient: str
    status: str  # delivered | stored | refused | … as the recipient's server says
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.recipient}: {self.status}" + (f" ({self.reason})" if self.reason else "")


def server_of(client: Client, domain: str) -> str:
    """The SOAP endpoint of `domain`'s server: the own server for the own domain, else
    WSEMAIL_DIRECTORY_ROUTES or the domain's `_wsemail._tcp` SRV record."""
    if domain == domain_of(client.username):
        return client.server
    return locate_server(domain)


def send_directly(
    client: Client,
    recipients: Sequence[str],
    text: str,
    *,
    subject: str = "Instant message",
    delete_if_undeliverable: bool = False,
) -> list[DirectOutcome]:
    """An instant message straight to each recipient domain's server, signed with a
    federated identity from the own server. Every server is located before any is sent."""
    by_domain: dict[str, list[str]] = {}
    for address in dict.fromkeys(normalize_address(a) for a in recipients):
        by_domain.setdefault(domain_of(address), []).append(address)
    urls = {domain: server_of(client, domain) for domain in by_domain}
    im = InstantMessenger(client)
    outcomes: list[DirectOutcome] = []
    for domain, addresses in by_domain.items():
        result = im.send_direct(
            addresses,
            text,
            urls[domain],
            subject=subject or "Instant message",
            delete_if_undeliverable=delete_if_undeliverable,
        )
        for address in addresses:
            status, reason = result.outcomes.get(address, ("sent", ""))
            outcomes.append(DirectOutcome(address, status, reason))
    return outcomes


def opened(client: Client, message: Message) -> tuple[Message, dict[str, object]]:
    """The message with a sealed subject and body decrypted, and its end-to-end status
    ({"encrypted", "signed", "signer"} or {"encrypted", "error"}), as `wsemail retrieve`;
    a message that cannot be opened here (no key, no trust roots) says why instead."""
    if not is_sealed(message):
        return message, {"encrypted": False, "signed": False, "signer": None}
    try:
        return open_messages(client, message)
    except WsemailError as exc:
        return message, {"encrypted": True, "error": str(exc)}


def e2e_line(status: dict[str, object]) -> str:
    """'' for a message that was not encrypted; else what `wsemail retrieve` prints after
    "Encrypted:"."""
    return status_line(status)


def attachments_of(client: Client, message_id: str) -> list[Item]:
    """A message's on-demand attachments; those of encrypted mail opened with the key on
    this device (their names and sizes are sealed), as `wsemail attachments` lists them."""
    listing = Attachments(client).list(message_id)
    encrypted = open_attachments(client, listing)
    return list(listing.refs) if encrypted is None else list(encrypted)


def wire_size(item: Item) -> int:
    """The bytes a fetch moves (the ciphertext's, for an encrypted attachment)."""
    return item.ref.size if isinstance(item, EncryptedAttachment) else item.size


def fetch_item(client: Client, item: Item, dest: Path, progress: Progress | None = None) -> Path:
    """Fetch with a federated identity, checked against the signed SHA-256; an encrypted
    attachment is then decrypted (every chunk authenticated) into `dest`."""
    box = Attachments(client)
    if isinstance(item, EncryptedAttachment):
        return fetch_encrypted(box, item, dest, progress=progress)
    return box.fetch(item, dest, progress=progress)
