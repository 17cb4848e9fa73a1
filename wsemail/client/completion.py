"""In charge of completing an address as it is typed: the user's contacts first, then
the address directory of their own domain, then addresses they sent mail to before —
each address once, in that order.

`complete(client, prefix)` asks the server each time (scripts, one look-up); a
`Completer` is for typing (the TUI's To and Cc fields): it loads the contacts and the
addresses sent to once, asks the directory only for prefixes of at least
`directory_min` characters, remembers its answers, and stops asking it after a refusal
(no directory plug-in, rate limit) — completion never fails because a source did.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from wsemail.client.contacts import Contact, Contacts, SeenAddress
from wsemail.client.directory import AddressDirectory, Entry
from wsemail.client.mail import Client
from wsemail.protocol.errors import RemoteFault

DIRECTORY_MIN = 2  # characters before the directory is asked (servers refuse fewer)


@dataclass(frozen=True)
class Completion:
    address: str
    name: str
    source: str  # "contact", "directory" or "seen"

    @property
    def label(self) -> str:
        return f"{self.name} <{self.address}>" if self.name else self.address

    def as_dict(self) -> dict[str, str]:
        return {"address": self.address, "name": self.name, "source": self.source}


def _fold(text: str) -> str:
    return " ".join(text.casefold().split())


def _matches(prefix: str, address: str, name: str) -> bool:
    needle = _fold(prefix)
    if address.casefold().startswith(needle):
        return True
    folded = _fold(name)
    return folded.startswith(needle) or f" {needle}" in f" {folded}"


def merge(
    prefix: str,
    contacts: list[Contact],
    directory: list[Entry],
    seen: list[SeenAddress],
    limit: int,
) -> list[Completion]:
    """The completions for `prefix`, contacts → directory → seen, each address once."""
    found: dict[str, Completion] = {}
    candidates: list[Completion] = []
    for contact in contacts:
        for address in contact.emails:
            if _matches(prefix, address, contact.name):
                candidates.append(Completion(address, contact.name, "contact"))
    candidates += [
        Completion(e.address, e.name, "directory")
        for e in directory
        if _matches(prefix, e.address, e.name)
    ]
    candidates += [
        Completion(s.address, "", "seen") for s in seen if _matches(prefix, s.address, "")
    ]
    for item in candidates:
        found.setdefault(item.address.casefold(), item)
    return list(found.values())[:limit]


def complete(client: Client, prefix: str, *, limit: int = 10) -> list[Completion]:
    """Completions for `prefix` from the server, in the order above (one request per
    source; a source that refuses is left out)."""
    prefix = prefix.strip()
    if not prefix:
        return []
    book = Contacts(client)
    contacts: list[Contact] = []
    directory: list[Entry] = []
    seen: list[SeenAddress] = []
    try:
        contacts = book.page(prefix, limit=limit).contacts
    except RemoteFault:
        pass
    if len(prefix) >= DIRECTORY_MIN:
        try:
            directory = AddressDirectory(client).search(prefix, limit=limit).entries
        except RemoteFault:
            pass
    try:
        seen = book.seen(prefix, limit=limit)
    except RemoteFault:
        pass
    return merge(prefix, contacts, directory, seen, limit)


class Completer:
    """Completion while typing, with what it learnt kept (see the module doc). Safe to
    call from a worker thread; one call at a time."""

    def __init__(
        self, client: Client, *, directory_min: int = DIRECTORY_MIN, max_contacts: int = 2000
    ) -> None:
        self.client = client
        self.directory_min = directory_min
        self.max_contacts = max_contacts
        self._lock = threading.Lock()
        self._contacts: list[Contact] | None = None
        self._seen: list[SeenAddress] | None = None
        self._directory: dict[str, list[Entry]] = {}
        self.directory_usable = True

    def _load(self) -> tuple[list[Contact], list[SeenAddress]]:
        book = Contacts(self.client)
        if self._contacts is None:
            self._contacts = []
            try:
                for contact in book.iter():
                    self._contacts.append(contact)
                    if len(self._contacts) >= self.max_contacts:
                        break
            except RemoteFault:
                pass
        if self._seen is None:
            try:
                self._seen = book.seen(limit=500)
            except RemoteFault:
                self._seen = []
        return self._contacts, self._seen

    def _ask_directory(self, prefix: str) -> list[Entry]:
        key = _fold(prefix)
        if not self.directory_usable or len(key) < self.directory_min:
            return []
        for known in range(len(key), self.directory_min - 1, -1):  # a shorter prefix's
            cached = self._directory.get(key[:known])  # complete answer covers this one
            if cached is not None and (known == len(key) or len(cached) < 20):
                return cached
        try:
            page = AddressDirectory(self.client).search(prefix, limit=20)
        except RemoteFault:
            self.directory_usable = False  # no plug-in, or rate-limited: stop asking
            return []
        self._directory[key] = page.entries
        return page.entries

    def complete(self, prefix: str, *, limit: int = 10) -> list[Completion]:
        prefix = prefix.strip()
        if not prefix:
            return []
        with self._lock:
            contacts, seen = self._load()
            directory = self._ask_directory(prefix)
        return merge(prefix, contacts, directory, seen, limit)

    def learn(self, addresses: list[str]) -> None:
        """Addresses just sent to: offered from now on (the server records them too)."""
        with self._lock:
            if self._seen is None:
                return
            known = {s.address.casefold() for s in self._seen}
            fresh = [SeenAddress(a, 1, 0.0) for a in addresses if a.casefold() not in known]
            self._seen = fresh + self._seen
