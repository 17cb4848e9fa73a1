"""The operator's calls, headless: the admin extension's status, queue, users and quota
actions (an admin account; the answer is signed when the client has trust roots, as for
every call), and any user's own storage usage (extension `quota`). Each answer is read
into plain values the CLI prints and the TUI shows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lxml import etree

from wsemail.client.mail import Client
from wsemail.core.units import byte_size, duration
from wsemail.protocol.errors import NotFound, RemoteFault
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

    def describe(self) -> str:
        """One line: what is used of the quota (`wsemail list` ends with it, the TUI
        shows it in its status bar)."""
        line = (
            f"storage: {byte_size(self.used)} of {byte_size(self.limit)} used ({self.percent:.0f}%)"
        )
        if self.used >= self.limit:
            line += " — over quota: new mail to you is refused"
        return line

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
    except RemoteFault:  # no quota extension there (NotFound), or it cannot say now
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


def _left(seconds: Any) -> str:
    if not isinstance(seconds, int):
        return "?"
    return f"in {duration(seconds)}" if seconds >= 0 else f"EXPIRED {duration(-seconds)} ago"


def status_lines(info: dict[str, Any]) -> list[str]:
    """The status as the CLI prints it and the TUI shows it."""
    store = info.get("store", {})
    lines = [
        f"wsemail {info.get('version', '?')} serving {info.get('domain', '?')}, "
        f"up {duration(int(info.get('uptime', 0)))}",
        f"store       {store.get('kind', '?')}, {byte_size(int(store.get('size', 0)))}, "
        f"schema {store.get('schema', '?')} "
        f"({', '.join(f'{k} {v}' for k, v in store.get('components', {}).items()) or '-'})",
        f"accounts    {info.get('users', 0)} users, {info.get('messages', 0)} messages",
        f"disk        {byte_size(int(info.get('disk-free', 0)))} free of "
        f"{byte_size(int(info.get('disk-total', 0)))}",
    ]
    for kind, rate in info.get("rates", {}).items():
        lines.append(
            f"{kind:11} {rate.get('m1', 0):.2f} {rate.get('m5', 0):.2f} "
            f"{rate.get('m15', 0):.2f} per minute (1/5/15 min), {rate.get('total', 0)} in all"
        )
    sessions = info.get("sessions")
    if sessions is not None:
        lines.append(
            f"live        {sessions.get('push', 0)} push sessions, "
            f"{sessions.get('party-lines', 0)} party lines"
        )
    queue = info.get("queue", [])
    if not queue:
        lines.append("queue       empty")
    for entry in queue:
        lines.append(
            f"queue       {entry['name']}: {entry['depth']} waiting, oldest "
            f"{duration(int(entry['oldest-age']))}, next attempt in "
            f"{duration(int(entry['next-attempt-in']))}, "
            f"{entry['attempts']} attempt{'' if entry['attempts'] == 1 else 's'}"
            + (f", last error: {str(entry['last-error'])[:100]}" if entry["last-error"] else "")
        )
    label = "plug-ins"
    for role, plugins in info.get("plugins", {}).items():
        if plugins:
            named = ", ".join(f"{p['name']} ({p['priority']})" for p in plugins)
            lines.append(f"{label:11} {role}: {named}")
            label = ""
    cert = info.get("certificate")
    if cert is not None:
        lines.append(
            f"certificate {cert.get('subject', '')} until {cert.get('not-after', '?')} "
            f"({_left(cert.get('seconds-left'))})"
        )
    for crl in info.get("crls", []):
        if "error" in crl:
            lines.append(f"crl         {crl.get('file', '')}: unreadable: {crl['error']}")
        else:
            lines.append(
                f"crl         {crl.get('file', '')} next update {crl.get('next-update', '?')} "
                f"({_left(crl.get('seconds-left'))})"
            )
    return lines
