"""A page of message headers is written as XML text and parsed once (`MessageHeader.xml_text`,
`soap.from_text`): the answer must be the XML that building it element by element gives
(canonically the same; the bytes differ only where an empty element is written `<a/>`
instead of `<a></a>`), whatever the headers hold, and a character XML cannot carry is
refused the same way. The list, search and conversation answers that use it are covered
end to end by their own tests (test_mailbox*, test_search*, test_threads)."""

from __future__ import annotations

import pytest
from lxml import etree

from wsemail.protocol.errors import RequestInvalid
from wsemail.protocol.message import MessageHeader
from wsemail.protocol.soap import element, from_text, q, response

TRICKY = [
    "plain",
    "a & b < c > d",
    "quotes \" and ' stay",
    "tab\there, new\nline, carriage\r\nreturn",
    "&amp; already escaped &lt;",
    "non-ASCII: Grüße, 日本語, emoji 📬",
    "]]> and <![CDATA[ x ]]>",
    "",
    "  spaces  ",
]


def header(text: str, **flags: bool) -> MessageHeader:
    return MessageHeader(
        id="0AbCdEfGhIjKlMnOpQr",
        message_id=f"<{text}>@example.org",
        folder=text or "inbox",
        sender=f"{text}@example.org",
        to=[f"to {text}", "second@example.org"],
        cc=[text] if text else [],
        subject=text,
        date="2026-12-06T00:00:00Z",
        size=len(text),
        seen=bool(flags.get("seen")),
        instant=bool(flags.get("instant")),
        delete_if_undeliverable=bool(flags.get("delete")),
        flagged=bool(flags.get("flagged")),
        answered=bool(flags.get("answered")),
    )


def built(headers: list[MessageHeader], cursor: str | None) -> bytes:
    result = etree.Element(q("ListHeadersResponse"))
    for h in headers:
        h.to_xml(result)
    if cursor is not None:
        element(result, "NextCursor", cursor)
    return response(result)


def written(headers: list[MessageHeader], cursor: str | None) -> bytes:
    inner = "".join(h.xml_text() for h in headers)
    if cursor is not None:
        inner += f"<NextCursor>{cursor}</NextCursor>"
    return response(from_text("ListHeadersResponse", inner))


@pytest.mark.parametrize("cursor", [None, "12345"])
def test_a_page_written_as_text_is_the_page_built_element_by_element(cursor: str | None) -> None:
    flags = [
        {},
        {"seen": True},
        {"instant": True, "delete": True},
        {"flagged": True},
        {"answered": True, "seen": True},
    ]
    headers = [header(text, **flags[i % len(flags)]) for i, text in enumerate(TRICKY)]
    assert same(written(headers, cursor), built(headers, cursor))
    # without empty values, the bytes too
    full = [h for h in headers if h.subject]
    assert written(full, cursor) == built(full, cursor)
    # and it reads back as the same headers
    page = etree.fromstring(written(headers, cursor))
    again = [MessageHeader.from_xml(n) for n in page.iter(q("MessageHeader"))]
    assert [h.subject for h in again] == TRICKY
    assert again == headers


def same(a: bytes, b: bytes) -> bool:
    c14n = [etree.tostring(etree.fromstring(x), method="c14n") for x in (a, b)]
    return c14n[0] == c14n[1]


def test_an_empty_page() -> None:
    assert written([], None) == built([], None)


@pytest.mark.parametrize("bad", ["\x00", "bell\x07", "\x1b[31m", "\ufffe", "\udc80"])
def test_a_character_xml_cannot_carry_is_refused_as_element_refuses_it(bad: str) -> None:
    with pytest.raises(RequestInvalid) as by_tree:
        built([header(bad)], None)
    with pytest.raises(RequestInvalid) as by_text:
        written([header(bad)], None)
    assert "control characters" in str(by_text.value)
    assert type(by_tree.value) is type(by_text.value)


def test_headers_made_from_the_same_recipient_list_do_not_share_it() -> None:
    """A copy's To and Cc are decoded once per distinct JSON text (store.header): each
    header still gets lists of its own."""
    from wsemail.server.store import header as from_row

    row = ("id1", "<m@x>", "inbox", "a@x", '["b@x", "c@x"]', "[]", "s", "d", 1, 0, 0, 0, 0, 0)
    first, second = from_row(row), from_row(row)
    first.to.append("changed@x")
    first.cc.append("changed@x")
    assert second.to == ["b@x", "c@x"]
    assert second.cc == []
    assert from_row(row).to == ["b@x", "c@x"]
