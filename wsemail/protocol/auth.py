"""The salted password MAC (ICWS 2005 paper §4, DESIGN.md §4), shared by client and server.

The client derives K = scrypt(password, salt) once per session; every request then carries
username, a random nonce, a UTC timestamp and HMAC-SHA256(K, operation | username | nonce |
created | SHA-256(exclusive-c14n(Body))) in a WS-Security UsernameToken whose Password has
the type `urn:wsemail:password-mac`. The server stores K, never the password. A standard
UsernameToken with `#PasswordText` is read from the same element for third-party toolkits.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from lxml import etree

from wsemail.protocol.errors import InvalidSecurity, MessageExpired
from wsemail.protocol.soap import WSSE, WSU, q
from wsemail.protocol.xmlsafe import c14n

MAC_TYPE = "urn:wsemail:password-mac"
# signed answers (DESIGN.md §4): a MAC-authenticated request may carry <w:SignResponse
# ServerCertificate="base64 SHA-256 of the DER the client already holds"/> in its Header;
# the server then signs its answer (Body + Timestamp) and binds it to the request by
# InResponseTo="the request's nonce" on the Body's response element
SIGN_RESPONSE = "SignResponse"
IN_RESPONSE_TO = "InResponseTo"
WSS_2004 = "http://docs.oasis-open.org/wss/2004/01/"
TOKEN_PROFILE = WSS_2004 + "oasis-200401-wss-username-token-profile-1.0"
PASSWORD_TEXT = TOKEN_PROFILE + "#PasswordText"
BASE64_ENCODING = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"
)
KDF_N, KDF_R, KDF_P = 1 << 14, 8, 1
SALT_BYTES = 16
NONCE_BYTES = 16


def derive_key(password: str, salt: bytes) -> bytes:
    """The slow step: run once per client session and when an account is created."""
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=KDF_N, r=KDF_R, p=KDF_P, maxmem=64 << 20, dklen=32
    )


def timestamp(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# xsd:dateTime as WS-Security timestamps use it: ASCII digits, extended format, seconds
# with an optional fraction, and a time zone (Z or ±hh:mm) that this code requires
_DATETIME = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})T(?P<time>[0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:\.(?P<fraction>[0-9]{1,9}))?(?P<zone>Z|[+-][0-9]{2}:[0-9]{2})",
    re.ASCII,
)


def parse_timestamp(text: str, what: str = "Created") -> datetime:
    """The one strict reader of WS-Security timestamps (wsu:Created, wsu:Expires): an
    xsd:dateTime with a time zone, as a UTC datetime. Anything else (ISO 8601 basic format,
    week dates, no zone, non-ASCII digits) is InvalidSecurity; a valid value outside the
    range a datetime holds in UTC (0001-01-01T00:00:00+01:00) is MessageExpired."""
    match = _DATETIME.fullmatch(text.strip())
    if match is None:
        raise InvalidSecurity(f"{what} is not an xsd:dateTime with a time zone")
    zone = match["zone"]
    fraction = (match["fraction"] or "")[:6].ljust(6, "0")
    iso = f"{match['date']}T{match['time']}.{fraction}{'+00:00' if zone == 'Z' else zone}"
    try:
        value = datetime.fromisoformat(iso)
    except ValueError as exc:  # month 13, hour 24, zone +25:00, ...
        raise InvalidSecurity(f"{what} is not a valid date and time") from exc
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise MessageExpired(f"{what} is out of range") from exc


def timestamp_parts(stamp: etree._Element | None) -> tuple[str | None, str | None]:
    """(Created, Expires) texts of a wsu:Timestamp (None where absent); more than one of
    either is InvalidSecurity."""
    if stamp is None:
        return None, None
    created, expires = stamp.findall(q("Created", WSU)), stamp.findall(q("Expires", WSU))
    if len(created) > 1 or len(expires) > 1:
        raise InvalidSecurity("a Timestamp holds at most one Created and one Expires")
    return (
        created[0].text or "" if created else None,
        expires[0].text or "" if expires else None,
    )


def check_window(
    created: str | None, expires: str | None, now: datetime, past: float, future: float
) -> datetime:
    """The freshness rule for every timestamp read (requests, Deliver, signed answers):
    Created is required, at most `past` seconds old and at most `future` seconds ahead (the
    clock-skew allowance); Expires, when present, is after Created and not past by more than
    the same allowance. Returns Created."""
    if created is None:
        raise MessageExpired("missing Created timestamp")
    when = parse_timestamp(created)
    age = (now - when).total_seconds()
    if age > past:
        raise MessageExpired("request timestamp is too old")
    if age < -future:
        raise MessageExpired("request timestamp is in the future")
    if expires is not None:
        until = parse_timestamp(expires, "Expires")
        if until <= when:
            raise MessageExpired("Expires is not after Created")
        if (now - until).total_seconds() > future:
            raise MessageExpired("the request has expired")
    return when


def mac_input(operation: str, username: str, nonce: str, created: str, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join(("wsemail-mac-1", operation, username, nonce, created, digest)).encode()


def compute_mac(
    key: bytes, operation: str, username: str, nonce: str, created: str, body_c14n: bytes
) -> str:
    raw = hmac.digest(key, mac_input(operation, username, nonce, created, body_c14n), "sha256")
    return base64.b64encode(raw).decode("ascii")


@dataclass(repr=False)
class Credentials:
    """A client's session secret: the derived key, never the password."""

    username: str
    key: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, key=<hidden>)"

    def sign(
        self, header: etree._Element, body: etree._Element, now: datetime | None = None
    ) -> str:
        """Add a wsse:Security header with a password-MAC UsernameToken for `body`; return
        its nonce (what a signed answer must be bound to)."""
        operation = etree.QName(body[0]).localname
        nonce = base64.b64encode(os.urandom(NONCE_BYTES)).decode("ascii")
        created = timestamp(now)
        mac = compute_mac(self.key, operation, self.username, nonce, created, c14n(body))
        security = etree.SubElement(header, q("Security", WSSE), nsmap={"wsse": WSSE, "wsu": WSU})
        token = etree.SubElement(security, q("UsernameToken", WSSE))
        etree.SubElement(token, q("Username", WSSE)).text = self.username
        etree.SubElement(token, q("Password", WSSE), Type=MAC_TYPE).text = mac
        etree.SubElement(token, q("Nonce", WSSE), EncodingType=BASE64_ENCODING).text = nonce
        etree.SubElement(token, q("Created", WSU)).text = created
        return nonce


@dataclass(frozen=True, repr=False)
class UsernameToken:
    """What the server read from a request's UsernameToken."""

    username: str
    password_type: str
    password: str  # the base64 MAC, or the clear password for PasswordText
    nonce: str | None
    created: str | None
    # (Created, Expires) of a wsu:Timestamp beside the token, checked as well
    stamp: tuple[str | None, str | None] = (None, None)

    def __repr__(self) -> str:
        return f"UsernameToken(username={self.username!r}, type={self.password_type!r})"

    @property
    def is_mac(self) -> bool:
        return self.password_type == MAC_TYPE


def read_username_token(header: etree._Element | None) -> UsernameToken:
    """Find exactly one UsernameToken in exactly one wsse:Security header."""
    if header is None:
        raise InvalidSecurity("missing wsse:Security header")
    securities = header.findall(q("Security", WSSE))
    if len(securities) != 1:
        raise InvalidSecurity("exactly one wsse:Security header is required")
    tokens = securities[0].findall(q("UsernameToken", WSSE))
    if len(tokens) != 1:
        raise InvalidSecurity("exactly one wsse:UsernameToken is required")
    token = tokens[0]

    def one(tag: str, required: bool) -> etree._Element | None:
        found = token.findall(tag)
        if len(found) > 1 or (required and not found):
            raise InvalidSecurity(f"UsernameToken needs exactly one {etree.QName(tag).localname}")
        return found[0] if found else None

    username = one(q("Username", WSSE), True)
    password = one(q("Password", WSSE), True)
    nonce = one(q("Nonce", WSSE), False)
    created = one(q("Created", WSU), False)
    stamps = securities[0].findall(q("Timestamp", WSU))
    if len(stamps) > 1:
        raise InvalidSecurity("at most one wsu:Timestamp is allowed")
    stamp = timestamp_parts(stamps[0] if stamps else None)
    assert username is not None and password is not None
    password_type = password.get("Type") or PASSWORD_TEXT
    created_text = (created.text or "") if created is not None else stamp[0]
    return UsernameToken(
        username=(username.text or "").strip(),
        password_type=password_type,
        password=password.text or "",
        nonce=(nonce.text or "").strip() if nonce is not None else None,
        created=created_text,
        stamp=stamp,
    )


def decode_nonce(nonce: str | None) -> bytes:
    if nonce is None:
        raise InvalidSecurity("missing Nonce")
    try:
        raw = base64.b64decode(nonce, validate=True)
    except ValueError as exc:
        raise InvalidSecurity("Nonce is not base64") from exc
    if len(raw) < NONCE_BYTES:
        raise InvalidSecurity(f"Nonce shorter than {NONCE_BYTES} bytes")
    return raw


def mac_matches(expected_b64: str, presented_b64: str) -> bool:
    """Constant-time comparison of two base64 MACs."""
    return hmac.compare_digest(
        expected_b64.encode("ascii", "replace"), presented_b64.strip().encode("ascii", "replace")
    )
