"""In charge of what the inbox screen knows about a folder: the headers loaded so far, the
server's paging cursor, merging new mail from a poll, filtering, and how a header is shown.

Pure Python (no Textual), so it is tested without a terminal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from wsemail.client.mail import Page
from wsemail.core.units import byte_size
from wsemail.protocol.message import MessageHeader

UNREAD = "●"
INSTANT = "↯"  # meant as an instant message (the reader was offline); one cell wide


@dataclass
class Mailbox:
    """One folder as far as it has been paged in, newest first."""

    folder: str = "inbox"
    headers: list[MessageHeader] = field(default_factory=list)
    next_cursor: str | None = None
    loaded: bool = False  # the first page has arrived

    @property
    def more(self) -> bool:
        """The server has older headers than the ones loaded."""
        return not self.loaded or self.next_cursor is not None

    def ids(self) -> set[str]:
        return {h.id for h in self.headers}

    def add_page(self, page: Page) -> list[MessageHeader]:
        """Append an older page; return the headers that were not loaded yet."""
        known = self.ids()
        fresh = [h for h in page.headers if h.id not in known]
        self.headers.extend(fresh)
        self.next_cursor = page.next_cursor
        self.loaded = True
        return fresh

    def merge_newest(self, page: Page) -> list[MessageHeader] | None:
        """Merge the newest page from a poll; return the new headers (prepended), or None
        when more arrived than one page holds and the folder must be loaded again."""
        if not self.loaded:
            return self.add_page(page)
        known = self.ids()
        fresh: list[MessageHeader] = []
        for header in page.headers:
            if header.id in known:
                break
            fresh.append(header)
        else:
            if page.next_cursor is not None and self.headers:
                return None  # a gap between the poll's page and what is loaded
        self.headers[:0] = fresh
        return fresh

    def get(self, message_id: str) -> MessageHeader | None:
        return next((h for h in self.headers if h.id == message_id), None)

    def remove(self, message_id: str) -> None:
        self.headers = [h for h in self.headers if h.id != message_id]

    def mark_seen(self, message_id: str) -> None:
        header = self.get(message_id)
        if header is not None:
            header.seen = True

    def matching(self, query: str) -> list[MessageHeader]:
        """Loaded headers whose sender, recipients or subject contain `query` (any case)."""
        needle = query.strip().casefold()
        if not needle:
            return list(self.headers)
        return [h for h in self.headers if needle in _haystack(h)]


def _haystack(header: MessageHeader) -> str:
    return " ".join([header.sender, *header.to, *header.cc, header.subject]).casefold()


class AddressBook:
    """Addresses of past correspondents, gathered from the headers the client has seen."""

    def __init__(self) -> None:
        self._addresses: dict[str, None] = {}

    def __len__(self) -> int:
        return len(self._addresses)

    def addresses(self) -> list[str]:
        return sorted(self._addresses)

    def add(self, addresses: Iterable[str]) -> None:
        for address in addresses:
            if address:
                self._addresses.setdefault(address, None)

    def learn(self, headers: Iterable[MessageHeader]) -> None:
        for header in headers:
            self.add([header.sender, *header.to, *header.cc])

    def complete(self, prefix: str) -> str | None:
        """The first known address (alphabetically) that starts with `prefix`, any case."""
        needle = prefix.casefold()
        if not needle:
            return None
        for address in sorted(self._addresses):
            if address.casefold().startswith(needle) and len(address) > len(prefix):
                return address
        return None


# how a header is shown ------------------------------------------------------------------


def markers(header: MessageHeader) -> str:
    """Four marker cells: unread, signature provenance, attachment, kind (form / IM).

    The server reports "unread" and "meant as an instant message" in the listing; the
    provenance and attachment cells stay blank until it reports those too."""
    return (UNREAD if not header.seen else " ") + "  " + (INSTANT if header.instant else " ")


def format_date(value: str) -> str:
    """A server date (ISO 8601, UTC) as local "YYYY-MM-DD HH:MM"; unknown forms as given."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone().strftime("%Y-%m-%d %H:%M")
    except (ValueError, OverflowError):  # e.g. 0001-01-01T00:00:00+01:00 from a peer
        return value


def format_size(size: int) -> str:
    """Bytes as 512B, 1.5K, 20K, 3.1M."""
    return byte_size(size, compact=True)
