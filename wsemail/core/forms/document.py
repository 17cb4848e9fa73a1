"""In charge of a form document: the XML that travels as a form message's body, inside the
sending server's signed content (DESIGN.md §8).

    <wf:Form xmlns:wf="urn:wsemail:forms" Id="…">
      <wf:Plugin name="requisition" version="1.0.0" location="https://…" sha256="…"/>
      <wf:Sender>carol@a.test</wf:Sender>
      <wf:Data> …the plug-in's own namespace… </wf:Data>
      <wf:Route> <wf:Step role="manager"> <wf:Approver>bob@a.test</wf:Approver>… </wf:Step>…
      </wf:Route>
      <wf:Acts> <wf:Act Kind="approve|reject|delegate">…signed by the user…</wf:Act>
                <wf:Stamp>…its countersignature by the signer's server…</wf:Stamp>… </wf:Acts>
    </wf:Form>

What act number `i` covers (`digest_before(i)`) is a hash chain, computed for all acts in
one pass: h0 = SHA-256("wsemail-form/2" ‖ SHA-256(c14n of the form with no acts)), then
h(k+1) = SHA-256(h(k) ‖ SHA-256(c14n act k) ‖ SHA-256(c14n stamp k)); act i covers h(i)
(hex): the data, plug-in, route and every earlier act and stamp, in order.

Untrusted documents are read with the hardened parser only.
"""

from __future__ import annotations

import copy
import hashlib
import re
import secrets
from dataclasses import dataclass

from lxml import etree

from wsemail.core.forms.contract import Step
from wsemail.protocol.errors import RemoteFault, UsageError
from wsemail.protocol.message import normalize_address
from wsemail.protocol.xmlsafe import XmlLimits, c14n, parse_untrusted

WF = "urn:wsemail:forms"
# where a domain server serves its published form wheels (`?file=NAME`, `NAME.sig`)
WHEEL_PATH = "/wsemail/forms/wheel"
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_VERSION = re.compile(r"^[0-9][0-9A-Za-z.+-]{0,31}$")
_ROLE = re.compile(r"^[A-Za-z][A-Za-z0-9 _-]{0,63}$")
LIMITS = XmlLimits(max_bytes=4 << 20)
MAX_STEPS = 16  # route steps
MAX_APPROVERS = 32  # approvers named in one step


def w(tag: str) -> str:
    return f"{{{WF}}}{tag}"


def valid_role(role: str) -> bool:
    """A route step's role: a letter, then up to 63 letters, digits, spaces, '_' or '-'."""
    return bool(_ROLE.match(role))


class FormError(UsageError):
    """A form document that is malformed or whose approval chain does not verify."""


@dataclass(frozen=True)
class PluginRef:
    name: str
    version: str
    location: str = ""
    sha256: str = ""

    def check(self) -> PluginRef:
        if not _NAME.match(self.name) or not _VERSION.match(self.version):
            raise FormError("a form names its plug-in with a plain name and version")
        if self.sha256 and not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise FormError("a plug-in SHA-256 is 64 lower-case hex digits")
        return self


class FormDocument:
    """One form document (a tree the caller owns)."""

    def __init__(self, root: etree._Element) -> None:
        if root.tag != w("Form"):
            raise FormError("not a wsemail form document")
        for tag in ("Plugin", "Sender", "Data", "Route", "Acts"):
            if len(root.findall(w(tag))) != 1:
                raise FormError(f"a form needs exactly one {tag}")
        holder = root.find(w("Data"))
        if holder is None or len([c for c in holder if isinstance(c.tag, str)]) != 1:
            raise FormError("a form's Data holds exactly one element")
        self.root = root
        self.plugin.check()
        self.route()  # raises on a malformed route

    @classmethod
    def new(
        cls, plugin: PluginRef, data: etree._Element, sender: str, route: list[Step]
    ) -> FormDocument:
        root = etree.Element(w("Form"), nsmap={"wf": WF})
        root.set("Id", f"form-{secrets.token_hex(12)}")
        node = etree.SubElement(root, w("Plugin"))
        for key in ("name", "version", "location", "sha256"):
            node.set(key, getattr(plugin.check(), key))
        etree.SubElement(root, w("Sender")).text = normalize_address(sender)
        etree.SubElement(root, w("Data")).append(data)
        etree.SubElement(root, w("Route"))
        etree.SubElement(root, w("Acts"))
        doc = cls(root)
        for step in route:
            doc.add_step(step)
        return doc

    @classmethod
    def parse(cls, data: bytes | str) -> FormDocument:
        raw = data.encode() if isinstance(data, str) else data
        try:
            root = parse_untrusted(raw, LIMITS)
        except RemoteFault as exc:
            raise FormError(f"not a readable form document: {exc}") from exc
        return cls(root)

    def to_bytes(self) -> bytes:
        return etree.tostring(self.root, encoding="utf-8")

    def __str__(self) -> str:
        return self.to_bytes().decode()

    # parts ------------------------------------------------------------------------------
    @property
    def form_id(self) -> str:
        value = self.root.get("Id", "")
        if not re.fullmatch(r"form-[0-9a-f]{24}", value):
            raise FormError("a form needs an Id like form-<24 hex>")
        return value

    @property
    def plugin(self) -> PluginRef:
        node = self.root.find(w("Plugin"))
        assert node is not None
        return PluginRef(
            node.get("name", ""),
            node.get("version", ""),
            node.get("location", ""),
            node.get("sha256", ""),
        )

    @property
    def sender(self) -> str:
        return (self.root.findtext(w("Sender")) or "").strip()

    @property
    def data(self) -> etree._Element:
        holder = self.root.find(w("Data"))
        assert holder is not None
        return next(c for c in holder if isinstance(c.tag, str))

    def route(self) -> list[Step]:
        steps = []
        holder = self.root.find(w("Route"))
        assert holder is not None
        for node in holder.findall(w("Step")):
            role = node.get("role", "")
            approvers = tuple(normalize_address(a.text or "") for a in node.findall(w("Approver")))
            if not _ROLE.match(role) or not approvers:
                raise FormError("each route step needs a role and at least one approver")
            if len(approvers) > MAX_APPROVERS:
                raise FormError(f"a route step names at most {MAX_APPROVERS} approvers")
            steps.append(Step(role, approvers))
            if len(steps) > MAX_STEPS:
                raise FormError(f"a route has at most {MAX_STEPS} steps")
        return steps

    def add_step(self, step: Step) -> None:
        """Append a step (routing rules); only before anyone signed."""
        if self.acts():
            raise FormError("the route cannot change once someone has signed")
        holder = self.root.find(w("Route"))
        assert holder is not None
        node = etree.SubElement(holder, w("Step"))
        node.set("role", step.role)
        for address in step.approvers:
            etree.SubElement(node, w("Approver")).text = normalize_address(address)
        self.route()

    def entries(self) -> list[tuple[etree._Element, etree._Element | None]]:
        """(act, its server's stamp or None) in order; FormError on anything else."""
        holder = self.root.find(w("Acts"))
        assert holder is not None
        pairs: list[tuple[etree._Element, etree._Element | None]] = []
        for child in holder:
            if not isinstance(child.tag, str):
                continue
            if child.tag == w("Act"):
                pairs.append((child, None))
            elif child.tag == w("Stamp") and pairs and pairs[-1][1] is None:
                pairs[-1] = (pairs[-1][0], child)
            else:
                raise FormError("Acts holds Act elements, each followed by at most one Stamp")
        return pairs

    def acts(self) -> list[etree._Element]:
        return [act for act, _ in self.entries()]

    def append_act(self, act: etree._Element) -> None:
        holder = self.root.find(w("Acts"))
        assert holder is not None
        holder.append(act)

    def append_stamp(self, stamp: etree._Element) -> None:
        """The server's stamp of the last act (which has none yet)."""
        entries = self.entries()
        if not entries or entries[-1][1] is not None:
            raise FormError("a stamp follows the act it countersigns")
        holder = self.root.find(w("Acts"))
        assert holder is not None
        holder.append(stamp)

    def digests(self) -> list[str]:
        """`digest_before(i)` for every i from 0 to the number of acts, in one pass."""
        root = copy.deepcopy(self.root)
        holder = root.find(w("Acts"))
        assert holder is not None
        for child in list(holder):
            holder.remove(child)
        state = hashlib.sha256(b"wsemail-form/2" + hashlib.sha256(c14n(root)).digest()).digest()
        found = [state.hex()]
        for act, stamp in self.entries():
            parts = [state, hashlib.sha256(c14n(act)).digest()]
            parts.append(hashlib.sha256(c14n(stamp) if stamp is not None else b"").digest())
            state = hashlib.sha256(b"".join(parts)).digest()
            found.append(state.hex())
        return found

    def digest_before(self, index: int) -> str:
        """What the act at `index` covers (see the module doc)."""
        return self.digests()[index]


def is_form_body(body: str) -> bool:
    head = body.lstrip()[:200]
    return head.startswith("<") and WF in head
