"""The mailbox operations (registered in server/operations.py `AUTHENTICATED`). Each runs
in its request's unit of work: a fault raised half-way leaves nothing changed. A message id
that is not the caller's gets the same answer as one that does not exist."""

from __future__ import annotations

from collections.abc import Callable

from lxml import etree

from wsemail.protocol.errors import NotFound, RequestInvalid
from wsemail.protocol.soap import element, from_text, int_of, q, text_of, texts_of
from wsemail.server.mailbox import records
from wsemail.server.mailbox.names import DRAFTS, TRASH, check_name, system_folder
from wsemail.server.mailbox.query import parse
from wsemail.server.pipeline import Environment

MAX_IDS = 1000  # per Move / SetFlags request
MAX_PAGE = 500
_BOOL = {"true": True, "1": True, "false": False, "0": False}


def folder_named(env: Environment, raw: str | None) -> str:
    """The caller's folder called `raw` (any case), or NotFound."""
    name = check_name(raw)
    found = records.resolve(env.tx, env.principal, name)
    if found is None:
        raise NotFound(f"no folder named {name!r}")
    return found


def ids_of(env: Environment, op: etree._Element) -> list[str]:
    """The request's Id elements: 1..MAX_IDS of the caller's own messages."""
    ids = list(dict.fromkeys(i.strip() for i in texts_of(op, "Id")))
    if not ids or any(not i or len(i) > 64 for i in ids):
        raise RequestInvalid("one or more message Ids are required")
    if len(ids) > MAX_IDS:
        raise RequestInvalid(f"at most {MAX_IDS} message Ids per request")
    unknown = records.missing(env.tx, env.principal, ids)
    if unknown:
        raise NotFound(f"no such message: {unknown[0]}")
    return ids


def _bool(op: etree._Element, name: str) -> bool | None:
    raw = text_of(op, name)
    if raw is None:
        return None
    value = _BOOL.get(raw.strip().lower())
    if value is None:
        raise RequestInvalid(f"{name} must be true or false")
    return value


def list_folders(env: Environment, op: etree._Element) -> etree._Element:
    result = etree.Element(q("ListFoldersResponse"))
    for info in records.folders(env.tx, env.principal):
        node = element(result, "Folder")
        element(node, "Name", info.name)
        element(node, "Total", str(info.total))
        element(node, "Unread", str(info.unread))
        element(node, "System", "true" if info.system else "false")
    return result


def _new_name(env: Environment, raw: str | None) -> str:
    name = check_name(raw)
    existing = records.resolve(env.tx, env.principal, name)
    if existing is not None:
        raise RequestInvalid(f"a folder named {existing!r} exists")
    return name


def create_folder(env: Environment, op: etree._Element) -> etree._Element:
    name = _new_name(env, text_of(op, "Name"))
    records.create_folder(env.tx, env.principal, name)
    result = etree.Element(q("CreateFolderResponse"))
    element(result, "Name", name)
    return result


def _own_folder(env: Environment, raw: str | None, doing: str) -> str:
    name = folder_named(env, raw)
    if system_folder(name) is not None:
        raise RequestInvalid(f"{name} is a system folder: it cannot be {doing}")
    return name


def rename_folder(env: Environment, op: etree._Element) -> etree._Element:
    old = _own_folder(env, text_of(op, "Name"), "renamed")
    new = check_name(text_of(op, "NewName"))
    if new.casefold() != old.casefold():
        new = _new_name(env, new)
    records.rename_folder(env.tx, env.principal, old, new)
    result = etree.Element(q("RenameFolderResponse"))
    element(result, "Name", new)
    return result


def delete_folder(env: Environment, op: etree._Element) -> etree._Element:
    name = _own_folder(env, text_of(op, "Name"), "deleted")
    count = records.count_in(env.tx, env.principal, name)
    if count:
        raise RequestInvalid(f"folder {name!r} is not empty ({count} messages): move them first")
    records.delete_folder(env.tx, env.principal, name)
    result = etree.Element(q("DeleteFolderResponse"))
    element(result, "Name", name)
    return result


def move(env: Environment, op: etree._Element) -> etree._Element:
    """Drafts holds drafts only, and a draft leaves it only for Trash (and back)."""
    ids = ids_of(env, op)
    folder = folder_named(env, text_of(op, "Folder"))
    drafts = records.drafts_among(env.tx, env.principal, ids)
    if folder == DRAFTS and len(drafts) < len(ids):
        raise RequestInvalid(f"{DRAFTS} holds drafts only (wsemail draft save makes one)")
    if drafts and folder not in (DRAFTS, TRASH):
        raise RequestInvalid(f"a draft moves only to {TRASH} and back to {DRAFTS}")
    moved = records.move(env.tx, env.principal, ids, folder)
    result = etree.Element(q("MoveResponse"))
    element(result, "Folder", folder)
    element(result, "Moved", str(moved))
    return result


def set_flags(env: Environment, op: etree._Element) -> etree._Element:
    ids = ids_of(env, op)
    flags = {
        column: value
        for column, tag in (("seen", "Seen"), ("flagged", "Flagged"), ("answered", "Answered"))
        if (value := _bool(op, tag)) is not None
    }
    if not flags:
        raise RequestInvalid("SetFlags needs Seen, Flagged or Answered")
    changed = records.set_flags(env.tx, env.principal, ids, flags)
    result = etree.Element(q("SetFlagsResponse"))
    element(result, "Changed", str(changed))
    return result


def trash(env: Environment, public_id: str, trash_after: float) -> str:
    """Delete one message: into Trash, or for good when it is in Trash already. Trash older
    than `trash_after` seconds (0: kept until deleted) is emptied on the way.
    Returns "trashed" or "deleted"."""
    folder = records.folder_of(env.tx, env.principal, public_id)
    if folder is None:
        raise NotFound("no such message")
    if trash_after > 0:
        records.sweep_trash(env.tx, env.tx.now - trash_after, env.principal)
    if folder == TRASH:
        env.tx.delete_message(env.principal, public_id)
        return "deleted"
    records.move(env.tx, env.principal, [public_id], TRASH)
    return "trashed"


def _page_args(op: etree._Element) -> tuple[int, int | None]:
    cursor = int_of(op, "Cursor", 1, 2**62, 0)
    return int_of(op, "Limit", 1, MAX_PAGE, 50), cursor or None


def search(env: Environment, op: etree._Element) -> etree._Element:
    query = parse(text_of(op, "Query") or "")
    limit, before = _page_args(op)
    folder = folder_named(env, query.folder) if query.folder is not None else None
    rows = records.search(env.tx, env.principal, query, folder, limit + 1, before)
    hidden = records.sealed_count(env.tx, env.principal, folder) if query.terms else 0
    inner = "".join(found.xml_text() for _, found in rows[:limit])
    if len(rows) > limit:
        inner += f"<NextCursor>{rows[limit - 1][0]}</NextCursor>"
    result = from_text("SearchResponse", inner)
    result.set("EncryptedNotSearched", str(hidden))
    return result


OPERATIONS: dict[str, Callable[[Environment, etree._Element], etree._Element]] = {
    "ListFolders": list_folders,
    "CreateFolder": create_folder,
    "RenameFolder": rename_folder,
    "DeleteFolder": delete_folder,
    "Move": move,
    "SetFlags": set_flags,
    "Search": search,
}
