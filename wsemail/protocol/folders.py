"""What a folder may be called: the one rule the server enforces and a client checks before
it sends anything (an import names its folder before the file is read)."""

from __future__ import annotations

import unicodedata

from wsemail.protocol.errors import RequestInvalid

MAX_NAME = 200
_CONTROL = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def check_name(raw: str | None) -> str:
    """`raw` as a folder name, or RequestInvalid saying what is wrong with it."""
    name = raw or ""
    if not name:
        raise RequestInvalid("a folder name is required")
    if len(name) > MAX_NAME:
        raise RequestInvalid(f"a folder name is at most {MAX_NAME} characters")
    if name != name.strip():
        raise RequestInvalid("a folder name must not begin or end with a space")
    if "/" in name or "\\" in name:
        raise RequestInvalid("a folder name must not contain / or \\")
    if ".." in name or name == ".":
        raise RequestInvalid("a folder name must not be . or contain ..")
    if any(unicodedata.category(c) in _CONTROL for c in name):
        raise RequestInvalid("a folder name must not contain control characters")
    return name
