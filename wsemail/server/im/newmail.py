"""In charge of telling live sessions about new mail (issue 18): a stream opened with
`mail=now` (or `mail=<cursor>`, to resume) is sent one `mail` event per copy that arrives
unread in its owner's mailbox (any folder but sent, Drafts and Trash), oldest first:

    event: mail   data: {"cursor": <event>, "id": …, "from": …, "subject": …, "date": …,
                         "folder": …, …the header as ListHeaders gives it}

The events are rows written by a trigger in the same unit of work as the copy
(`records.im_new_mail`), so a rolled-back delivery tells nobody and no delivery path is
missed. Each session reads them from the store by its own cursor, woken after a commit
that may have added some (`Hub.wake_mail`): a wake-up that finds nothing costs one query,
one that is lost is made up by the next, and a client that reconnects with the last cursor
it printed gets what arrived meanwhile, each once. Events are kept `KEEP` seconds.

On the PostgreSQL store several nodes share the events: the trigger also NOTIFYs the owner
when its transaction commits, and each node's one listening connection (`nodes.Nodes`)
wakes that owner's sessions, whichever node the mail came through. While it listens the
in-process checks are not needed; when it (re)connects, one check makes up for what it may
have missed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from wsemail.server.im import records
from wsemail.server.im.hub import event
from wsemail.server.store import BatchStore, Tx

log = logging.getLogger("wsemail.im")
PAGE = 64  # events read at a time for one session
KEEP = 2 * 86400.0  # seconds an event stays for a reconnecting client


class MailFeed:
    """The store side of new-mail events: where a session starts, what it is sent next,
    and which owners a commit may have given new mail (to wake their sessions)."""

    def __init__(self, store: BatchStore, wake: Callable[[list[str]], Any]) -> None:
        self.store = store
        self.wake = wake
        self._lock = threading.Lock()
        self._mark = 0  # the newest event whose owners were woken
        self._queued = False  # a check waits in the store's queue
        self._checks: set[asyncio.Task[Any]] = set()  # checks run on a loop (kept referenced)
        self._pruned = 0.0
        # true while a listener hears every node's commits (PostgreSQL: `nodes.Nodes`)
        self.heard: Callable[[], bool] | None = None
        # true while someone here follows new mail (a session, a plug-in's listener); while
        # nobody does, commits are not checked (None: always checked)
        self.listening: Callable[[], bool] | None = None

    def attach(self, tx: Tx) -> None:
        records.install_new_mail_trigger(tx)
        self._mark = records.new_mail_mark(tx)

    def cursor(self, tx: Tx, since: int | None) -> int:
        """Where a new session starts: after `since`, or after the newest event (`now`, or
        a cursor from a server whose events started over)."""
        newest = records.new_mail_mark(tx)
        if not self._followed():
            # the checks skipped while nobody followed: what came before this session
            # concerns only this session, which reads it from its cursor itself
            with self._lock:
                self._mark = max(self._mark, newest)
        return newest if since is None or since > newest else since

    def _followed(self) -> bool:
        return self.listening is None or self.listening()

    async def pull(self, owner: str, after: int) -> tuple[list[bytes], int, bool]:
        """The next events of `owner` after `after`: (SSE events, new cursor, more)."""
        found, last, more = await self.store.transact(
            lambda tx: records.new_mail(tx, owner, after, PAGE)
        )
        events = [event("mail", {"cursor": ev, **head.as_dict()}) for ev, head in found]
        return events, last, more

    def check_soon(self) -> None:
        """(Any thread, the store's writer too.) Once the units now running have
        committed, wake the sessions of everyone with new mail. Checks coalesce. Not
        needed while the listener hears every commit (PostgreSQL), nor while nobody here
        follows new mail (a session that starts then reads from its own cursor)."""
        if self.heard is not None and self.heard():
            return
        if not self._followed():
            return
        self.check_now()

    def check_now(self) -> None:
        """(Any thread.) Like `check_soon`, even while a listener hears every commit. On
        a loop whose store runs quick units there, the check is one of them (after the
        batch now running); elsewhere it waits in the writer thread's queue."""
        with self._lock:
            if self._queued:
                return
            self._queued = True

        def check(tx: Tx) -> tuple[int, list[str]]:
            with self._lock:
                self._queued = False
                mark = self._mark
            return records.new_mail_owners(tx, mark)

        def done(future: Any) -> None:
            if future.cancelled() or future.exception() is not None:
                return  # the next check (at the latest the sweeper's) tries again
            newest, owners = future.result()
            with self._lock:
                self._mark = max(self._mark, newest)
            if owners:
                self.wake(owners)

        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None and self.store.runs_on_loop:  # a quick unit on this loop
            task = loop.create_task(self.store.transact(check, quick=True))
            self._checks.add(task)
            task.add_done_callback(self._checks.discard)
            task.add_done_callback(done)
            return
        self.store.submit(check).add_done_callback(done)

    def prune_now(self, every: float = 600.0) -> None:
        """(The sweeper thread.) Forget events older than KEEP, at most every `every` s."""
        now = time.time()  # the trigger writes the wall clock
        if now - self._pruned < every:
            return
        self._pruned = now
        gone = self.store.submit(lambda tx: records.prune_new_mail(tx, now - KEEP)).result(30)
        if gone:
            log.info("forgot %d new-mail event(s) older than %g s", gone, KEEP)
