"""In charge of hearing PostgreSQL notifications on one node: one LISTEN connection per
process, in its own thread, told each burst of notifications at once. Several nodes share the
database, so a transaction that NOTIFYs (from a trigger or a records module) wakes every
node when it commits. The connection reconnects when the database comes back; a
notification sent while it was away is lost, so `on_reconnect` is called after each new
connection (the first too: what committed before LISTEN took) for the caller to look
for itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger("wsemail.store")
RETRY = 1.0  # seconds between connection attempts while the database is away
POLL = 0.5  # how long one wait for a notification lasts (how soon `close` is noticed)


class Listener:
    """LISTEN on `channels`; `on_notify` is called (in the listener's thread) with the
    (channel, payload) pairs that arrived together, in the order they were sent."""

    def __init__(
        self,
        url: str,
        channels: Iterable[str],
        on_notify: Callable[[list[tuple[str, str]]], object],
        *,
        on_reconnect: Callable[[], object] | None = None,
        name: str = "wsemail-listen",
    ) -> None:
        self.url = url
        self.channels = tuple(channels)
        self.on_notify = on_notify
        self.on_reconnect = on_reconnect  # after each connection, the first too
        self.name = name
        self.connected = threading.Event()  # set while LISTEN is in place
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(10)

    def _run(self) -> None:
        broken = False
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                    for channel in self.channels:
                        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self.connected.set()
                    if broken:
                        log.warning("listening for notifications again")
                    self._call(self.on_reconnect)  # what committed before LISTEN took
                    broken = False
                    self._listen(conn)
            except psycopg.Error as exc:
                self.connected.clear()
                if not broken:
                    log.error("not listening for notifications: %s", " ".join(str(exc).split()))
                broken = True
                self._stop.wait(RETRY)
        self.connected.clear()

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        while not self._stop.is_set():
            got = [(n.channel, n.payload) for n in conn.notifies(timeout=POLL, stop_after=1)]
            if not got:
                continue
            got += [(n.channel, n.payload) for n in conn.notifies(timeout=0)]
            self._tell(got)

    def _tell(self, got: list[tuple[str, str]]) -> None:
        self._call(lambda: self.on_notify(got))

    def _call(self, callback: Callable[[], object] | None) -> None:
        if callback is None:
            return
        try:
            callback()
        except Exception:  # a listener's failure must not end the listening
            log.exception("a notification callback failed")
