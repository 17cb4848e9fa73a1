"""In charge of a form's life on the client: sending one (validated by its plug-in),
reading one out of a verified message, acting on it (approve, reject, delegate) and
forwarding it to whoever signs next, and fetching its plug-in on demand."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography import x509

from wsemail.client import Client, SendResult
from wsemail.errors import SignatureInvalid, TransportError, UsageError
from wsemail.forms import approvals, wheels
from wsemail.forms.approvals import Chain, Entry
from wsemail.forms.contract import FormPlugin, Step
from wsemail.forms.document import FormDocument, FormError, PluginRef, is_form_body
from wsemail.forms.loader import load
from wsemail.message import Message, domain_of
from wsemail.pki import read_cert
from wsemail.provenance import Provenance
from wsemail.server.forms.plugin import WHEEL_PATH


def wheel_location(server: str, file_name: str) -> str:
    return str(httpx.URL(server).copy_with(path=WHEEL_PATH, query=f"file={file_name}".encode()))


def compose(
    plugin: FormPlugin,
    raw: Mapping[str, object],
    sender: str,
    route: list[Step],
    *,
    server: str = "",
    wheel: Path | None = None,
) -> FormDocument:
    """A new form document; `wheel` (the published wheel) adds location and SHA-256."""
    data = plugin.validate(raw)
    ref = PluginRef(plugin.name, plugin.version)
    if wheel is not None:
        ref = PluginRef(
            plugin.name,
            plugin.version,
            wheel_location(server, wheel.name),
            wheels.sha256_hex(wheel.read_bytes()),
        )
    return FormDocument.new(ref, plugin.to_xml(data), sender, route)


def parse_route(raw: object) -> list[Step]:
    if not isinstance(raw, list) or not raw:
        raise UsageError('a form needs a "route": a list of {"role": …, "approvers": […]}')
    steps = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("approvers"), list):
            raise UsageError("each route step is {role, approvers}")
        steps.append(Step(str(item.get("role", "")), tuple(str(a) for a in item["approvers"])))
    return steps


def read_json(path: Path) -> dict[str, object]:
    """A form draft: {"form": name, "data": {...}, "route": [...]}."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), dict):
        raise UsageError(f'{path}: expected {{"form": …, "data": {{…}}, "route": […]}}')
    return raw


def send(client: Client, doc: FormDocument, to: list[str], subject: str) -> SendResult:
    return client.send(to, subject or f"Form: {doc.plugin.name}", doc.to_bytes().decode())


@dataclass
class Received:
    message: Message
    provenance: Provenance
    doc: FormDocument


def receive(client: Client, message_id: str) -> Received:
    """Retrieve a form message; its content only from the verified copy."""
    proof, message = client.verify(client.retrieve(message_id))
    if proof.status not in ("verified", "local"):
        raise SignatureInvalid(f"message {message_id}: {proof}")
    if not is_form_body(message.body):
        raise FormError(f"message {message_id} carries no form")
    return Received(message, proof, FormDocument.parse(message.body))


def trust_material(
    client: Client,
) -> tuple[list[x509.Certificate], list[x509.CertificateRevocationList]]:
    """The client's federation roots and the CRLs its own server publishes (verified)."""
    trust = client.trust()
    if trust is None:
        raise UsageError("no trust roots configured (WSEMAIL_TRUST_ROOTS)")
    return [read_cert(p) for p in client.trust_roots], list(trust._crls.values())


def act(
    client: Client, message_id: str, kind: str, *, delegate: str = ""
) -> tuple[Entry, Chain, list[str]]:
    """Approve, reject or delegate the form in `message_id` and send it on: to the next
    step's approvers (or the delegate), or back to the sender when done or rejected."""
    from wsemail.attachments_client import Attachments

    received = receive(client, message_id)
    doc = received.doc
    roots, crls = trust_material(client)
    chain = approvals.verify(doc, roots, crls)
    token = Attachments(client).token()
    entry = approvals.sign(doc, kind, token.key, token.cert, token.issuer, chain, delegate=delegate)
    if kind == "delegate":
        to = [entry.delegate]
    else:
        to = chain.next_approvers() or [doc.sender]
    subject = f"{doc.plugin.name} {chain.status}"
    send(client, doc, to, subject)
    return entry, chain, to


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def fetch_plugin(
    client: Client,
    ref: PluginRef,
    publishers: list[str],
    *,
    root: Path | None = None,
    sender: str = "",
    tls_name: str | None = None,
) -> wheels.Installed:
    """Download a form's wheel and signature from its location; verify and install.

    The location is on the sender's server: when it names that server by IP address, its
    TLS certificate is checked for the sender's domain (`tls_name` overrides). The
    download itself is not trusted: the hash, the publisher signature and RECORD are."""
    if not ref.location or not ref.sha256:
        raise UsageError(f"the form names no location for {ref.name} {ref.version}")
    roots, crls = trust_material(client)
    url = httpx.URL(ref.location)
    if tls_name is None and sender and _is_ip(url.host):
        tls_name = domain_of(sender)
    file_name = url.params.get("file", "")
    wheels.parse_name(file_name)
    try:
        http = client._http  # the client's own TLS settings
        extensions = {"sni_hostname": tls_name} if tls_name else {}
        got = http.get(url, extensions=extensions)
        sig = http.get(url.copy_with(params={"file": file_name + ".sig"}), extensions=extensions)
    except httpx.HTTPError as exc:
        raise TransportError(f"cannot fetch {ref.location}: {exc}") from exc
    if got.status_code != 200 or sig.status_code != 200:
        raise TransportError(f"cannot fetch {ref.location}: HTTP {got.status_code}")
    if wheels.sha256_hex(got.content) != ref.sha256:
        raise wheels.WheelRefused(f"{file_name}: SHA-256 differs from the one in the message")
    record = wheels.install(
        file_name,
        got.content,
        sig.content,
        roots=roots,
        crls=crls,
        publishers=publishers,
        location=ref.location,
        root=root,
    )
    if (record.name, record.version) != (ref.name, ref.version):
        raise wheels.WheelRefused(f"{file_name} holds {record.name} {record.version}")
    load(ref.name, ref.version, root)
    return record
