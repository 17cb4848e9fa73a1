"""Extension `admin`: list, load, unload and reprioritise plug-ins while the server runs.
Only accounts marked admin (`wsemail user add --admin`) may call it."""

from __future__ import annotations

from lxml import etree

from wsemail.protocol.errors import Forbidden, PluginError, RequestInvalid
from wsemail.protocol.soap import element, parse_int, q
from wsemail.server.pipeline import (
    Environment,
    ExtensionProcessor,
    Loaded,
    PluginSpec,
    interfaces_of,
)

ACTIONS = ("list", "load", "unload", "priority")
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

    def handle(self, payload: etree._Element, env: Environment) -> etree._Element:
        if not env.is_admin:
            raise Forbidden("the admin extension needs an admin account")
        request = payload.find(q("Admin"))
        action = request.get("action", "") if request is not None else ""
        if request is None or action not in ACTIONS:
            raise RequestInvalid(f"Admin action must be one of {', '.join(ACTIONS)}")
        name = request.get("name", "")
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
