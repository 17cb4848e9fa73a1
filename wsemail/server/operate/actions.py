"""In charge of the admin extension's operating actions: `status` (the whole picture),
`rows` (queued messages, optionally for one domain), `retry` and `bounce` (one queued
message, by id), `users` (every account's usage and quota) and `quota` (set or clear an
account's own quota). The admin plug-in checks the caller is an admin first."""

from __future__ import annotations

from typing import Any

from lxml import etree

from wsemail.core.units import parse_size
from wsemail.protocol.errors import NotFound, RequestInvalid, ServerError
from wsemail.protocol.message import domain_of, normalize_address
from wsemail.protocol.soap import element, parse_int, q
from wsemail.server.operate import records, status
from wsemail.server.operate.plugin import Operate, usage_element, usage_listing
from wsemail.server.pipeline import Environment

ACTIONS = ("status", "rows", "retry", "bounce", "users", "quota")
MAX_ROWS = 1000


def operate_plugin(env: Environment) -> Operate | None:
    for entry in env.pipeline.listing():
        if isinstance(entry.plugin, Operate):
            return entry.plugin
    return None


def default_quota(server: Any) -> int:
    return int(server.config.quota_per_user_bytes)


def run(
    action: str, request: etree._Element, env: Environment, server: Any, queue: etree._Element
) -> etree._Element:
    if server is None:
        raise ServerError("the admin plug-in is not attached to a server")
    if action == "status":
        plugin = operate_plugin(env)
        rates = plugin.rates if plugin is not None else {}
        sessions = plugin.sessions() if plugin is not None else None
        return status.gather(server, env.tx, queue, rates, sessions)
    if action == "rows":
        domain = (request.get("domain") or "").strip().lower() or None
        return rows_listing(records.queue_rows(env.tx, domain, MAX_ROWS), env.clock())
    if action in ("retry", "bounce"):
        row_id = parse_int(request.get("id"), "id", 1, 2**62)
        return retry(env, server, row_id) if action == "retry" else bounce(env, server, row_id)
    if action == "users":
        return usage_listing(records.usage_all(env.tx, default_quota(server)))
    return set_quota(request, env, server)


def rows_listing(rows: list[records.QueuedRow], now: float) -> etree._Element:
    root = etree.Element(q("Rows"))
    for row in rows:
        node = element(root, "Row")
        node.attrib.update(
            {
                "id": str(row.id),
                "domain": row.domain,
                "sender": row.sender,
                "recipients": " ".join(row.recipients),
                "state": row.state,
                "attempts": str(row.attempts),
                "age": str(max(0, round(now - row.created))),
                "next-attempt-in": str(max(0, round(row.next_attempt - now))),
                "last-error": row.last_error,
            }
        )
    return root


def _done(action: str, row_id: int) -> etree._Element:
    node = etree.Element(q("Done"))
    node.set("action", action)
    node.set("id", str(row_id))
    return node


def retry(env: Environment, server: Any, row_id: int) -> etree._Element:
    if not records.retry_now(env.tx, row_id):
        raise NotFound(f"no waiting queued message {row_id} (delivered, or being tried now)")
    env.after_commit.append(server.wake_relay)
    return _done("retry", row_id)


def bounce(env: Environment, server: Any, row_id: int) -> etree._Element:
    relay = server.relay
    if relay is None or not hasattr(relay, "bounce"):
        raise ServerError("this server has no outbound relay")
    row = records.take_for_bounce(env.tx, row_id)
    if row is None:
        raise NotFound(f"no waiting queued message {row_id} (delivered, or being tried now)")
    reason = f"returned by the administrator of {env.domain} ({env.principal})"
    relay.bounce(env.tx, row, row.recipients, reason)
    env.tx.finish_queued(row.id)
    return _done("bounce", row_id)


def set_quota(request: etree._Element, env: Environment, server: Any) -> etree._Element:
    """`address` and `size` (bytes, or 10MB, 2G…; `default` clears the account's own)."""
    address = normalize_address(request.get("address") or "")
    if domain_of(address) != env.domain or env.tx.user(address) is None:
        raise NotFound(f"no such user here: {address}")
    size = (request.get("size") or "").strip()
    try:
        limit = None if size.lower() == "default" else parse_size(size)
    except ValueError as exc:
        raise RequestInvalid(str(exc)) from exc
    records.set_limit(env.tx, address, limit)
    return usage_element(records.usage(env.tx, address, default_quota(server)))
