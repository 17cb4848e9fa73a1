"""Protocol integers (issue 24, fuzzing): one reader, `wsemail.soap.parse_int`, ASCII digits
only and a range. Values that `str.isdigit()` accepts but `int()` refuses ("²", "①") or
reads as something else ("٣" is 3) and values too large for what they feed (a timedelta of
9999999999 days) are each a 400 InvalidRequest fault through the real server; nothing is
stored and the server still answers."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from lxml import etree

from wsemail.protocol.errors import RequestInvalid
from wsemail.protocol.soap import element, parse_int, q

from conftest import Running, fault_subcode

ODD = ["²", "①", "٣", "１", "9999999999999999999999", "1 0", "+5", "-1", "0x10", "1e3", "1_0"]


def _public_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")


def _stored(server: Running) -> tuple[int, ...]:
    return (
        *server.stored(),
        server.count("SELECT count(*) FROM user_certs"),
        server.count("SELECT count(*) FROM attachment_blobs"),
    )


def test_parse_int_takes_ascii_digits_in_range_only() -> None:
    assert parse_int(" 42\n", "Limit", 1, 50) == 42
    assert parse_int("007", "Limit", 1, 50) == 7
    for text in [*ODD, "", None, "51", "0"]:
        with pytest.raises(RequestInvalid, match="Limit must be"):
            parse_int(text, "Limit", 1, 50)


def test_list_headers_numbers_that_are_not_ascii_digits_get_a_400(server: Running) -> None:
    from test_rejections import signed

    server.client().send(["bob@localhost"], "keep me")
    before = _stored(server)
    for operation, field in (
        ("ListHeaders", "Limit"),
        ("ListHeaders", "Cursor"),
        ("Search", "Limit"),
        ("Search", "Cursor"),
    ):
        for value in ODD:
            op = etree.Element(q(operation))
            if operation == "Search":
                etree.SubElement(op, q("Query")).text = "keep"
            etree.SubElement(op, q(field)).text = value
            data = signed(server.credentials("bob@localhost"), etree.tostring(op))
            response = server.post(data)
            assert response.status_code == 400, (operation, field, value, response.text)
            assert fault_subcode(response) == "wsemail:InvalidRequest"
            assert b"Traceback" not in response.content and field.encode() in response.content
    assert _stored(server) == before
    assert [h.subject for h in server.client("bob@localhost").list_headers().headers] == ["keep me"]


def _extension(extension_id: str, name: str, **fields: str) -> etree._Element:
    op = etree.Element(q("Extension"))
    element(op, "ExtensionId", extension_id)
    request = etree.SubElement(element(op, "Payload"), q(name))
    for tag, text in fields.items():
        element(request, tag, text)
    return op


EXTENSION_REQUESTS = [
    _extension("attachments", "BeginUpload", Name="a.txt", Size="²"),
    _extension("attachments", "BeginUpload", Name="a.txt", Size="9" * 30),
    _extension("im", "History", Limit="①"),
    _extension("im", "OpenChannel", Address="bob@localhost", IdleTimeout="²"),
    _extension("usercerts", "Issue", PublicKey=_public_key(), LifetimeDays="9999999999"),
    _extension("usercerts", "Issue", PublicKey=_public_key(), LifetimeDays="²"),
    _extension("usercerts", "Revoke", Serial="①"),
]


def test_extension_numbers_that_are_not_ascii_digits_get_a_400(server: Running) -> None:
    from test_rejections import signed

    before = _stored(server)
    for operation in EXTENSION_REQUESTS:
        response = server.post(signed(server.credentials(), etree.tostring(operation)))
        what = etree.tostring(operation[1][0])
        assert response.status_code == 400, (what, response.text)
        assert fault_subcode(response) == "wsemail:InvalidRequest"
        assert b"Traceback" not in response.content
    assert _stored(server) == before
    server.client("carol@localhost").list_headers()


@pytest.mark.parametrize("value", ["²", "①", "99999999999999999999"])
def test_issue_token_lifetime_that_is_not_ascii_digits_gets_a_400(
    server: Running, value: str
) -> None:
    client = server.client()
    op = etree.Element(q("IssueToken"))
    element(op, "PublicKey", _public_key())
    element(op, "Lifetime", value)
    before = _stored(server)
    with pytest.raises(RequestInvalid, match="Lifetime"):
        client.call(op)
    assert _stored(server) == before
    op[1].text = "600"
    assert client.call(op).find(q("Certificate")) is not None  # a good one still works


def test_a_content_length_that_is_not_ascii_digits_is_refused(server: Running) -> None:
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(server.url)
    before = _stored(server)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(
            b"POST /wsemail HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/soap+xml\r\nContent-Length: \xc2\xb2\r\n\r\n<x/>"
        )
        answer = sock.recv(65536)
    status = int(answer.split(b" ", 2)[1])
    assert status in (400, 413), answer  # refused by uvicorn or by the server, never a 500
    assert b"Traceback" not in answer
    assert _stored(server) == before
    server.client("carol@localhost").list_headers()
