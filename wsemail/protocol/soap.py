"""SOAP 1.2 envelopes and faults: the namespaces, building requests and responses, reading
the parts of a received envelope, and the one mapping between faults and exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from wsemail.protocol.errors import RemoteFault, RequestInvalid, ServerError, fault_classes

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


def text_of(parent: etree._Element, local: str, default: str | None = None) -> str | None:
    child = parent.find(q(local))
    if child is None:
        return default
    return child.text or ""


def texts_of(parent: etree._Element, local: str) -> list[str]:
    return [c.text or "" for c in parent.findall(q(local))]


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


# -- faults -------------------------------------------------------------------------------


def fault(error: RemoteFault) -> bytes:
    """A SOAP 1.2 Fault for `error`; only its reason travels, never a traceback."""
    env, header, body = new_envelope()
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
