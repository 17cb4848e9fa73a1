"""What a person's entry may hold, the same for the address directory and personal
contacts on both sides: display names, organisations and notes within their lengths and
without control or bidirectional-override characters; contacts' e-mail addresses checked
by the one address check (`wsemail.protocol.message.is_address`).

The server enforces these (RequestInvalid); the client checks the same before it sends
(a vCard import is refused whole, before anything is stored)."""

from __future__ import annotations

from wsemail.protocol.errors import RequestInvalid
from wsemail.protocol.message import normalize_address

NAME_MAX = 100  # characters of a display name
ORG_MAX = 100
NOTE_MAX = 1000
EMAILS_MAX = 10  # addresses of one contact
ADDRESS_MAX = 320  # what an address can be at most (64 + 1 + 253, rounded up)
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


def check_text(value: str, what: str, limit: int, *, lines: bool = False) -> str:
    """`value` stripped, at most `limit` characters, no control characters (newlines
    only where `lines`) and no bidirectional overrides; RequestInvalid otherwise."""
    text = value.strip()
    if len(text) > limit:
        raise RequestInvalid(f"{what} is longer than {limit} characters")
    allowed = "\n" if lines else ""
    if any((ord(c) < 32 and c not in allowed) or ord(c) == 127 or c in _BIDI for c in text):
        raise RequestInvalid(f"{what} contains control characters")
    return text


def display_name(value: str) -> str:
    return check_text(value, "a display name", NAME_MAX)


def check_email(value: str) -> str:
    """A contact's address, normalised; RequestInvalid when over-long or not an address."""
    if len(value.strip()) > ADDRESS_MAX:
        raise RequestInvalid(f"an address is longer than {ADDRESS_MAX} characters")
    return normalize_address(value)


def check_emails(values: list[str]) -> list[str]:
    """One to EMAILS_MAX distinct addresses, normalised, in the order given."""
    emails = list(dict.fromkeys(check_email(v) for v in values))
    if not emails:
        raise RequestInvalid("a contact needs an e-mail address")
    if len(emails) > EMAILS_MAX:
        raise RequestInvalid(f"a contact has at most {EMAILS_MAX} addresses")
    return emails
