"""In charge of the admin status (`wsemail admin status`, the TUI's admin screen): one
`<Status>` element with the version, uptime, domain, store, queue, recent activity, accounts,
live sessions, plug-ins per role, certificate and CRL expiry and free disk, gathered inside
the admin extension's unit of work."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from cryptography import x509
from lxml import etree

from wsemail.protocol.soap import element, q
from wsemail.server.operate import records
from wsemail.server.operate.activity import Rate
from wsemail.server.pipeline import INTERFACES, interfaces_of
from wsemail.server.store import Tx


def package_version() -> str:
    try:
        return version("wsemail")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def store_size(db_path: Path) -> int:
    """The SQLite database file with its write-ahead log and shared-memory index (the
    PostgreSQL store reports pg_database_size instead: records.database_bytes)."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        path = db_path.with_name(db_path.name + suffix)
        if path.exists():
            total += path.stat().st_size
    return total


def _iso(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _left(moment: datetime | None, now: float) -> str:
    return "" if moment is None else str(int(moment.timestamp() - now))


def gather(
    server: Any,
    tx: Tx,
    queue: etree._Element,
    rates: dict[str, Rate],
    sessions: tuple[int, int] | None,
) -> etree._Element:
    """The status of `server` (a `wsemail.server.app.Server`); `queue` is the admin
    extension's queue listing, `rates` the activity counters by kind, `sessions` (live
    push sessions, open party lines) when the IM plug-in is loaded."""
    config = server.config
    now = time.time()
    root = etree.Element(q("Status"))
    users, messages = records.counts(tx)
    disk = shutil.disk_usage(config.data_dir)
    root.attrib.update(
        {
            "version": package_version(),
            "domain": config.domain,
            "started": _iso(datetime.fromtimestamp(server.started, UTC)),
            "uptime": str(max(0, int(now - server.started))),
            "users": str(users),
            "messages": str(messages),
            "disk-free": str(disk.free),
            "disk-total": str(disk.total),
        }
    )
    core, components = records.schema_versions(tx)
    size = records.database_bytes(tx)
    store = element(root, "Store")
    store.attrib.update(
        {
            "kind": getattr(server.store, "name", type(server.store).__name__),
            "size": str(store_size(config.db_path) if size is None else size),
            "schema": str(core),
            "components": " ".join(f"{name}:{v}" for name, v in sorted(components.items())),
        }
    )
    root.append(queue)
    for kind, rate in rates.items():
        node = element(root, "Rate")
        per_minute = rate.per_minute()
        node.attrib.update({"kind": kind, "total": str(rate.total)})
        for minutes, value in per_minute.items():
            node.set(f"m{minutes}", f"{value:.2f}")
    if sessions is not None:
        live = element(root, "Sessions")
        live.set("push", str(sessions[0]))
        live.set("party-lines", str(sessions[1]))
    for role in INTERFACES:
        node = element(root, "Role")
        node.set("name", role)
        for entry in server.pipeline.listing():
            if role in interfaces_of(entry.plugin):
                plugin = element(node, "Plugin")
                plugin.set("name", entry.name)
                plugin.set("priority", str(entry.priority))
    federation = server.federation
    if federation is not None:
        cert = federation.identity.cert
        node = element(root, "Certificate")
        node.set("subject", cert.subject.rfc4514_string())
        node.set("not-after", _iso(cert.not_valid_after_utc))
        node.set("seconds-left", _left(cert.not_valid_after_utc, now))
        for path in federation.crl_files:
            crl_node = element(root, "Crl")
            crl_node.set("file", Path(path).name)
            try:
                crl = x509.load_pem_x509_crl(Path(path).read_bytes())
            except (OSError, ValueError) as exc:
                crl_node.set("error", str(exc)[:200])
                continue
            crl_node.set("issuer", crl.issuer.rfc4514_string())
            crl_node.set("next-update", _iso(crl.next_update_utc))
            crl_node.set("seconds-left", _left(crl.next_update_utc, now))
    return root
