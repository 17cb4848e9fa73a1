"""In charge of live push sessions: each is one server-sent-events stream to a client,
opened with a one-time ticket that the password-MAC-authenticated `im` extension handed
out. A push is held while its unit of work runs and released only once that unit has
committed; a push that finds no live session any more goes to the mailbox instead.

A push written to a socket is not a delivery: the listener acknowledges each message by
its id (the `im` extension's `Ack`). Until then it waits in the store (`records.Pending`);
a new session of the same user is sent what still waits for it (so a listener that
reconnects gets it; clients drop repeats by id), and a session that leaves a push
unacknowledged past its deadline is taken for dead and ended (its client reconnects).

    GET /wsemail/im/stream?ticket=…[&mail=now|<cursor>][&im=0]  →  text/event-stream
        event: ready    data: {"session": …, "address": …, "heartbeat": s, "ack": true,
                               "mail": <cursor> (with mail=…)}
        event: message  id: <push id>  data: {from, to, subject, body, date, message_id, …}
        event: notice   data: {…}            (e.g. an instant message of yours was dropped)
        event: mail     data: {cursor, id, from, subject, date, folder, …}  (`newmail`)
        : keep-alive                          (every `heartbeat` seconds)

`mail=…` asks for new-mail events as well (`newmail`); `im=0` makes a session that only
follows new mail: it takes no instant messages or notices and does not count as online.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs

from starlette.types import Receive, Scope, Send

from wsemail.protocol import soap
from wsemail.protocol.errors import (
    AuthenticationFailed,
    LimitExceeded,
    RemoteFault,
    RequestInvalid,
    ServerBusy,
    WsemailError,
)
from wsemail.protocol.message import Message
from wsemail.protocol.soap import parse_int
from wsemail.server.im import records
from wsemail.server.store import Tx

if TYPE_CHECKING:
    from wsemail.server.app import Server

log = logging.getLogger("wsemail.im")
STREAM_PATH = "/wsemail/im/stream"
QUEUE_MAX = 256  # events a slow session may fall behind before it is cut off
MAX_CURSOR = 2**62  # a new-mail event number
FD_RESERVE = 256  # at least this many descriptors (and half) stay for everything else


def fd_budget(reserve: int = FD_RESERVE) -> int:
    """How many push streams this process can hold open and still take ordinary requests:
    each stream holds a descriptor, and a server out of descriptors stops accepting any
    connection (uvicorn retries accept() and everything waits in the backlog)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 30
    # half: a live client usually also holds a keep-alive connection for its requests
    return max(16, soft - max(reserve, soft // 2))


class MailSource(Protocol):
    """What the hub reads new mail through (`newmail.MailFeed`)."""

    def cursor(self, tx: Tx, since: int | None) -> int: ...

    async def pull(self, owner: str, after: int) -> tuple[list[bytes], int, bool]: ...


@dataclass
class Session:
    id: str
    address: str
    since: float
    queue: asyncio.Queue[bytes | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=QUEUE_MAX)
    )
    ended: bool = False  # dropped by the hub: send what is queued, then end the stream
    unacked: dict[str, float] = field(default_factory=dict)  # push id → monotonic deadline
    instant: bool = True  # takes instant messages and notices, counts as online
    mail_cursor: int | None = None  # follows new mail: the last event it was sent
    mail_wake: asyncio.Event | None = None  # set: new mail may be there for it


@dataclass(frozen=True)
class Push:
    push_id: str
    recipient: str
    message: Message
    data: bytes
    # the recipient also has sessions on another node (`nodes`), told of it too: none here
    # is no reason to move it on at once (the acknowledgement deadline is)
    shared: bool = False


def event(kind: str, payload: dict[str, Any], event_id: str | None = None) -> bytes:
    lines = [f"event: {kind}"]
    if event_id:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(payload, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


class Hub:
    def __init__(
        self,
        server: Server,
        fallback: Callable[[Push], None],
        *,
        heartbeat: float = 15.0,
        ack_timeout: float = 5.0,
        waiting: Callable[[str], Awaitable[list[Push]]] | None = None,
        max_sessions_per_user: int = 16,
        max_sessions: int = 10_000,
        mail: MailSource | None = None,
    ) -> None:
        self.server = server
        self.mail = mail
        self.fallback = fallback
        self.heartbeat = heartbeat
        self.ack_timeout = ack_timeout
        self.waiting = waiting
        self.max_sessions_per_user = max_sessions_per_user
        budget = fd_budget()
        if max_sessions > budget:
            log.warning(
                "max_sessions %d is more than the open-file limit leaves room for; at most %d "
                "live sessions (raise `ulimit -n` for more)",
                max_sessions,
                budget,
            )
        self.max_sessions = min(max_sessions, budget)
        self.send_timeout = max(2 * heartbeat, 30.0)  # a peer that stopped reading
        self._count = 0
        self._following = 0  # sessions that follow new mail
        self._lock = threading.Lock()
        self._sessions: dict[str, dict[str, Session]] = {}
        self._pending: dict[str, Push] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        # told (any thread) the address whose count of instant sessions here changed
        self.on_presence: Callable[[str], object] | None = None
        # (in a unit of work) tells the other nodes of a notice for an address (`nodes`)
        self.on_notice: Callable[[Tx, str, dict[str, Any]], object] | None = None

    # presence ---------------------------------------------------------------------------
    def live(self, address: str) -> int:
        """`address`'s sessions that take instant messages."""
        with self._lock:
            return sum(s.instant for s in self._sessions.get(address, {}).values())

    def online(self) -> dict[str, int]:
        with self._lock:
            counts = {
                a: sum(s.instant for s in mine.values()) for a, mine in self._sessions.items()
            }
        return {a: n for a, n in counts.items() if n}

    def count(self) -> int:
        with self._lock:
            return self._count

    def follows_mail(self) -> bool:
        """Whether a session here follows new mail (read without the lock: one int)."""
        return self._following > 0

    # pushes -----------------------------------------------------------------------------
    def hold(self, push: Push) -> None:
        """Before commit: remember the push; `release` sends it, `discard` forgets it."""
        with self._lock:
            self._pending[push.push_id] = push

    def discard(self, push_id: str) -> None:
        with self._lock:
            self._pending.pop(push_id, None)

    def release(self, push_id: str) -> None:
        """After commit (from any thread): hand the push to the event loop, once."""
        with self._lock:
            push = self._pending.pop(push_id, None)
            loop = self._loop
        if push is None:
            return
        if loop is None or loop.is_closed():
            if not push.shared:
                self.fallback(push)
            return
        try:
            loop.call_soon_threadsafe(self._deliver, push)
        except RuntimeError:  # the loop stopped meanwhile
            if not push.shared:
                self.fallback(push)

    def push_here(self, push: Push) -> None:
        """(Any thread.) A push another node released for a recipient with sessions here:
        to those of them not sent it yet, with no fallback (the acknowledgement deadline
        moves it on)."""
        with self._lock:
            loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(
                    self._put_all, push.recipient, push.data, push.push_id, True
                )

    def notify(self, address: str, data: bytes) -> None:
        """A best-effort event (no fallback) to every live session of `address`."""
        with self._lock:
            loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._put_all, address, data)

    def _put_all(
        self, address: str, data: bytes, push_id: str | None = None, only_new: bool = False
    ) -> int:
        with self._lock:
            sessions = [s for s in self._sessions.get(address, {}).values() if s.instant]
        if only_new:  # not to a session that has it and has not acknowledged it yet
            sessions = [s for s in sessions if push_id not in s.unacked]
        delivered = 0
        deadline = time.monotonic() + self.ack_timeout
        for session in sessions:
            try:
                session.queue.put_nowait(data)
                delivered += 1
                if push_id is not None:
                    session.unacked[push_id] = deadline
            except asyncio.QueueFull:
                log.warning("session %s of %r is too slow; cutting it off", session.id, address)
                self._drop(session)
        return delivered

    def _deliver(self, push: Push) -> None:
        if self._put_all(push.recipient, push.data, push.push_id) == 0 and not push.shared:
            self.fallback(push)

    def wake_mail(self, addresses: list[str]) -> None:
        """(Any thread.) These users may have new mail: their sessions that follow it look."""
        with self._lock:
            loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake_mail, addresses)

    def _wake_mail(self, addresses: list[str]) -> None:
        with self._lock:
            sessions = [s for a in addresses for s in self._sessions.get(a, {}).values()]
        for session in sessions:
            if session.mail_wake is not None:
                session.mail_wake.set()

    # acknowledgements -------------------------------------------------------------------
    def acked(self, address: str, push_ids: list[str]) -> None:
        """After the `Ack` committed (any thread): those pushes no longer count against
        the liveness of `address`'s sessions."""
        with self._lock:
            loop = self._loop
        if loop is not None and not loop.is_closed() and push_ids:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._forget, address, push_ids)

    def _forget(self, address: str, push_ids: list[str]) -> None:
        with self._lock:
            sessions = list(self._sessions.get(address, {}).values())
        for session in sessions:
            for push_id in push_ids:
                session.unacked.pop(push_id, None)

    def reap(self) -> None:
        """(Any thread.) End every session that left a push unacknowledged past its
        deadline: a stopped process or a vanished network keeps its socket open, and
        later pushes should go to the mailbox at once instead of waiting for it."""
        with self._lock:
            loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._reap)

    def _reap(self) -> None:
        now = time.monotonic()
        with self._lock:
            late = [
                s
                for mine in self._sessions.values()
                for s in mine.values()
                if any(deadline < now for deadline in s.unacked.values())
            ]
        for session in late:
            log.info(
                "session %s of %r acknowledged nothing in time; ended", session.id, session.address
            )
            self._drop(session)

    # sessions ---------------------------------------------------------------------------
    def _add(self, address: str, instant: bool = True) -> Session:
        with self._lock:
            if self._closed:
                raise ServerBusy("the server is shutting down")
            mine = self._sessions.get(address, {})
            if len(mine) >= self.max_sessions_per_user:
                raise LimitExceeded(
                    f"at most {self.max_sessions_per_user} live sessions per user; "
                    "close one of yours first"
                )
            if self._count >= self.max_sessions:
                raise ServerBusy(
                    f"this server holds its maximum of {self.max_sessions} live sessions; "
                    "try again later"
                )
            session = Session(secrets.token_hex(8), address, time.time(), instant=instant)
            self._sessions.setdefault(address, mine)[session.id] = session
            self._count += 1
            self._loop = asyncio.get_running_loop()
        if instant:
            self._presence(address)
        return session

    def _presence(self, address: str) -> None:
        if self.on_presence is not None:
            try:
                self.on_presence(address)
            except Exception:
                log.exception("presence of %r not shared", address)

    def _drop(self, session: Session) -> None:
        with self._lock:
            mine = self._sessions.get(session.address, {})
            if mine.pop(session.id, None) is None:
                return
            self._count -= 1
            if session.mail_wake is not None:
                self._following -= 1
            if not mine:
                self._sessions.pop(session.address, None)
        session.ended = True
        with contextlib.suppress(asyncio.QueueFull):  # full: the stream sees `ended`
            session.queue.put_nowait(None)
        if session.instant:
            self._presence(session.address)

    def close(self) -> None:
        """End every stream (the plug-in is unloaded or the server stops)."""
        with self._lock:
            self._closed = True
            sessions = [s for mine in self._sessions.values() for s in mine.values()]
            loop = self._loop
        for session in sessions:
            if loop is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._drop, session)

    # the ASGI route ---------------------------------------------------------------------
    async def stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if scope.get("method") != "GET":
                raise RequestInvalid("open the stream with GET")
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            tickets = query.get("ticket", [])
            if len(tickets) != 1 or not 16 <= len(tickets[0]) <= 128:
                raise AuthenticationFailed("a stream ticket is required")
            ticket = tickets[0]
            instant, follow, since = self._options(query)
            mail = self.mail if follow else None

            def start(tx: Tx) -> tuple[str | None, int | None]:
                address = records.take_ticket(tx, ticket)
                return address, (None if mail is None else mail.cursor(tx, since))

            address, cursor = await self.server.store.transact(start)
            if address is None:
                raise AuthenticationFailed("the stream ticket is not valid")
            # what still waits for an acknowledgement goes out first on the new session
            waiting = [] if self.waiting is None or not instant else await self.waiting(address)
            session = self._add(address, instant)
            for push in waiting[:QUEUE_MAX]:
                session.queue.put_nowait(push.data)
                session.unacked[push.push_id] = time.monotonic() + self.ack_timeout
            if cursor is not None:  # registered first: a commit from now on wakes it
                session.mail_cursor = cursor
                wake = asyncio.Event()
                wake.set()  # what arrived after `cursor` goes out at once
                with self._lock:  # (the sweeper may drop the session meanwhile)
                    session.mail_wake = wake
                    if session.id in self._sessions.get(address, {}):
                        self._following += 1
        except RemoteFault as exc:
            body = soap.fault(exc)
            headers = [(b"content-type", soap.CONTENT_TYPE.encode())]
            if isinstance(exc, ServerBusy):
                headers.append((b"retry-after", b"30"))
            await send({"type": "http.response.start", "status": exc.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        log.info("live session %s for %r", session.id, address)
        try:
            await self._serve(session, receive, send)
        finally:
            self._drop(session)
            log.info("session %s for %r ended", session.id, address)

    def _options(self, query: dict[str, list[str]]) -> tuple[bool, bool, int | None]:
        """(takes instant messages, follows new mail, the cursor to resume after)."""
        ims, mails = query.get("im", ["1"]), query.get("mail", [])
        if len(ims) != 1 or ims[0] not in ("0", "1") or len(mails) > 1:
            raise RequestInvalid("im must be 0 or 1, and mail given at most once")
        instant = ims[0] == "1"
        since = None if not mails or mails[0] == "now" else _cursor(mails[0])
        if not instant and not mails:
            raise RequestInvalid("a stream without instant messages (im=0) must ask for mail")
        if mails and self.mail is None:
            raise RequestInvalid("this server does not push new mail")
        return instant, bool(mails), since

    async def _serve(self, session: Session, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-store"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )
        ready: dict[str, Any] = {
            "session": session.id,
            "address": session.address,
            "heartbeat": self.heartbeat,
            "ack": True,
        }
        if session.mail_cursor is not None:
            ready["mail"] = session.mail_cursor
        await send({"type": "http.response.body", "body": event("ready", ready), "more_body": True})

        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        watcher = asyncio.ensure_future(disconnected())
        puller = None if session.mail_wake is None else asyncio.ensure_future(self._pull(session))
        try:
            while not watcher.done():
                if session.ended and session.queue.empty():
                    break
                getter = asyncio.ensure_future(session.queue.get())
                done, _ = await asyncio.wait(
                    {getter, watcher}, timeout=self.heartbeat, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await getter
                    if done:  # the client went away
                        return
                    chunk = b": keep-alive\n\n"
                else:
                    item = getter.result()
                    if item is None:
                        continue  # ended: what is still queued goes out first
                    chunk = item
                async with asyncio.timeout(self.send_timeout):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            async with asyncio.timeout(self.send_timeout):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except TimeoutError:
            log.info("session %s of %r stopped reading; ended", session.id, session.address)
        except OSError:
            return
        finally:
            for task in (watcher, puller):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def _pull(self, session: Session) -> None:
        """A session's new mail: each wake-up reads what arrived after its cursor (in pages,
        leaving half of its queue for instant messages) and queues it."""
        wake, feed = session.mail_wake, self.mail
        assert wake is not None and feed is not None and session.mail_cursor is not None
        while not session.ended:
            await wake.wait()
            wake.clear()
            more = True
            while more and not session.ended:
                while session.queue.qsize() > QUEUE_MAX // 2:
                    await asyncio.sleep(0.05)
                try:
                    events, cursor, more = await feed.pull(session.address, session.mail_cursor)
                except WsemailError as exc:  # a store hiccup: look again in a moment
                    log.warning("new mail for session %s not read: %s", session.id, exc)
                    await asyncio.sleep(1.0)
                    wake.set()
                    break
                session.mail_cursor = cursor
                for data in events:
                    try:
                        session.queue.put_nowait(data)
                    except asyncio.QueueFull:
                        log.warning(
                            "session %s of %r is too slow; cutting it off",
                            session.id,
                            session.address,
                        )
                        self._drop(session)
                        return


def _cursor(value: str) -> int:
    try:
        return parse_int(value, "mail", 0, MAX_CURSOR)
    except RequestInvalid:
        raise RequestInvalid("mail must be now or a cursor from an earlier mail event") from None
