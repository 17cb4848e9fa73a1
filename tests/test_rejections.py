"""Every rejection path of DESIGN.md §4: the right fault code and HTTP status, nothing
stored (no message, no replay-cache row), and the server still answers the next request."""

from __future__ import annotations

import base64
import concurrent.futures
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from lxml import etree

from wsemail.protocol import soap
from wsemail.protocol.auth import Credentials
from wsemail.protocol.soap import WSSE, q

from conftest import Running, fault_subcode, start_server

SEND = (
    b'<w:Send xmlns:w="urn:wsemail"><w:Message><w:To>bob@localhost</w:To>'
    b"<w:Subject>s</w:Subject><w:Body>b</w:Body></w:Message></w:Send>"
)
LIST = b'<w:ListHeaders xmlns:w="urn:wsemail"><w:Folder>inbox</w:Folder></w:ListHeaders>'


def signed(creds: Credentials, operation: bytes, now: datetime | None = None) -> bytes:
    env, header, body = soap.new_envelope()
    body.append(etree.fromstring(operation))
    creds.sign(header, body, now)
    return soap.serialize(env)


def edit_token(data: bytes, tag: str, value: str | None) -> bytes:
    """Change (or with None, drop) one element of the UsernameToken, keeping the rest."""
    root = etree.fromstring(data)
    node = root.find(f".//{{{WSSE}}}UsernameToken/{tag}")
    assert node is not None
    if value is None:
        node.getparent().remove(node)
    else:
        node.text = value
    return etree.tostring(root)


def assert_rejected(
    server: Running, response: httpx.Response, status: int, subcode: str, before: tuple[int, int]
) -> None:
    assert response.status_code == status, response.text
    assert fault_subcode(response) == subcode
    assert b"Traceback" not in response.content
    assert server.stored() == before
    server.client("carol@localhost").list_headers()  # the server still serves


@pytest.mark.parametrize(
    "payload",
    [
        b'<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>&xxe;</s:Body>'
        b"</s:Envelope>",
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>'
        b"<lolz>&lol2;</lolz>",
        b'<!DOCTYPE x SYSTEM "http://127.0.0.1:9/evil.dtd"><x/>',
        b'<!doctype x [<!ENTITY % p SYSTEM "file:///etc/hostname"> %p;]><x/>',
        b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
        b'<!ENTITY a "b"></s:Body></s:Envelope>',
    ],
)
def test_doctype_and_entities_are_refused(server: Running, payload: bytes) -> None:
    before = server.stored()
    assert_rejected(server, server.post(payload), 400, "wsemail:ForbiddenXml", before)


def test_oversized_body_is_refused_with_and_without_content_length(tmp_path: Path) -> None:
    small = start_server(tmp_path / "s", max_request_bytes=4096)
    try:
        before = small.stored()
        big = signed(small.credentials(), SEND.replace(b"<w:Body>b", b"<w:Body>" + b"x" * 9000))
        assert_rejected(small, small.post(big), 413, "wsemail:TooLarge", before)

        def chunks():  # no Content-Length: the limit is enforced while streaming
            for _ in range(10):
                yield b"<a>" + b"x" * 1000

        before = small.stored()
        streamed = httpx.post(small.url, content=chunks(), timeout=10)
        assert_rejected(small, streamed, 413, "wsemail:TooLarge", before)
    finally:
        small.stop()


def test_deeply_nested_xml_is_refused(server: Running) -> None:
    before = server.stored()
    deep = b"<w:x>" * 200 + b"</w:x>" * 200
    data = signed(
        server.credentials(), SEND.replace(b"<w:Body>b</w:Body>", b"<w:Body>" + deep + b"</w:Body>")
    )
    assert_rejected(server, server.post(data), 400, "wsemail:LimitExceeded", before)


def test_too_many_elements_are_refused(tmp_path: Path) -> None:
    narrow = start_server(tmp_path / "s", max_elements=50)
    try:
        before = narrow.stored()
        many = b"<w:To>bob@localhost</w:To>" * 60
        data = signed(narrow.credentials(), SEND.replace(b"<w:To>bob@localhost</w:To>", many))
        assert_rejected(narrow, narrow.post(data), 400, "wsemail:LimitExceeded", before)
    finally:
        narrow.stop()


@pytest.mark.parametrize(
    "payload",
    [
        b"<s:Envelope",
        b"not xml at all",
        b"",
        b"<a><b></a>",
        b'<?xml version="1.0" encoding="ISO-8859-1"?><a>\xe9</a>',
        b"\xff\xfe<\x00a\x00/\x00>\x00",
        b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body/></s:Envelope>',
        b"<Envelope><Body><Send/></Body></Envelope>",
    ],
)
def test_malformed_requests_are_refused(server: Running, payload: bytes) -> None:
    before = server.stored()
    assert_rejected(server, server.post(payload), 400, "wsemail:InvalidRequest", before)


@pytest.mark.parametrize(
    "skew",
    [timedelta(seconds=-301), timedelta(seconds=61), timedelta(days=-3), timedelta(days=400)],
)
def test_stale_and_future_timestamps_are_refused(server: Running, skew: timedelta) -> None:
    before = server.stored()
    data = signed(server.credentials(), SEND, datetime.now(UTC) + skew)
    assert_rejected(server, server.post(data), 401, "wsse:MessageExpired", before)


def test_replayed_request_is_refused(server: Running) -> None:
    data = signed(server.credentials(), SEND)
    assert server.post(data).status_code == 200
    before = server.stored()
    assert_rejected(server, server.post(data), 401, "wsemail:Replay", before)


def test_twenty_concurrent_copies_store_exactly_one(server: Running) -> None:
    data = signed(server.credentials(), SEND)
    before = server.stored()
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        statuses = sorted(r.status_code for r in pool.map(lambda _: server.post(data), range(20)))
    assert statuses == [200] + [401] * 19
    messages, nonces = server.stored()
    assert (messages, nonces) == (before[0] + 2, before[1] + 1)  # sent copy + bob's inbox
    assert len(server.client("bob@localhost").list_headers().headers) == 1


@pytest.mark.parametrize("nonce", [None, base64.b64encode(b"short").decode(), "!!not base64!!"])
def test_missing_or_short_nonce_is_refused(server: Running, nonce: str | None) -> None:
    before = server.stored()
    data = edit_token(signed(server.credentials(), SEND), f"{{{WSSE}}}Nonce", nonce)
    assert_rejected(server, server.post(data), 400, "wsse:InvalidSecurity", before)


def test_missing_security_header_is_refused(server: Running) -> None:
    before = server.stored()
    data = (
        b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
        + SEND
        + b"</s:Body></s:Envelope>"
    )
    assert_rejected(server, server.post(data), 400, "wsse:InvalidSecurity", before)


def _mac(data: bytes) -> str:
    return etree.fromstring(data).findtext(f".//{{{WSSE}}}Password") or ""


@pytest.mark.parametrize(
    "mangle",
    [
        lambda mac: mac[:-8],
        lambda mac: "",
        lambda mac: base64.b64encode(b"\0" * 32).decode(),
        lambda mac: mac[:10] + ("A" if mac[10] != "A" else "B") + mac[11:],
    ],
)
def test_wrong_or_truncated_mac_is_refused(server: Running, mangle) -> None:  # type: ignore[no-untyped-def]
    before = server.stored()
    good = signed(server.credentials(), SEND)
    data = edit_token(good, f"{{{WSSE}}}Password", mangle(_mac(good)))
    assert_rejected(server, server.post(data), 401, "wsse:FailedAuthentication", before)


def test_tampered_body_is_refused(server: Running) -> None:
    before = server.stored()
    data = signed(server.credentials(), SEND).replace(b"bob@localhost", b"carol@localhost")
    assert_rejected(server, server.post(data), 401, "wsse:FailedAuthentication", before)


def test_unknown_user_gets_the_same_fault_as_a_wrong_password(server: Running) -> None:
    before = server.stored()
    alice = server.client()
    fake = Credentials("mallory@localhost", b"k" * 32)
    unknown = server.post(signed(fake, LIST))
    wrong = server.post(signed(Credentials("alice@localhost", b"k" * 32), LIST))
    assert_rejected(server, unknown, 401, "wsse:FailedAuthentication", before)
    assert unknown.content == wrong.content
    # the salt of an unknown name is stable, so it does not reveal that the name is unknown
    assert alice.get_salt("mallory@localhost") == alice.get_salt("mallory@localhost")
    assert len(alice.get_salt("mallory@localhost")) == len(alice.get_salt("alice@localhost"))


def test_other_users_message_is_not_found_like_a_missing_one(server: Running) -> None:
    alice, bob = server.client(), server.client("bob@localhost")
    alice.send(["bob@localhost"], "private")
    bobs = bob.list_headers().headers[0].id
    carol = server.client("carol@localhost")
    for op in (b"Retrieve", b"Delete"):
        for target in (bobs.encode(), b"no-such-message"):
            before = server.stored()
            data = signed(
                carol.credentials,
                b'<w:%s xmlns:w="urn:wsemail"><w:Id>%s</w:Id></w:%s>' % (op, target, op),
            )
            response = server.post(data)
            assert response.status_code == 404 and fault_subcode(response) == "wsemail:NotFound"
            assert b"no such message" in response.content
            messages, nonces = server.stored()
            assert messages == before[0]  # nothing deleted; only the spent nonce was kept
    assert bob.retrieve(bobs).subject == "private"


@pytest.mark.parametrize(
    "field,value",
    [
        ("Folder", "inbox' OR '1'='1"),
        ("Folder", "inbox; DROP TABLE messages;--"),
        ("Cursor", "1; DROP TABLE messages"),
        ("Cursor", "0 OR 1=1"),
        ("Limit", "1 OR 1=1"),
        ("Limit", "-1"),
        ("UnreadOnly", "1=1"),
    ],
)
def test_sql_looking_list_parameters_are_refused(server: Running, field: str, value: str) -> None:
    server.client().send(["bob@localhost"], "keep me")
    before = server.stored()
    op = etree.Element(q("ListHeaders"))
    etree.SubElement(op, q(field)).text = value
    data = signed(server.credentials("bob@localhost"), etree.tostring(op))
    response = server.post(data)
    if field == "Folder":  # a well-formed folder name that bob has no folder of
        assert response.status_code == 404 and fault_subcode(response) == "wsemail:NotFound"
    else:
        assert response.status_code == 400
        assert fault_subcode(response) == "wsemail:InvalidRequest"
    assert server.stored() == before
    assert [h.subject for h in server.client("bob@localhost").list_headers().headers] == ["keep me"]


class Clock:
    """The server's clock, moved by the test (no sleeping, no timing assumptions)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def at(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)


def post_from(running: Running, source: str, data: bytes) -> httpx.Response:
    """POST from another loopback address (127.0.0.0/8): another peer to the server."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=10) as http:
        return http.post(running.url, content=data, headers={"content-type": soap.CONTENT_TYPE})


def test_failed_logins_are_rate_limited_then_recover(tmp_path: Path) -> None:
    clock = Clock()
    limited = start_server(tmp_path / "s", failures_per_user=3, failure_window=60, clock=clock)
    try:
        before = limited.stored()
        wrong = Credentials("alice@localhost", b"w" * 32)
        codes = [limited.post(signed(wrong, LIST, clock.at())).status_code for _ in range(4)]
        assert codes == [401, 401, 401, 429]
        response = limited.post(signed(limited.credentials(), LIST, clock.at()))
        assert response.status_code == 429 and fault_subcode(response) == "wsemail:RateLimited"
        assert limited.stored() == before
        clock.now += 19  # 3 failures a minute come back one every 20 s
        assert limited.post(signed(limited.credentials(), LIST, clock.at())).status_code == 429
        clock.now += 1
        assert limited.post(signed(limited.credentials(), LIST, clock.at())).status_code == 200
    finally:
        limited.stop()


def test_bad_requests_from_elsewhere_do_not_lock_the_real_user_out(tmp_path: Path) -> None:
    limited = start_server(tmp_path / "s", failures_per_user=3, failures_per_peer=5)
    try:
        before = limited.stored()
        attacker = "127.0.0.2"
        wrong = Credentials("alice@localhost", b"w" * 32)
        codes = [post_from(limited, attacker, signed(wrong, LIST)).status_code for _ in range(5)]
        assert codes == [401, 401, 401, 429, 429]
        # an unknown name is counted exactly like a known one
        ghost = Credentials("ghost@localhost", b"w" * 32)
        codes = [post_from(limited, attacker, signed(ghost, LIST)).status_code for _ in range(4)]
        assert codes == [401, 401, 429, 429]  # the peer's 5 failures are used up
        for name in ("bob", "nobody"):  # every name, from that peer
            creds = Credentials(f"{name}@localhost", b"w" * 32)
            assert post_from(limited, attacker, signed(creds, LIST)).status_code == 429
        assert limited.stored() == before
        # alice from her own address, with her password: served
        assert limited.post(signed(limited.credentials(), LIST)).status_code == 200
        assert limited.client("alice@localhost").list_headers().headers == []
        # and a wrong password from her address still counts for her address only
        assert limited.post(signed(wrong, LIST)).status_code == 401
    finally:
        limited.stop()


def _slow_body(pause: float, parts: int = 4):  # type: ignore[no-untyped-def]
    import time

    for _ in range(parts):
        time.sleep(pause)
        yield b"<a>"


def test_concurrency_limit_answers_503_and_recovers(tmp_path: Path) -> None:
    busy = start_server(tmp_path / "s", max_concurrency=1)
    try:
        before = busy.stored()
        server = busy.controller.server
        server.inflight = 1  # the one slot is taken (a request running)
        refused = busy.post(b"<x/>")
        assert refused.status_code == 503 and fault_subcode(refused) == "wsemail:Busy"
        server.inflight = 0
        assert busy.stored() == before
        busy.client("carol@localhost").list_headers()
    finally:
        busy.stop()


def test_slow_body_holds_no_concurrency_slot(tmp_path: Path) -> None:
    busy = start_server(tmp_path / "s", max_concurrency=1)
    try:
        before = busy.stored()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow = pool.submit(httpx.post, busy.url, content=_slow_body(0.3), timeout=10)
            import time

            time.sleep(0.3)  # the slow body is being read: the one slot is still free
            busy.client("carol@localhost").list_headers()
            assert slow.result().status_code == 400  # "<a><a>…" is not XML
        assert busy.stored()[0] == before[0]
    finally:
        busy.stop()


def test_slow_request_body_times_out(tmp_path: Path) -> None:
    slow = start_server(tmp_path / "s", read_timeout=0.3)
    try:
        before = slow.stored()
        response = httpx.post(slow.url, content=_slow_body(0.2), timeout=10)
        assert response.status_code == 408
        assert fault_subcode(response) == "wsemail:Timeout"
        assert slow.stored() == before
        slow.client("carol@localhost").list_headers()
    finally:
        slow.stop()


# --- outside review (issue 24): strict timestamps in the UsernameToken and Timestamp ---------


def _with_stamp(data: bytes, created: str, expires: str | None) -> bytes:
    """The request with a wsu:Timestamp beside its UsernameToken."""
    from wsemail.protocol.dsig import add_timestamp

    root = etree.fromstring(data)
    security = root.find(f".//{{{WSSE}}}Security")
    assert security is not None
    stamp = add_timestamp(security, created, expires or "")
    if expires is None:
        stamp.remove(stamp[1])
    return etree.tostring(root)


@pytest.mark.parametrize(
    "created,status,subcode",
    [
        ("20261202T142744Z", 400, "wsse:InvalidSecurity"),  # ISO 8601 basic format
        ("2026-12-02T14:27:44", 400, "wsse:InvalidSecurity"),  # no time zone
        ("2026-12-02T14:27:44.5+0100", 400, "wsse:InvalidSecurity"),  # zone without colon
        ("２０２６-12-02T14:27:44Z", 400, "wsse:InvalidSecurity"),  # fullwidth digits
        ("0001-01-01T00:00:00+01:00", 401, "wsse:MessageExpired"),  # overflows in UTC
        ("9999-12-31T23:59:59-01:00", 401, "wsse:MessageExpired"),
    ],
)
@pytest.mark.parametrize("where", ["UsernameToken", "Timestamp"])
def test_created_that_is_not_an_xsd_datetime_is_a_clean_fault(
    server: Running, created: str, status: int, subcode: str, where: str
) -> None:
    before = server.stored()
    data = signed(server.credentials(), SEND)
    if where == "UsernameToken":
        data = edit_token(data, f"{{{soap.WSU}}}Created", created)
    else:
        data = _with_stamp(data, created, None)
    assert_rejected(server, server.post(data), status, subcode, before)


@pytest.mark.parametrize("offsets", [(-200, -100), (0, -30), (0, 0)])
def test_a_timestamp_beside_the_token_that_has_expired_is_refused(
    server: Running, offsets: tuple[int, int]
) -> None:
    from wsemail.protocol.auth import timestamp

    now = datetime.now(UTC)
    created, expires = (timestamp(now + timedelta(seconds=s)) for s in offsets)
    before = server.stored()
    data = _with_stamp(signed(server.credentials(), SEND), created, expires)
    assert_rejected(server, server.post(data), 401, "wsse:MessageExpired", before)


# --- outside review (issue 24): wide elements --------------------------------------------------


def _widen(data: bytes, attributes: int = 0, namespaces: int = 0) -> bytes:
    """A serialized request with extra attributes and namespace declarations on its Send
    element (after signing: the MAC no longer matches, the parser refuses it first)."""
    extra = "".join(f' a{i}="x"' for i in range(attributes))
    extra += "".join(f' xmlns:p{i}="urn:p{i}"' for i in range(namespaces))
    assert data.count(b"<w:Send>") == 1
    return data.replace(b"<w:Send>", b"<w:Send" + extra.encode() + b">")


@pytest.mark.parametrize(
    "attributes,namespaces",
    [(50_000, 0), (65, 0), (0, 10_000), (0, 33)],
    ids=["50000-attributes", "65-attributes", "10000-namespaces", "33-namespaces"],
)
def test_wide_elements_are_refused(server: Running, attributes: int, namespaces: int) -> None:
    # libxml2's exclusive c14n of one element with 50,000 attributes takes about a minute:
    # the parser's limit also keeps such an element away from the MAC and signature checks
    before = server.stored()
    data = _widen(signed(server.credentials(), SEND), attributes, namespaces)
    assert_rejected(server, server.post(data), 400, "wsemail:LimitExceeded", before)


def test_elements_at_the_width_limits_are_parsed(server: Running) -> None:
    # 64 attributes on Send: past the parser, refused only by the MAC that no longer matches
    response = server.post(_widen(signed(server.credentials(), SEND), attributes=64))
    assert response.status_code == 401 and fault_subcode(response) == "wsse:FailedAuthentication"
    # 32 declarations on Send (w and 31 unused ones, which exclusive c14n leaves out of the
    # MAC): served
    assert server.stored()[0] == 0
    response = server.post(_widen(signed(server.credentials(), SEND), namespaces=31))
    assert response.status_code == 200, response.text
    assert server.stored()[0] == 2  # alice's sent copy and bob's


# --- outside review (issue 24): SOAP 1.2 mustUnderstand ------------------------------------------

MU = f"{{{soap.SOAP}}}mustUnderstand"


def _with_header_block(data: bytes, tag: str, **attributes: str) -> bytes:
    root = etree.fromstring(data)
    header = root.find(f"{{{soap.SOAP}}}Header")
    assert header is not None
    block = etree.SubElement(header, tag)
    for name, value in attributes.items():
        block.set(MU if name == "mu" else f"{{{soap.SOAP}}}role", value)
    return etree.tostring(root)


@pytest.mark.parametrize("flag", ["true", "1", " true "])
def test_an_unknown_must_understand_header_gets_the_must_understand_fault(
    server: Running, flag: str
) -> None:
    before = server.stored()
    data = _with_header_block(signed(server.credentials(), SEND), "{urn:other}Trace", mu=flag)
    response = server.post(data)
    # SOAP 1.2 Part 2 §7.5.2.2: env:MustUnderstand is HTTP 500 (env:Sender would be 400)
    assert_rejected(server, response, 500, "wsemail:NotUnderstood", before)
    root = etree.fromstring(response.content)
    code = root.find(f".//{{{soap.SOAP}}}Code/{{{soap.SOAP}}}Value")
    assert code is not None and code.text is not None
    prefix, _, local = code.text.partition(":")
    assert (code.nsmap[prefix], local) == (soap.SOAP, "MustUnderstand")
    [block] = root.findall(f"{{{soap.SOAP}}}Header/{{{soap.SOAP}}}NotUnderstood")
    prefix, _, local = (block.get("qname") or "").partition(":")
    assert (block.nsmap[prefix], local) == ("urn:other", "Trace")


def test_a_must_understand_header_is_checked_before_anything_else(server: Running) -> None:
    # unauthenticated (GetSalt), and a bad password: the header block is refused first
    salt = b'<w:GetSalt xmlns:w="urn:wsemail"><w:Username>alice@localhost</w:Username></w:GetSalt>'
    env, header, body = soap.new_envelope()
    body.append(etree.fromstring(salt))
    data = _with_header_block(soap.serialize(env), "{urn:other}Trace", mu="1")
    assert server.post(data).status_code == 500
    wrong = Credentials("alice@localhost", b"w" * 32)
    data = _with_header_block(signed(wrong, LIST), "{urn:other}Trace", mu="1")
    assert fault_subcode(server.post(data)) == "wsemail:NotUnderstood"


@pytest.mark.parametrize(
    "tag,attributes",
    [
        ("{urn:other}Trace", {"mu": "false"}),
        ("{urn:other}Trace", {"mu": "0"}),
        ("{urn:other}Trace", {"mu": "true", "role": soap.ROLE_NONE}),
        ("{urn:other}Trace", {"mu": "true", "role": "urn:some-intermediary"}),
        (f"{{{soap.WSEMAIL}}}SignResponse", {"mu": "true"}),
    ],
)
def test_header_blocks_that_need_no_understanding_or_are_known_are_served(
    server: Running, tag: str, attributes: dict[str, str]
) -> None:
    data = _with_header_block(signed(server.credentials(), LIST), tag, **attributes)
    assert server.post(data).status_code == 200


def test_a_must_understand_security_header_is_understood(server: Running) -> None:
    root = etree.fromstring(signed(server.credentials(), LIST))
    security = root.find(f".//{{{WSSE}}}Security")
    assert security is not None
    security.set(MU, "true")
    assert server.post(etree.tostring(root)).status_code == 200


def test_a_must_understand_that_is_not_a_boolean_is_refused(server: Running) -> None:
    before = server.stored()
    data = _with_header_block(signed(server.credentials(), SEND), "{urn:other}Trace", mu="yes")
    assert_rejected(server, server.post(data), 400, "wsemail:InvalidRequest", before)
