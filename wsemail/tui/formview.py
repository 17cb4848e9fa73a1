"""In charge of what the message view knows about a form in a message: its text rendering
from the installed plug-in (or that the plug-in is missing), where its approval chain
stands, and fetching a missing plug-in in two steps so the user approves it in between:
`offer` downloads the wheel and checks its publisher signature (nothing is written),
`accept` installs exactly those bytes — both through `workflow.download_plugin` and
`workflow.install_downloaded`, as the CLI. Pure Python (no Textual)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from wsemail.client.forms import workflow
from wsemail.client.forms.loader import load
from wsemail.client.mail import Client
from wsemail.core.forms import approvals, wheels
from wsemail.core.forms.approvals import Chain
from wsemail.core.forms.contract import Data, FormPlugin
from wsemail.core.forms.document import FormDocument, PluginRef, is_form_body
from wsemail.protocol.errors import PluginError, WsemailError
from wsemail.protocol.message import Message
from wsemail.tui.feedback import describe

INSTALL_HINT = "plug-in not installed — press i to fetch and install"


def publishers() -> list[str]:
    """Trusted form publishers (addresses or @domains), as for `wsemail forms`."""
    return workflow.trusted_publishers()


@dataclass
class FormShown:
    doc: FormDocument
    text: str
    installed: bool
    chain: Chain | None = None
    chain_note: str = ""
    problems: list[str] = field(default_factory=list)
    plugin: FormPlugin | None = None  # set when the plug-in is installed and the form read
    data: Data | None = None

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
    plugin: FormPlugin | None = None
    data: Data | None = None
    try:
        plugin = load(ref.name, ref.version, root)
        data = plugin.from_xml(doc.data)
        text = plugin.render_text(data)
        installed = True
    except PluginError:
        text = f"Form {ref.name} {ref.version}: {INSTALL_HINT}"
    except WsemailError as exc:
        text = f"Form {ref.name} {ref.version} cannot be shown: {describe(exc)}"
        installed = True
    shown = FormShown(doc, text, installed, plugin=plugin if data is not None else None, data=data)
    try:
        roots, crls = workflow.trust_material(client)
        shown.chain = approvals.verify(doc, roots, crls)
    except WsemailError as exc:
        shown.chain_note = f"approval chain not checked: {describe(exc)}"
    else:
        waiting = ", ".join(shown.chain.next_approvers())
        shown.chain_note = shown.chain.status + (f" ({waiting})" if waiting else "")
    return shown


Offer = workflow.Downloaded  # a downloaded wheel whose publisher signature verified


def offer(client: Client, ref: PluginRef, trusted: list[str] | None = None) -> Offer:
    """Download the form's wheel and signature from the location the message names and
    check them (hash named in the message, publisher signature, trusted publisher)."""
    return workflow.download_plugin(
        client,
        ref,
        publishers() if trusted is None else trusted,
        tls_name=workflow.configured_tls_name(),
    )


def accept(
    client: Client, offered: Offer, trusted: list[str] | None = None, root: Path | None = None
) -> wheels.Installed:
    """Install the offered bytes (verified again by `wheels.install`) and load them."""
    return workflow.install_downloaded(
        client, offered, publishers() if trusted is None else trusted, root=root
    )
