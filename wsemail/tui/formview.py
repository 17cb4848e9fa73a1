"""In charge of what the message view knows about a form in a message: its text rendering
from the installed plug-in (or that the plug-in is missing), where its approval chain
stands, and fetching a missing plug-in in two steps so the user approves it in between:
`offer` downloads the wheel and checks its publisher signature (nothing is written),
`accept` installs exactly those bytes. Pure Python (no Textual)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from wsemail.client import Client
from wsemail.errors import PluginError, TransportError, UsageError, WsemailError
from wsemail.forms import approvals, wheels, workflow
from wsemail.forms.approvals import Chain
from wsemail.forms.document import FormDocument, PluginRef, is_form_body
from wsemail.forms.loader import load
from wsemail.message import Message
from wsemail.tui.feedback import describe

INSTALL_HINT = "plug-in not installed — press i to fetch and install"


def publishers() -> list[str]:
    """Trusted form publishers (addresses or @domains), as for `wsemail forms`."""
    raw = os.environ.get("WSEMAIL_FORM_PUBLISHERS", "")
    return [p.strip() for p in raw.split(",") if p.strip()]


@dataclass
class FormShown:
    doc: FormDocument
    text: str
    installed: bool
    chain: Chain | None = None
    chain_note: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ref(self) -> PluginRef:
        return self.doc.plugin

    def may_sign(self, address: str) -> bool:
        return self.chain is not None and self.chain.may_sign(address)

    def summary(self) -> str:
        """The rendering and, below it, where the workflow stands."""
        lines = [self.text, ""]
        lines.append(f"Workflow: {self.chain_note}")
        if self.chain is not None:
            lines.extend(f"  {entry}" for entry in self.chain.entries)
        return "\n".join(lines)


def show_form(client: Client, message: Message, root: Path | None = None) -> FormShown | None:
    """None when the message carries no form; never raises for a form it cannot show."""
    if not is_form_body(message.body):
        return None
    doc = FormDocument.parse(message.body)
    ref = doc.plugin
    installed = False
    try:
        plugin = load(ref.name, ref.version, root)
        text = plugin.render_text(plugin.from_xml(doc.data))
        installed = True
    except PluginError:
        text = f"Form {ref.name} {ref.version}: {INSTALL_HINT}"
    except WsemailError as exc:
        text = f"Form {ref.name} {ref.version} cannot be shown: {describe(exc)}"
        installed = True
    shown = FormShown(doc, text, installed)
    try:
        roots, crls = workflow.trust_material(client)
        shown.chain = approvals.verify(doc, roots, crls)
    except WsemailError as exc:
        shown.chain_note = f"approval chain not checked: {describe(exc)}"
    else:
        waiting = ", ".join(shown.chain.next_approvers())
        shown.chain_note = shown.chain.status + (f" ({waiting})" if waiting else "")
    return shown


@dataclass(frozen=True)
class Offer:
    """A downloaded wheel whose publisher signature verified; not installed yet."""

    ref: PluginRef
    file_name: str
    data: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    publisher: str
    sha256: str


def offer(client: Client, ref: PluginRef, trusted: list[str] | None = None) -> Offer:
    """Download the form's wheel and signature from the location the message names and
    check them (hash named in the message, publisher signature, trusted publisher)."""
    if not ref.location or not ref.sha256:
        raise UsageError(f"the form names no location for {ref.name} {ref.version}")
    roots, crls = workflow.trust_material(client)
    url = httpx.URL(ref.location)
    file_name = url.params.get("file", "")
    wheels.parse_name(file_name)
    tls_name = os.environ.get("WSEMAIL_FORM_TLS_NAME") or None
    extensions = {"sni_hostname": tls_name} if tls_name else {}
    if not tls_name and url.netloc == httpx.URL(client.server).netloc:
        extensions = dict(client._extensions)  # the own server: the client's TLS name
    try:
        http = client._http  # the client's own TLS settings, as workflow.fetch_plugin
        got = http.get(url, extensions=extensions)
        sig = http.get(url.copy_with(params={"file": file_name + ".sig"}), extensions=extensions)
    except httpx.HTTPError as exc:
        raise TransportError(f"cannot fetch {ref.location}: {exc}") from exc
    if got.status_code != 200 or sig.status_code != 200:
        raise TransportError(f"cannot fetch {ref.location}: HTTP {got.status_code}")
    if wheels.sha256_hex(got.content) != ref.sha256:
        raise wheels.WheelRefused(f"{file_name}: SHA-256 differs from the one in the message")
    checked = wheels.verify(
        file_name,
        got.content,
        sig.content,
        roots,
        crls,
        publishers() if trusted is None else trusted,
    )
    return Offer(ref, file_name, got.content, sig.content, checked.publisher, checked.sha256)


def accept(
    client: Client, offered: Offer, trusted: list[str] | None = None, root: Path | None = None
) -> wheels.Installed:
    """Install the offered bytes (verified again by `wheels.install`) and load them."""
    roots, crls = workflow.trust_material(client)
    ref = offered.ref
    record = wheels.install(
        offered.file_name,
        offered.data,
        offered.signature,
        roots=roots,
        crls=crls,
        publishers=publishers() if trusted is None else trusted,
        location=ref.location,
        root=root,
    )
    if (record.name, record.version) != (ref.name, ref.version):
        raise wheels.WheelRefused(f"{offered.file_name} holds {record.name} {record.version}")
    load(ref.name, ref.version, root)
    return record
