"""What a folder may be called. Every user has the system folders (`SYSTEM_FOLDERS`:
inbox and sent, where mail arrives, and Archive, Drafts and Trash); a user's own folders
sit beside them. Names are compared without regard to case ("trash" is Trash)."""

from __future__ import annotations

from wsemail.protocol.folders import MAX_NAME as MAX_NAME  # the rule lives in protocol/
from wsemail.protocol.folders import check_name as check_name
from wsemail.protocol.message import SYSTEM_FOLDERS

TRASH = "Trash"
DRAFTS = "Drafts"
_SYSTEM = {name.casefold(): name for name in SYSTEM_FOLDERS}


def system_folder(name: str) -> str | None:
    """The system folder `name` means (any case), or None."""
    return _SYSTEM.get(name.casefold())
