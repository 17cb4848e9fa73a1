"""The one hardened XML parser for untrusted input, and exclusive canonicalisation.

Rules (DESIGN.md §4): refuse any DOCTYPE or ENTITY declaration before parsing; never resolve
entities, load a DTD or touch the network; never `huge_tree`; UTF-8 only; the size limit is
checked before parsing and the depth, element-count, attributes-per-element and namespace-
declarations-per-element limits while the parser streams, so an over-deep, over-long or
over-wide document is dropped before it is built in full. Every reader of untrusted XML
(the server endpoint, clients reading answers, relayed and sealed messages, form documents
and what form plug-ins are given, wheel signatures) goes through `parse_untrusted`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from wsemail.protocol.errors import ForbiddenXml, LimitExceeded, RequestInvalid, TooLarge

_FORBIDDEN = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_CHUNK = 16384
_DECLARED_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


@dataclass(frozen=True)
class XmlLimits:
    max_bytes: int = 1 << 20
    max_depth: int = 32
    max_elements: int = 10_000
    max_attributes: int = 64  # attributes on one element (namespace declarations apart)
    max_namespaces: int = 32  # namespace declarations on one element


def parse_untrusted(data: bytes, limits: XmlLimits = XmlLimits()) -> etree._Element:
    """Parse bytes from a peer; raise a RequestInvalid subclass on anything suspicious."""
    if len(data) > limits.max_bytes:
        raise TooLarge(f"request larger than {limits.max_bytes} bytes")
    if _FORBIDDEN.search(data):
        raise ForbiddenXml("DOCTYPE and ENTITY declarations are not allowed")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data:
        raise RequestInvalid("only UTF-8 XML is accepted")
    declared = _DECLARED_ENCODING.match(data)
    if declared and declared.group(1).lower().replace(b"_", b"-") not in (b"utf-8", b"utf8"):
        raise RequestInvalid("only UTF-8 XML is accepted")
    parser = etree.XMLPullParser(
        events=("start", "end", "start-ns"),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    depth = elements = declarations = 0
    root: etree._Element | None = None
    view = memoryview(data)
    try:
        for offset in range(0, len(data) or 1, _CHUNK):
            parser.feed(bytes(view[offset : offset + _CHUNK]))
            for event, node in parser.read_events():
                if event == "start-ns":  # the declarations of the next element to start
                    declarations += 1
                    if declarations > limits.max_namespaces:
                        raise LimitExceeded(
                            f"XML element declares more than {limits.max_namespaces} namespaces"
                        )
                    continue
                assert isinstance(node, etree._Element)
                if event == "end":
                    depth -= 1
                    continue
                depth += 1
                elements += 1
                declarations = 0
                if len(node.attrib) > limits.max_attributes:
                    raise LimitExceeded(
                        f"XML element has more than {limits.max_attributes} attributes"
                    )
                if depth > limits.max_depth:
                    raise LimitExceeded(f"XML nested deeper than {limits.max_depth}")
                if elements > limits.max_elements:
                    raise LimitExceeded(f"XML has more than {limits.max_elements} elements")
                if root is None:
                    root = node
        parser.close()
    except etree.XMLSyntaxError as exc:
        raise RequestInvalid(f"malformed XML: {exc.msg}") from exc
    if root is None:
        raise RequestInvalid("empty XML document")
    return root


def c14n(element: etree._Element) -> bytes:
    """Exclusive XML canonicalisation (no comments) of one element."""
    return etree.tostring(element, method="c14n", exclusive=True, with_comments=False)
