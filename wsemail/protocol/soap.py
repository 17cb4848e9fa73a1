"""SOAP 1.2 envelopes and faults: the namespaces, building requests and responses, reading
the parts of a received envelope, and the one mapping between faults and exceptions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from wsemail.protocol.errors import (
    NotUnderstood,
    RemoteFault,
    RequestInvalid,
    ServerError,
    fault_classes,
)

SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
WSEMAIL = "urn:wsemail"
XML_NS = "http://www.w3.org/XML/1998/namespace"
NSMAP = {"s": SOAP, "wsse": WSSE, "wsu": WSU, "w": WSEMAIL}
CONTENT_TYPE = "application/soap+xml; charset=utf-8"

_PREFIX_NS = {"wsse": WSSE, "wsemail": WSEMAIL}


def q(local: str, ns: str = WSEMAIL) -> str:
    """Clark notation for an element in urn:wsemail (or `ns`)."""
    return f"{{{ns}}}{local}"


def element(parent: etree._Element, local: str, text: str | None = None) -> etree._Element:
    """Append a urn:wsemail child with optional text."""
    child = etree.SubElement(parent, q(local))
    if text is not None:
        try:
            child.text = text
        except ValueError as exc:  # lxml: a control character or NUL (not in XML 1.0)
            parent.remove(child)
            raise RequestInvalid(
                f"{local} contains control characters, which a request cannot carry"
            ) from exc
    return child


# not in XML 1.0 (lxml refuses them as text): C0 controls but tab, LF and CR; surrogates;
# U+FFFE and U+FFFF
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def escaped(local: str, text: str) -> str:
    """`text` as the content of element `local` in XML text: what lxml writes for it (&, <
    and > escaped, CR as &#13;). A character XML cannot carry is refused as `element` does."""
    if _NOT_XML.search(text):
        raise RequestInvalid(f"{local} contains control characters, which a request cannot carry")
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    if "\r" in text:
        text = text.replace("\r", "&#13;")
    return text


def from_text(local: str, inner: str) -> etree._Element:
    """The urn:wsemail element `local` holding `inner`, XML text this server wrote (with
    `escaped` values). For a long answer, writing the text and parsing it once is about
    three times faster than one SubElement per child (~1 µs each)."""
    return etree.fromstring(f'<{local} xmlns="{WSEMAIL}">{inner}</{local}>')


def text_of(parent: etree._Element, local: str, default: str | None = None) -> str | None:
    child = next(parent.iterchildren(q(local)), None)  # `find` without its path parser
    if child is None:
        return default
    return child.text or ""


_DIGITS = re.compile(r"[0-9]{1,64}", re.ASCII)


def parse_int(text: str | None, name: str, lo: int, hi: int) -> int:
    """The one reader of protocol integers (element text, attributes, HTTP headers): ASCII
    digits only, surrounding whitespace allowed, no sign, at most 64 digits (an X.509
    serial number has up to 49), then `lo` <= value <= `hi`. Anything else is
    RequestInvalid naming the field and its range (never the ValueError or OverflowError
    of `int()` on "²", "①" or "9999999999")."""
    value = (text or "").strip()
    if _DIGITS.fullmatch(value) is None:
        raise RequestInvalid(f"{name} must be a whole number between {lo} and {hi}")
    number = int(value)
    if not lo <= number <= hi:
        raise RequestInvalid(f"{name} must be between {lo} and {hi}")
    return number


def int_of(parent: etree._Element, local: str, lo: int, hi: int, default: int) -> int:
    """`parse_int` of a urn:wsemail child's text; `default` when absent or empty."""
    raw = text_of(parent, local)
    if raw is None or not raw.strip():
        return default
    return parse_int(raw, local, lo, hi)


def texts_of(parent: etree._Element, local: str) -> list[str]:
    return [c.text or "" for c in parent.iterchildren(q(local))]


class Children:
    """An element's children's texts by tag, read in one pass, with `text_of` and
    `texts_of` as methods: for a parser that reads many fields of one element (a Draft
    has a dozen; each `text_of` walks the children again)."""

    __slots__ = ("_texts",)

    def __init__(self, parent: etree._Element) -> None:
        texts: dict[str, list[str]] = {}
        for child in parent:
            if isinstance(child.tag, str):  # not a comment or a processing instruction
                texts.setdefault(child.tag, []).append(child.text or "")
        self._texts = texts

    def text(self, local: str, default: str | None = None) -> str | None:
        found = self._texts.get(q(local))
        return found[0] if found else default

    def texts(self, local: str) -> list[str]:
        return list(self._texts.get(q(local), ()))


def new_envelope() -> tuple[etree._Element, etree._Element, etree._Element]:
    """An empty envelope: (Envelope, Header, Body)."""
    env = etree.Element(q("Envelope", SOAP), nsmap={"s": SOAP, "w": WSEMAIL})
    header = etree.SubElement(env, q("Header", SOAP))
    body = etree.SubElement(env, q("Body", SOAP))
    return env, header, body


def serialize(env: etree._Element) -> bytes:
    return etree.tostring(env, xml_declaration=False, encoding="utf-8")


def response(payload: etree._Element) -> bytes:
    """Wrap an operation's response element in an envelope."""
    env, header, body = new_envelope()
    env.remove(header)
    body.append(payload)
    return serialize(env)


@dataclass(frozen=True)
class ReceivedEnvelope:
    """The parts of a received envelope that the server reads; nothing else is consulted."""

    root: etree._Element
    header: etree._Element | None
    body: etree._Element
    operation: etree._Element

    @property
    def operation_name(self) -> str:
        return etree.QName(self.operation).localname


def split_envelope(root: etree._Element) -> ReceivedEnvelope:
    """Check the envelope's shape: one Header at most, exactly one Body with one child."""
    if root.tag != q("Envelope", SOAP):
        raise RequestInvalid("not a SOAP 1.2 envelope")
    children = [c for c in root if isinstance(c.tag, str)]
    headers = [c for c in children if c.tag == q("Header", SOAP)]
    bodies = [c for c in children if c.tag == q("Body", SOAP)]
    if len(headers) > 1 or len(bodies) != 1 or len(children) != len(headers) + 1:
        raise RequestInvalid("envelope must hold at most one Header and exactly one Body")
    body = bodies[0]
    operations = [c for c in body if isinstance(c.tag, str)]
    if len(operations) != 1 or (body.text or "").strip():
        raise RequestInvalid("Body must hold exactly one operation element")
    return ReceivedEnvelope(root, headers[0] if headers else None, body, operations[0])


# SOAP 1.2 roles (Part 1 §5.2.2): a block with no role, or one of these two, targets this node
ROLE_NEXT = "http://www.w3.org/2003/05/soap-envelope/role/next"
ROLE_NONE = "http://www.w3.org/2003/05/soap-envelope/role/none"
ROLE_ULTIMATE = "http://www.w3.org/2003/05/soap-envelope/role/ultimateReceiver"
_MUST_UNDERSTAND = q("mustUnderstand", SOAP)
_ROLE = q("role", SOAP)


def check_must_understand(header: etree._Element | None, understood: frozenset[str]) -> None:
    """SOAP 1.2 Part 1 §5.2.3: every header block that targets this node (no env:role, or
    role next / ultimateReceiver) and carries env:mustUnderstand="true" or "1" must be one
    this node processes (`understood`, Clark notation); otherwise NotUnderstood, before
    anything else is done with the request. An env:mustUnderstand that is not an
    xs:boolean is RequestInvalid."""
    if header is None:
        return
    missing: list[str] = []
    for block in header:
        if not isinstance(block.tag, str):
            continue
        flag = block.get(_MUST_UNDERSTAND)
        if flag is None:
            continue
        flag = flag.strip()
        if flag not in ("true", "1", "false", "0"):
            raise RequestInvalid("env:mustUnderstand must be true, false, 1 or 0")
        role = (block.get(_ROLE) or ROLE_ULTIMATE).strip()
        if flag in ("true", "1") and role in (ROLE_ULTIMATE, ROLE_NEXT):
            if block.tag not in understood:
                missing.append(block.tag)
    if missing:
        names = ", ".join(etree.QName(tag).localname for tag in missing)
        raise NotUnderstood(f"header block not understood: {names}", qnames=tuple(missing))


# -- faults -------------------------------------------------------------------------------


def fault(error: RemoteFault) -> bytes:
    """A SOAP 1.2 Fault for `error`; only its reason travels, never a traceback."""
    env, header, body = new_envelope()
    qnames = error.qnames if isinstance(error, NotUnderstood) else ()
    for n, tag in enumerate(qnames):  # SOAP 1.2 Part 1 §5.4.8: one env:NotUnderstood each
        name = etree.QName(tag)
        nsmap = {f"n{n}": name.namespace} if name.namespace else None
        block = etree.SubElement(header, q("NotUnderstood", SOAP), nsmap=nsmap)
        block.set("qname", f"n{n}:{name.localname}" if name.namespace else name.localname)
    if not qnames:
        env.remove(header)
    prefix, _, local = error.subcode.partition(":")
    f = etree.SubElement(body, q("Fault", SOAP), nsmap={"wsse": WSSE})
    code = etree.SubElement(f, q("Code", SOAP))
    etree.SubElement(code, q("Value", SOAP)).text = f"s:{error.code}"
    sub = etree.SubElement(code, q("Subcode", SOAP))
    ns_prefix = "wsse" if prefix == "wsse" else "w"
    etree.SubElement(sub, q("Value", SOAP)).text = f"{ns_prefix}:{local}"
    reason = etree.SubElement(f, q("Reason", SOAP))
    text = etree.SubElement(reason, q("Text", SOAP))
    text.set(f"{{{XML_NS}}}lang", "en")
    text.text = error.reason
    if error.detail:
        detail = etree.SubElement(f, q("Detail", SOAP))
        element(detail, "Detail", error.detail)
    return serialize(env)


def raise_if_fault(operation: etree._Element) -> None:
    """Turn a received Fault element back into the matching RemoteFault subclass."""
    if operation.tag != q("Fault", SOAP):
        return
    value = operation.findtext(f"{{{SOAP}}}Code/{{{SOAP}}}Subcode/{{{SOAP}}}Value") or ""
    reason = operation.findtext(f"{{{SOAP}}}Reason/{{{SOAP}}}Text") or "server fault"
    prefix, _, local = value.strip().partition(":")
    ns = operation.nsmap.get(prefix) if prefix else None
    key = next((p for p, n in _PREFIX_NS.items() if n == ns), prefix)
    cls = fault_classes().get(f"{key}:{local}", ServerError)
    raise cls(reason)
