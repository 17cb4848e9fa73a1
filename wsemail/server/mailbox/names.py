"""What a folder may be called. Every user has the system folders (`SYSTEM_FOLDERS`:
inbox and sent, where mail arrives, and Archive, Drafts and Trash); a user's own folders
sit beside them. Names are compared without regard to case ("trash" is Trash)."""

from __future__ import annotations

import unicodedata

from wsemail.protocol.errors import RequestInvalid
from wsemail.protocol.message import SYSTEM_FOLDERS

MAX_NAME = 200
TRASH = "Trash"
_SYSTEM = {name.casefold(): name for name in SYSTEM_FOLDERS}
_CONTROL = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def system_folder(name: str) -> str | None:
    """The system folder `name` means (any case), or None."""
    return _SYSTEM.get(name.casefold())


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
