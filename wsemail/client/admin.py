"""The operator's calls, headless: the admin extension's status, queue, users and quota
actions (an admin account; the answer is signed when the client has trust roots, as for
every call), and any user's own storage usage (extension `quota`). Each answer is read
into plain values the CLI prints and the TUI shows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lxml import etree

from wsemail.client.mail import Client
from wsemail.protocol.errors import NotFound
from wsemail.protocol.soap import q


@dataclass(frozen=True)
class StorageUsage:
    address: str
    used: int
    limit: int
    messages: int
    message_bytes: int
    attachment_bytes: int
    override: bool

    @property
    def percent(self) -> float:
        return 100.0 * self.used / self.limit if self.limit else 100.0

    @classmethod
    def from_xml(cls, node: etree._Element) -> StorageUsage:
        return cls(
            node.get("address", ""),
            _int(node.get("used")),
            _int(node.get("limit")),
            _int(node.get("messages")),
            _int(node.get("message-bytes")),
            _int(node.get("attachment-bytes")),
            node.get("override") == "true",
        )


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _attrs(node: etree._Element) -> dict[str, str]:
    return {str(k): str(v) for k, v in node.attrib.items()}


def _number(value: str) -> Any:
    """Attribute text as a number where it is one."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            continue
    return value


def _admin(client: Client, action: str, **attrs: str) -> etree._Element:
    answer = client.extension("admin", etree.Element(q("Admin"), {"action": action, **attrs}))
    if answer is None:
        raise NotFound("the server's admin extension answered nothing")
    return answer


def storage_usage(client: Client) -> StorageUsage | None:
    """The signed-in user's usage and quota (None: the server has no quota extension)."""
    try:
        answer = client.extension("quota", etree.Element(q("Usage")))
    except NotFound:
        return None
    return StorageUsage.from_xml(answer) if answer is not None else None


def status(client: Client) -> dict[str, Any]:
    """The admin status as plain values (the same keys `wsemail admin status --json`
    prints)."""
    root = _admin(client, "status")
    out: dict[str, Any] = {k: _number(v) for k, v in _attrs(root).items()}
    out["domain"] = root.get("domain", "")
    out["version"] = root.get("version", "")
    out["started"] = root.get("started", "")
    store = root.find(q("Store"))
    if store is not None:
        info: dict[str, Any] = {k: _number(v) for k, v in _attrs(store).items()}
        info["kind"] = store.get("kind", "")
        info["components"] = dict(
            (name, _int(v))
            for name, _, v in (c.partition(":") for c in store.get("components", "").split())
        )
        out["store"] = info
    out["queue"] = [
        {k: _number(v) if k not in ("name", "last-error") else v for k, v in _attrs(d).items()}
        for d in root.iterfind(f"{q('Queue')}/{q('Domain')}")
    ]
    out["rates"] = {
        node.get("kind", ""): {k: _number(v) for k, v in _attrs(node).items() if k != "kind"}
        for node in root.iterfind(q("Rate"))
    }
    sessions = root.find(q("Sessions"))
    if sessions is not None:
        out["sessions"] = {k: _int(v) for k, v in _attrs(sessions).items()}
    out["plugins"] = {
        role.get("name", ""): [
            {"name": p.get("name", ""), "priority": _int(p.get("priority"))}
            for p in role.iterfind(q("Plugin"))
        ]
        for role in root.iterfind(q("Role"))
    }
    cert = root.find(q("Certificate"))
    if cert is not None:
        out["certificate"] = {
            k: (_number(v) if k == "seconds-left" else v) for k, v in _attrs(cert).items()
        }
    out["crls"] = [
        {k: (_number(v) if k == "seconds-left" else v) for k, v in _attrs(c).items()}
        for c in root.iterfind(q("Crl"))
    ]
    return out


def queue_rows(client: Client, domain: str | None = None) -> list[dict[str, Any]]:
    attrs = {"domain": domain} if domain else {}
    rows = _admin(client, "rows", **attrs)
    return [
        {
            k: (_number(v) if k in ("id", "attempts", "age", "next-attempt-in") else v)
            for k, v in _attrs(row).items()
        }
        for row in rows
    ]


def retry(client: Client, row_id: int) -> None:
    _admin(client, "retry", id=str(row_id))


def bounce(client: Client, row_id: int) -> None:
    _admin(client, "bounce", id=str(row_id))


def users_usage(client: Client) -> list[StorageUsage]:
    return [StorageUsage.from_xml(node) for node in _admin(client, "users")]


def set_quota(client: Client, address: str, size: str) -> StorageUsage:
    """`size`: bytes or 500M, 2G…; "default" clears the account's own quota."""
    return StorageUsage.from_xml(_admin(client, "quota", address=address, size=size))
