"""In charge of one live IM push session as a screen holds it: opened and read in a thread
worker, closed from the UI thread when the screen goes away (which wakes the reader).
Pure Python (no Textual)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from wsemail.client.im import Incoming, InstantMessenger, Stream
from wsemail.protocol.errors import WsemailError
from wsemail.protocol.message import normalize_address


class PushSession:
    """`mail`: new-mail events come too (`InstantMessenger.follow`)."""

    def __init__(self, im: InstantMessenger, *, mail: bool = False) -> None:
        self.im = im
        self.mail = mail
        self._lock = threading.Lock()
        self._stream: Stream | None = None
        self._stop = threading.Event()

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def run(self, deliver: Callable[[Incoming], object], ready: Callable[[], object]) -> None:
        """Blocking: open the stream, call `ready` (again after each reconnection), then
        `deliver` each event until closed; each message is acknowledged once `deliver`
        returned. A stream that breaks off or falls silent is reopened (a few times in a
        row). Errors while open propagate (TransportError, RemoteFault…); after close, none."""

        def opened(stream: Stream | None) -> None:
            with self._lock:
                self._stream = stream
            if stream is not None:
                if self._stop.is_set():
                    stream.close()
                else:
                    ready()

        events = self.im.follow(self._stop, opened, mail=self.mail)
        try:
            for item in events:
                deliver(item)
        except Exception:
            if not self._stop.is_set():
                raise
        finally:
            events.close()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.close()


def notice_text(item: Incoming) -> str:
    """One line for a pushed notice (e.g. an instant message of yours was dropped)."""
    if item.data.get("kind") == "undeliverable":
        return f"instant message to {item.data.get('recipient', '?')} was undeliverable, dropped"
    return str(item.data.get("kind") or "notice from the server")


def plain_address(address: str) -> str:
    """The normalized address, or the text as given (stripped) when it is not one."""
    try:
        return normalize_address(address)
    except WsemailError:
        return address.strip()
