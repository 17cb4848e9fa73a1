"""Extension `admin`: list, load, unload and reprioritise plug-ins while the server runs,
the outbound queue's status per destination domain (`queue`), and operating the server
(`status`, `rows`, `retry`, `bounce`, `users`, `quota`: `wsemail.server.operate.actions`).
Only accounts marked admin (`wsemail user add --admin`) may call it."""

from __future__ import annotations

from typing import Any

from lxml import etree

from wsemail.protocol.errors import Forbidden, PluginError, RequestInvalid
from wsemail.protocol.soap import element, parse_int, q
from wsemail.server.operate import actions as operating
from wsemail.server.pipeline import (
    Environment,
    ExtensionProcessor,
    Loaded,
    PluginSpec,
    interfaces_of,
)
from wsemail.server.plugins.queue import DomainQueue, queue_status

ACTIONS = ("list", "load", "unload", "priority", "queue", *operating.ACTIONS)
MAX_PRIORITY = 1_000_000


def _priority(value: str | None) -> int:
    text = (value or "100").strip()
    if text.startswith("-"):  # priorities may be negative (run before the built-ins)
        return -parse_int(text[1:], "priority", 0, MAX_PRIORITY)
    return parse_int(text, "priority", 0, MAX_PRIORITY)


class Admin(ExtensionProcessor):
    """Run-time plug-in administration for admin accounts."""

    name = "admin"
    extension_id = "admin"
    server: Any = None

    def attach(self, server: Any) -> None:
        self.server = server

    def handle(self, payload: etree._Element, env: Environment) -> etree._Element:
        if not env.is_admin:
            raise Forbidden("the admin extension needs an admin account")
        request = payload.find(q("Admin"))
        action = request.get("action", "") if request is not None else ""
        if request is None or action not in ACTIONS:
            raise RequestInvalid(f"Admin action must be one of {', '.join(ACTIONS)}")
        name = request.get("name", "")
        if action == "queue":
            return queue_listing(queue_status(env.tx), env.clock())
        if action in operating.ACTIONS:
            queue = queue_listing(queue_status(env.tx), env.clock())
            answer = operating.run(action, request, env, self.server, queue)
            env.log.info("admin %s: %s", env.principal, action)
            return answer
        try:
            if action == "load":
                env.pipeline.load(
                    PluginSpec(request.get("ref") or name, _priority(request.get("priority")))
                )
            elif action == "unload":
                env.pipeline.unload(name)
            elif action == "priority":
                env.pipeline.set_priority(name, _priority(request.get("priority")))
        except PluginError as exc:
            raise RequestInvalid(str(exc)) from exc
        env.log.info("admin %s: %s %r", env.principal, action, name)
        return listing(env.pipeline.listing())


def listing(entries: list[Loaded]) -> etree._Element:
    root = etree.Element(q("Plugins"))
    for entry in entries:
        node = element(root, "Plugin")
        node.set("name", entry.name)
        node.set("ref", entry.ref)
        node.set("priority", str(entry.priority))
        node.set("interfaces", " ".join(interfaces_of(entry.plugin)))
        node.set("description", entry.plugin.describe())
    return root


def queue_listing(domains: list[DomainQueue], now: float) -> etree._Element:
    """<Queue><Domain name depth oldest-age next-attempt-in attempts last-error/>…"""
    root = etree.Element(q("Queue"))
    for entry in domains:
        node = element(root, "Domain")
        node.set("name", entry.domain)
        node.set("depth", str(entry.depth))
        node.set("oldest-age", str(max(0, round(now - entry.oldest))))
        node.set("next-attempt-in", str(max(0, round(entry.next_attempt - now))))
        node.set("attempts", str(entry.attempts))
        node.set("last-error", entry.last_error)
    return root
