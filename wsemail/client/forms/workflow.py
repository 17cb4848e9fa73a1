"""In charge of a form's life on the client: sending one (validated by its plug-in; a
draft JSON {"form", "data", "route", "wheel"?, "autofill"?} becomes a message `Draft` with
`attach_form`, shared by `wsemail send --form` and the TUI's fill screen), reading one
out of a verified message, acting on it (approve, reject, delegate) and forwarding it to
whoever signs next, fetching its plug-in on demand (download and verify, then install, so
a user may approve in between), and Autofill from the own server with the user's
federated identity certificate."""

from __future__ import annotations

import base64
import copy
import ipaddress
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from wsemail.client.forms.loader import load
from wsemail.client.mail import RESPONSE_LIMITS, Client, SendResult
from wsemail.core.forms import approvals, wheels
from wsemail.core.forms.approvals import Chain, Entry
from wsemail.core.forms.contract import FormPlugin, Step
from wsemail.core.forms.document import (
    WF,
    WHEEL_PATH,
    FormDocument,
    FormError,
    PluginRef,
    is_form_body,
    valid_role,
)
from wsemail.core.provenance import Provenance
from wsemail.pki import read_cert
from wsemail.protocol import soap
from wsemail.protocol.auth import timestamp
from wsemail.protocol.dsig import Signer, add_timestamp
from wsemail.protocol.errors import (
    PluginError,
    RemoteFault,
    ServerError,
    SignatureInvalid,
    TransportError,
    UsageError,
    WsemailError,
)
from wsemail.protocol.message import Draft, Message, domain_of, normalize_address
from wsemail.protocol.soap import WSSE, WSU, element, q, text_of
from wsemail.protocol.xmlsafe import XmlLimits, parse_untrusted

if TYPE_CHECKING:
    from wsemail.client.attachments import Token


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
    ref: PluginRef | None = None,
) -> FormDocument:
    """A new form document; `wheel` (the published wheel) adds location and SHA-256, or
    `ref` names them."""
    data = plugin.validate(raw)
    ref = ref or PluginRef(plugin.name, plugin.version)
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


def parse_route_text(text: str) -> list[dict[str, object]]:
    """ "manager: bob@a.test; purchasing: pat@b.test, dave@b.test" → a draft's "route"
    ([{"role", "approvers"}…]); UsageError names what is wrong."""
    route: list[dict[str, object]] = []
    for part in filter(str.strip, text.split(";")):
        role, colon, rest = part.partition(":")
        approvers = [a.strip() for a in rest.replace(",", " ").split() if a.strip()]
        if not colon or not valid_role(role.strip()) or not approvers:
            raise UsageError(f"route step {part.strip()[:60]!r} is not 'role: address, …'")
        try:
            route.append(
                {"role": role.strip(), "approvers": [normalize_address(a) for a in approvers]}
            )
        except WsemailError as exc:
            raise UsageError(f"route: {exc}") from exc
    if not route:
        raise UsageError("the route needs a step: 'role: address, …; role: address'")
    return route


def route_text(route: object) -> str:
    """A draft's "route" back as the text `parse_route_text` reads."""
    steps = parse_route(route) if route else []
    return "; ".join(f"{s.role}: {', '.join(s.approvers)}" for s in steps)


def read_json(path: Path) -> dict[str, object]:
    """A form draft: {"form": name, "data": {...}, "route": [...]}."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), dict):
        raise UsageError(f'{path}: expected {{"form": …, "data": {{…}}, "route": […]}}')
    return raw


def _published(plugin: FormPlugin, wheel: object, server: str) -> tuple[Path | None, PluginRef]:
    """Where recipients fetch the plug-in: the published `wheel` the draft names, else
    the location and SHA-256 it was installed from (the private registry), else nowhere."""
    if wheel:
        return Path(str(wheel)), PluginRef(plugin.name, plugin.version)
    record = wheels.registry().get(plugin.name)
    if record is not None and record.version == plugin.version and record.location:
        return None, PluginRef(plugin.name, plugin.version, record.location, record.sha256)
    return None, PluginRef(plugin.name, plugin.version)


def unreachable_plugin(plugin: FormPlugin, data: Mapping[str, object], server: str) -> str:
    """Why recipients may not open the form a draft sends ("" when they can): it names no
    published wheel and the plug-in was not installed from one, so the message says where
    to fetch nothing; only recipients who already have the plug-in can read it."""
    wheel, ref = _published(plugin, data.get("wheel"), server)
    if wheel is not None or ref.location:
        return ""
    return (
        f"the form names no published wheel: only recipients who have the {plugin.name} "
        f'{plugin.version} plug-in installed can open it (add "wheel": the path of the '
        "wheel published with 'wsemail forms publish' to the draft)"
    )


def attach_form(
    draft: Draft,
    plugin: FormPlugin,
    data: Mapping[str, object],
    *,
    sender: str,
    server: str = "",
    autofilled: Callable[[], Mapping[str, str]] | None = None,
) -> Draft:
    """A copy of `draft` carrying the form: `data` is a form draft {"form": name, "data":
    {...}, "route": [{"role", "approvers"}...], "wheel": path of the published wheel
    (optional), "autofill": true (optional)} — what `wsemail send --form FILE.json` reads
    and `FormFillScreen` dismisses with. The plug-in validates it (FormInvalid lists every
    problem); the body becomes the form document from `sender`; an empty subject becomes
    "Form: <title>"; no recipients means the first step's approvers. `autofilled` is asked
    for the fields the draft leaves out when it says "autofill": true."""
    if not isinstance(data.get("data"), Mapping):
        raise UsageError('a form draft is {"form": …, "data": {…}, "route": […]}')
    named = data.get("form")
    if named not in (None, plugin.name):
        raise UsageError(f"the draft is a {named!s:.64} form, not {plugin.name}")
    values = dict(data["data"])  # type: ignore[call-overload]
    if data.get("autofill") is True and autofilled is not None:
        known = {f.name for f in plugin.fields if not f.computed}
        for name, value in autofilled().items():
            if name in known:
                values.setdefault(name, value)
    plugin.validate(values)  # the form's own problems first, then the route's
    route = parse_route(data.get("route"))
    wheel, ref = _published(plugin, data.get("wheel"), server)
    doc = compose(plugin, values, sender, route, server=server, wheel=wheel, ref=ref)
    to = draft.to or [normalize_address(a) for a in route[0].approvers]
    return replace(
        draft,
        to=list(to),
        subject=draft.subject or f"Form: {plugin.title or plugin.name}",
        body=doc.to_bytes().decode(),
    )


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


def rendered(doc: FormDocument, root: Path | None = None) -> str:
    """The form as its plug-in renders it, after the plug-in read and validated its data:
    what an approver sees before signing. UsageError when the plug-in is not installed."""
    ref = doc.plugin
    try:
        plugin = load(ref.name, ref.version, root)
    except PluginError as exc:
        raise UsageError(
            f"form plug-in {ref.name} {ref.version} is not installed: nothing is signed "
            "unseen; look at the form first (wsemail forms show ID --yes)"
        ) from exc
    return plugin.render_text(plugin.from_xml(doc.data))


def act(
    client: Client,
    message_id: str,
    kind: str,
    *,
    delegate: str = "",
    root: Path | None = None,
) -> tuple[Entry, Chain, list[str]]:
    """Approve, reject or delegate the form in `message_id` and send it on: to the next
    step's approvers (or the delegate), or back to the sender when done or rejected.

    In order: the chain verifies; the workflow rules allow this act; the form's plug-in
    (from `root`, the private plug-in folder) reads, validates and renders the data; then
    the act is signed, stamped by the own server (`countersign`), and sent."""
    from wsemail.client.attachments import Attachments

    received = receive(client, message_id)
    doc = received.doc
    roots, crls = trust_material(client)
    chain = approvals.verify(doc, roots, crls)
    token = Attachments(client).token()
    signer = approvals._address(token.cert)
    target = normalize_address(delegate) if kind == "delegate" and delegate else delegate
    copy.deepcopy(chain).apply(kind, chain.current + 1, signer, target)  # refused early
    rendered(doc, root)
    entry = approvals.sign(doc, kind, token.key, token.cert, token.issuer, chain, delegate=delegate)
    entry = approvals.stamped(doc, chain, countersign(client, token, doc.acts()[-1]))
    if kind == "delegate":
        to = [entry.delegate]
    else:
        to = chain.next_approvers() or [doc.sender]
    subject = f"{doc.plugin.name} {chain.status}"
    send(client, doc, to, subject)
    return entry, chain, to


def trusted_publishers() -> list[str]:
    """Trusted form publishers (addresses or @domains) from WSEMAIL_FORM_PUBLISHERS."""
    raw = os.environ.get("WSEMAIL_FORM_PUBLISHERS", "")
    return [p.strip() for p in raw.split(",") if p.strip()]


def configured_tls_name() -> str | None:
    """The TLS name to check on a plug-in's server (WSEMAIL_FORM_TLS_NAME), if set."""
    return os.environ.get("WSEMAIL_FORM_TLS_NAME") or None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _extensions(
    client: Client, url: httpx.URL, sender: str, tls_name: str | None
) -> dict[str, str]:
    """The TLS name a download from `url` is checked against: `tls_name` if given; the
    client's own when `url` is its own server; else, for a server named by IP address,
    the sender's domain."""
    if tls_name:
        return {"sni_hostname": tls_name}
    if url.netloc == httpx.URL(client.server).netloc:
        return client.extensions
    if sender and _is_ip(url.host):
        return {"sni_hostname": domain_of(sender)}
    return {}


@dataclass(frozen=True)
class Downloaded:
    """A downloaded wheel whose hash and publisher signature verified; not installed."""

    ref: PluginRef
    file_name: str
    data: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    publisher: str
    sha256: str


def download_plugin(
    client: Client,
    ref: PluginRef,
    publishers: list[str],
    *,
    sender: str = "",
    tls_name: str | None = None,
) -> Downloaded:
    """Download a form's wheel and signature from the location the message names and
    check them: the SHA-256 the message names, the publisher signature, a trusted
    publisher. Nothing is written. The download itself is not trusted, only these checks.

    The location is on the sender's server: when it names that server by IP address, its
    TLS certificate is checked for the sender's domain (`tls_name` overrides)."""
    if not ref.location or not ref.sha256:
        raise UsageError(f"the form names no location for {ref.name} {ref.version}")
    roots, crls = trust_material(client)
    url = httpx.URL(ref.location)
    file_name = url.params.get("file", "")
    wheels.parse_name(file_name)
    extensions = _extensions(client, url, sender, tls_name)
    http = client.http  # the client's own TLS settings and connection pool
    wheel = _get_capped(http, url, extensions, wheels.MAX_WHEEL, ref.location)
    sig_url = url.copy_with(params={"file": file_name + ".sig"})
    sig = _get_capped(http, sig_url, extensions, wheels.MAX_SIGNATURE, ref.location)
    if wheels.sha256_hex(wheel) != ref.sha256:
        raise wheels.WheelRefused(f"{file_name}: SHA-256 differs from the one in the message")
    checked = wheels.verify(file_name, wheel, sig, roots, crls, publishers)
    return Downloaded(ref, file_name, wheel, sig, checked.publisher, checked.sha256)


def _get_capped(
    http: httpx.Client, url: httpx.URL, extensions: dict[str, str], limit: int, where: str
) -> bytes:
    """GET at most `limit` bytes, counted after any content decoding (gzip and the like:
    a compressed answer cannot unpack into more than that)."""
    chunks, size = [], 0
    try:
        with http.stream("GET", url, extensions=extensions) as response:
            if response.status_code != 200:
                raise TransportError(f"cannot fetch {where}: HTTP {response.status_code}")
            for chunk in response.iter_bytes(64 << 10):
                size += len(chunk)
                if size > limit:
                    raise wheels.WheelRefused(f"{where}: more than {limit} bytes")
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise TransportError(f"cannot fetch {where}: {exc}") from exc
    return b"".join(chunks)


def install_downloaded(
    client: Client, downloaded: Downloaded, publishers: list[str], *, root: Path | None = None
) -> wheels.Installed:
    """Install exactly the downloaded bytes (verified again by `wheels.install`: signature,
    publisher, RECORD, version, paths) into the private plug-in directory, and load them."""
    roots, crls = trust_material(client)
    ref = downloaded.ref
    record = wheels.install(
        downloaded.file_name,
        downloaded.data,
        downloaded.signature,
        roots=roots,
        crls=crls,
        publishers=publishers,
        location=ref.location,
        root=root,
    )
    if (record.name, record.version) != (ref.name, ref.version):
        raise wheels.WheelRefused(f"{downloaded.file_name} holds {record.name} {record.version}")
    load(ref.name, ref.version, root)
    return record


def fetch_plugin(
    client: Client,
    ref: PluginRef,
    publishers: list[str],
    *,
    root: Path | None = None,
    sender: str = "",
    tls_name: str | None = None,
) -> wheels.Installed:
    """Download, verify and install a form's plug-in (`download_plugin`, then
    `install_downloaded`)."""
    downloaded = download_plugin(client, ref, publishers, sender=sender, tls_name=tls_name)
    return install_downloaded(client, downloaded, publishers, root=root)


# autofill: the user's own organisation's web service, with the federated identity --------
def identity_request(
    operation: str,
    address: str,
    server_domain: str,
    token: Token,
    fields: Mapping[str, str] | None = None,
    *,
    now: datetime | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """OPERATION(Address, Server, Nonce, IssuerCertificate, FIELDS…), XMLDSIG-signed with
    the token's key over Body and Timestamp (the user certificate in KeyInfo)."""
    env, header, body = soap.new_envelope()
    security = etree.SubElement(header, q("Security", WSSE), nsmap={"wsse": WSSE, "wsu": WSU})
    now = now or datetime.now(UTC)
    add_timestamp(security, timestamp(now), timestamp(now + timedelta(minutes=5)))
    op = etree.SubElement(body, q(operation))
    element(op, "Address", address)
    element(op, "Server", server_domain)
    element(op, "Nonce", base64.b64encode(nonce or os.urandom(16)).decode("ascii"))
    issuer = token.issuer.public_bytes(serialization.Encoding.DER)
    element(op, "IssuerCertificate", base64.b64encode(issuer).decode("ascii"))
    for name, value in (fields or {}).items():
        element(op, name, value)
    Signer(token.key, token.cert).sign_envelope(env)
    return soap.serialize(env)


def autofill_request(
    address: str,
    server_domain: str,
    token: Token,
    *,
    now: datetime | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """Autofill(Address, Server, Nonce, IssuerCertificate), signed (`identity_request`)."""
    return identity_request("Autofill", address, server_domain, token, now=now, nonce=nonce)


def countersign(client: Client, token: Token, signed: etree._Element) -> etree._Element:
    """The own server's stamp of `signed` (an act or a wheel signature of this user,
    signed with `token`): the time that counts for it (`wsemail.core.forms.stamps`)."""
    address = client.username.lower()
    raw = base64.b64encode(etree.tostring(signed)).decode("ascii")
    request = identity_request("Countersign", address, domain_of(address), token, {"Signed": raw})
    answer = post_signed(client, request)
    try:
        data = base64.b64decode("".join((text_of(answer, "Stamp") or "").split()), validate=True)
        stamp = parse_untrusted(data, XmlLimits(max_bytes=64 << 10))
    except (ValueError, RemoteFault) as exc:
        raise ServerError("the Countersign answer holds no readable stamp") from exc
    if stamp.tag != f"{{{WF}}}Stamp":
        raise ServerError("the Countersign answer holds no stamp")
    return stamp


def post_signed(client: Client, data: bytes) -> etree._Element:
    """POST a signed request to the client's own server; its answer or its fault."""
    try:
        response = client.http.post(
            client.server,
            content=data,
            headers={"content-type": soap.CONTENT_TYPE},
            extensions=client.extensions,
        )
    except httpx.HTTPError as exc:
        raise TransportError(f"cannot reach {client.server}: {exc}") from exc
    try:
        answer = soap.split_envelope(parse_untrusted(response.content, RESPONSE_LIMITS)).operation
    except RemoteFault as exc:
        raise ServerError(
            f"unreadable answer (HTTP {response.status_code}) from {client.server}"
        ) from exc
    soap.raise_if_fault(answer)
    return answer


def autofill(client: Client, token: Token | None = None) -> dict[str, str]:
    """The user's own record from the own server's Autofill service, asked for with the
    user's federated identity certificate (from IssueToken unless `token` is given)."""
    from wsemail.client.attachments import Attachments

    token = token or Attachments(client).token()
    address = client.username.lower()
    answer = post_signed(client, autofill_request(address, domain_of(address), token))
    if (text_of(answer, "Address") or "").strip().lower() != address:
        raise ServerError("the Autofill answer is for someone else")
    return {f.get("name", ""): f.text or "" for f in answer.findall(q("Field"))}
