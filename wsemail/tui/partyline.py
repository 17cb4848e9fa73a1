"""In charge of one party line as a screen holds it: joined and read in a thread worker,
lines sent from another, left from the UI thread when the screen goes away (which ends
the reader); and of how its events read as one line each. Pure Python (no Textual)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from wsemail.client.im import InstantMessenger
from wsemail.client.partyline import Invitation, PartyLine
from wsemail.protocol.errors import TransportError

Event = dict[str, Any]


class ChannelSession:
    def __init__(self, im: InstantMessenger, invitation: Invitation | str) -> None:
        self.im = im
        self.invitation = invitation
        self._lock = threading.Lock()
        self._party: PartyLine | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def party(self) -> PartyLine | None:
        return self._party

    def run(self, deliver: Callable[[Event], object], ready: Callable[[PartyLine], object]) -> None:
        """Blocking: join (finding the invitation by channel id if need be), call `ready`,
        then `deliver` each relayed event until the channel or this session closes. A
        refused or unreachable channel raises (Forbidden, UntrustedSigner, TransportError…)."""
        party = self.im.join(self.invitation)
        with self._lock:
            if self._closed:
                party.close()
                return
            self._party = party
        try:
            ready(party)
            for event in party:
                deliver(event)
        finally:
            party.close()

    def send(self, text: str) -> None:
        party = self._party
        if party is None or self._closed:
            raise TransportError("not on the party line")
        party.send(text)

    def close(self) -> None:
        """Leave (from any thread, any number of times)."""
        with self._lock:
            self._closed = True
            party = self._party
        if party is not None:
            party.close()


def describe_event(event: Event) -> tuple[str, str] | None:
    """(who, text) for a line, or ("", a note) for joined / left / closed; None otherwise."""
    kind = event.get("event")
    if kind == "line":
        return str(event.get("from", "?")), str(event.get("text", ""))
    if kind == "joined":
        return "", f"{event.get('address', '?')} joined"
    if kind == "left":
        return "", f"{event.get('address', '?')} left"
    if kind == "closed":
        return "", f"the channel closed: {event.get('reason', 'no reason given')}"
    return None
