"""The server's plug-in contracts (paper §3.1, DESIGN.md §5) and the pipeline that runs them.

A plug-in is a class named in the server config by entry-point name (group
`wsemail.server_plugins`) or as `module:Class`, with a priority (lower runs first) and
options (passed as keyword arguments). One instance may implement several interfaces (a
composite, such as the IM plug-in); it then takes part in each. Built-ins register as entry
points exactly as third-party plug-ins do.

    SendingProcessor.process_outgoing(message, env)      on submission, before storing
    DeliveryProcessor.deliver(message, recipient, env)   at the final destination
    ExtensionProcessor.handle(payload, env)              `Extension` RPC calls by id
    LocalMTA.store(message, recipient, env)              final write into a mailbox (role)
    MailQueue.enqueue(message, domain, recipients, env)  outbound, per domain (role)
    AddressMap.claim(address, env)                       addresses that are not mailboxes
    AddressMap.take(message, address, env)               …and mail that reaches one of them

The store role (data access and database management, `SqliteStore`) is chosen when the
server starts; the processors and the other roles can be loaded, unloaded and
reprioritised while it runs.
"""

from __future__ import annotations

import enum
import importlib
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from lxml import etree

from wsemail.protocol.errors import PluginError, RequestInvalid
from wsemail.protocol.message import Message
from wsemail.protocol.soap import WSEMAIL
from wsemail.server.store import Tx

GROUP = "wsemail.server_plugins"
log = logging.getLogger("wsemail.plugins")


@dataclass
class Environment:
    """What a processor may use: who asked, the verified request, the open transaction."""

    principal: str
    domain: str
    tx: Tx
    request: etree._Element
    pipeline: Pipeline
    clock: Callable[[], float]
    is_admin: bool = False
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("wsemail.server"))
    after_commit: list[Callable[[], Any]] = field(default_factory=list)
    wake_relay: Callable[[], Any] = lambda: None  # the queue role calls it after enqueueing
    trash_after: float = 30 * 86400.0  # seconds a deleted message stays in Trash (0: no limit)
    # (sender, message id, mailbox) delivered in this unit of work: each mailbox gets a
    # message once, however many mapped addresses lead to it (`wsemail.server.mapping`)
    delivered: set[tuple[str, str, str]] = field(default_factory=set)
    quota_bytes: int = 0  # what the user may keep here ([quota] per_user_bytes; 0: no limit)


class Verdict(enum.Enum):
    PASS = "pass"  # noqa: S105 -- not mine: go on to the next processor / the local MTA
    TAKEN = "taken"  # delivered (or deliberately dropped) by this processor


class Plugin:
    """Common base: a name, a priority, and options given as keyword arguments."""

    name: str = ""
    priority: int = 100

    def attach(self, server: Any) -> None:
        """Called once with the running `wsemail.server.app.Server` (store, config,
        federation, `operations` and `routes` hooks) before the server takes requests, or
        right after a run-time load. Create plug-in tables here with
        `server.store.ensure_schema(self.name, [...])`."""

    def close(self) -> None:
        """Called when the plug-in is unloaded or the server stops: release listeners,
        threads and hooks that `attach` set up."""

    def stopping(self) -> None:
        """Called from the serving loop when the server stops taking requests, before the
        requests in flight finish: end long-lived streams (push sessions) now; `close`
        follows once the server has stopped."""

    def describe(self) -> str:
        return (self.__doc__ or "").strip().splitlines()[0] if self.__doc__ else ""


class SendingProcessor(Plugin, ABC):
    @abstractmethod
    def process_outgoing(self, message: Message, env: Environment) -> None:
        """Inspect or amend a submitted message; raise a Rejected fault to refuse it."""


class DeliveryProcessor(Plugin, ABC):
    @abstractmethod
    def deliver(self, message: Message, recipient: str, env: Environment) -> Verdict:
        """Take the message for `recipient`, pass it on, or raise a Rejected fault."""


class ExtensionProcessor(Plugin, ABC):
    extension_id: str = ""

    @abstractmethod
    def handle(self, payload: etree._Element, env: Environment) -> etree._Element | None:
        """Answer one `Extension` call; `payload` is the verified request's Payload element."""


def dispatch(
    payload: etree._Element,
    handlers: Mapping[str, Callable[[etree._Element, Environment], Any]],
    env: Environment,
    extension_id: str,
) -> etree._Element | None:
    """Route an extension call holding exactly one urn:wsemail request element to the
    handler named by its local name; anything else is a RequestInvalid fault."""
    requests = [c for c in payload if isinstance(c.tag, str)]
    if len(requests) != 1:
        raise RequestInvalid(f"the {extension_id} extension takes one request")
    name = etree.QName(requests[0])
    handler = handlers.get(name.localname) if name.namespace == WSEMAIL else None
    if handler is None:
        raise RequestInvalid(f"unknown {extension_id} request {name.localname!r}")
    answer: etree._Element | None = handler(requests[0], env)
    return answer


class LocalMTA(Plugin, ABC):
    @abstractmethod
    def store(self, message: Message, recipient: str, env: Environment) -> str:
        """Write the message into `recipient`'s inbox; return the stored copy's id."""


class MailQueue(Plugin, ABC):
    @abstractmethod
    def enqueue(
        self, message: Message, domain: str, recipients: list[str], env: Environment
    ) -> None:
        """Record the message for delivery to `domain` in the current transaction."""


@dataclass(frozen=True)
class Claim:
    """What a mapped address is: its `kind` (alias, role, autoresponse, or a plug-in's own
    word, for listings and logs) and the addresses mail to it goes to instead (`targets`,
    local or in other domains, mapped again in turn; none: the plug-in's `take` is all)."""

    kind: str
    targets: tuple[str, ...] = ()


class AddressMap(Plugin, ABC):
    """A role: claims addresses of this domain that are not mailboxes (aliases, role
    addresses, auto-responders). Every loaded one is asked, in priority order; the first
    claim wins. `wsemail.server.mapping` expands recipients through them (each mailbox
    once, loops and depth capped) before the delivery processors and the local MTA."""

    @abstractmethod
    def claim(self, address: str, env: Environment) -> Claim | None:
        """The claim on `address` (lower-case domain), or None if it is not this plug-in's.
        No side effects: also asked when checking configuration and at SMTP RCPT time."""

    def take(self, message: Message, address: str, env: Environment) -> None:
        """Mail reached `address`, which this plug-in claimed (once per message and address
        in a unit of work): e.g. an auto-responder answers. The default does nothing."""


INTERFACES: dict[str, type[Plugin]] = {
    "sending": SendingProcessor,
    "delivery": DeliveryProcessor,
    "extension": ExtensionProcessor,
    "local-mta": LocalMTA,
    "queue": MailQueue,
    "mapped-address": AddressMap,
}


@dataclass(frozen=True)
class PluginSpec:
    ref: str  # entry-point name or module:Class
    priority: int = 100
    options: dict[str, Any] = field(default_factory=dict)


def available() -> dict[str, str]:
    """Installed plug-ins by entry-point name, without importing them."""
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


def resolve_class(ref: str) -> Any:
    """Import whatever an entry-point name or `module:Class` names."""
    if ":" in ref:
        module_name, _, attr = ref.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise PluginError(f"cannot import plug-in {ref!r}: {exc}") from exc
    matches = [ep for ep in entry_points(group=GROUP) if ep.name == ref]
    if not matches:
        names = ", ".join(sorted(available())) or "none"
        raise PluginError(f"no plug-in named {ref!r}; installed: {names}")
    try:
        return matches[0].load()
    except Exception as exc:
        raise PluginError(f"cannot load plug-in {ref!r}: {exc}") from exc


def resolve(ref: str) -> type[Plugin]:
    """Import a processor or role plug-in class."""
    cls = resolve_class(ref)
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise PluginError(f"{ref!r} is not a wsemail server plug-in class")
    return cls


def interfaces_of(plugin: Plugin) -> list[str]:
    return [kind for kind, iface in INTERFACES.items() if isinstance(plugin, iface)]


@dataclass
class Loaded:
    name: str
    ref: str
    priority: int
    plugin: Plugin


class Pipeline:
    """The loaded plug-ins, sorted by priority; changed atomically while serving."""

    def __init__(self, domain: str, specs: list[PluginSpec]) -> None:
        self.domain = domain
        self._lock = threading.Lock()
        self._loaded: dict[str, Loaded] = {}
        self.sending: tuple[SendingProcessor, ...] = ()
        self.delivery: tuple[DeliveryProcessor, ...] = ()
        self.extensions: dict[str, ExtensionProcessor] = {}
        self.local_mta: LocalMTA | None = None
        self.queue: MailQueue | None = None
        self.mapped: tuple[AddressMap, ...] = ()
        self.server: Any = None
        for spec in specs:
            self.load(spec)

    def attach_all(self, server: Any) -> None:
        self.server = server
        for entry in self.listing():
            entry.plugin.attach(server)

    def load(self, spec: PluginSpec) -> Loaded:
        cls = resolve(spec.ref)
        try:
            plugin = cls(**spec.options)
        except (TypeError, ValueError) as exc:
            raise PluginError(f"bad options for plug-in {spec.ref!r}: {exc}") from exc
        name = getattr(plugin, "name", "") or spec.ref
        plugin.priority = spec.priority
        if not interfaces_of(plugin):
            raise PluginError(f"{spec.ref!r} implements no plug-in interface")
        with self._lock:  # before attach: a second instance must not hook into the server
            if name in self._loaded:
                raise PluginError(f"plug-in {name!r} is already loaded")
        if self.server is not None:
            plugin.attach(self.server)
        with self._lock:
            if name in self._loaded:
                raise PluginError(f"plug-in {name!r} is already loaded")
            entry = Loaded(name, spec.ref, spec.priority, plugin)
            self._loaded[name] = entry
            self._rebuild()
        log.info("loaded plug-in %r (%s) at priority %d", name, spec.ref, spec.priority)
        return entry

    def unload(self, name: str) -> None:
        with self._lock:
            entry = self._loaded.get(name)
            if entry is None:
                raise PluginError(f"plug-in {name!r} is not loaded")
            for role in ("local-mta",):
                kind = INTERFACES[role]
                if (
                    isinstance(entry.plugin, kind)
                    and sum(isinstance(e.plugin, kind) for e in self._loaded.values()) == 1
                ):
                    raise PluginError(f"{name!r} is the only {role}; load another one first")
            del self._loaded[name]
            self._rebuild()
        entry.plugin.close()
        log.info("unloaded plug-in %r", name)

    def close_all(self) -> None:
        for entry in self.listing():
            try:
                entry.plugin.close()
            except Exception:  # one plug-in's failure must not keep the others open
                log.exception("closing plug-in %r failed", entry.name)

    def stopping(self) -> None:
        for entry in self.listing():
            try:
                entry.plugin.stopping()
            except Exception:
                log.exception("stopping plug-in %r failed", entry.name)

    def set_priority(self, name: str, priority: int) -> None:
        with self._lock:
            entry = self._loaded.get(name)
            if entry is None:
                raise PluginError(f"plug-in {name!r} is not loaded")
            entry.priority = entry.plugin.priority = priority
            self._rebuild()

    def listing(self) -> list[Loaded]:
        return sorted(self._loaded.values(), key=lambda e: (e.priority, e.name))

    def _rebuild(self) -> None:
        ordered = [
            e.plugin for e in sorted(self._loaded.values(), key=lambda e: (e.priority, e.name))
        ]
        self.sending = tuple(p for p in ordered if isinstance(p, SendingProcessor))
        self.delivery = tuple(p for p in ordered if isinstance(p, DeliveryProcessor))
        self.extensions = {
            p.extension_id: p for p in reversed(ordered) if isinstance(p, ExtensionProcessor)
        }
        self.local_mta = next((p for p in ordered if isinstance(p, LocalMTA)), None)
        self.queue = next((p for p in ordered if isinstance(p, MailQueue)), None)
        self.mapped = tuple(p for p in ordered if isinstance(p, AddressMap))
