"""In charge of handing finished forms to the `webhook` program, durably: the hand-off is a
row of the server's SQLite store written in the same transaction as the delivery that
finished the workflow, and a worker thread POSTs it until the program answers 2xx,
retrying with exponential backoff until the hand-off's lifetime runs out (then it is
logged and marked failed). A 4xx answer other than 408, 409, 425 and 429 is the program
refusing this form for good: failed at once, its status and the start of its body logged.
On 429 and 503 a `Retry-After` (seconds or an HTTP date) sets the next attempt's earliest
time, bounded by `max_delay`. Rows outlive restarts, so delivery is at least once: every
attempt carries the same `Idempotency-Key` header (a digest of the finished form) for the
receiver to drop repeats; the same finished form brought back twice is recorded once.
Settled rows are kept a week past their lifetime, then swept. Before each POST, outside
any transaction, `prepare` turns a recorded payload into the one posted (the forms
plug-in verifies the form's whole chain there): None drops the row as not finished
('dropped'), an exception fails it for good.

An https program is checked against the system's CAs, a PEM bundle, or this server's
federation roots (`tls_context`).

    pending ──2xx──▶ delivered
       │ error: attempts+1, next attempt after base·2^attempts (at most `max_delay`),
       │        or later when a 429/503 said `Retry-After`
       ├─permanent 4xx──▶ failed
       └─lifetime over──▶ failed
"""

from __future__ import annotations

import hashlib
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx

from wsemail.protocol.errors import RequestInvalid
from wsemail.protocol.soap import parse_int
from wsemail.server.store import BatchStore, Tx

log = logging.getLogger("wsemail.forms")
COMPONENT = "forms"
MIGRATIONS = [
    """
    CREATE TABLE forms_webhook(
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        url TEXT NOT NULL,
        payload BLOB NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL NOT NULL,
        created REAL NOT NULL,
        expires REAL NOT NULL,
        last_error TEXT
    );
    CREATE INDEX forms_webhook_due ON forms_webhook(state, next_attempt)
    """
]
HEADER = "Idempotency-Key"
BATCH = 32
KEEP_SETTLED = 7 * 86400.0  # delivered / failed rows stay this long after their lifetime
RETRYABLE_4XX = frozenset({408, 409, 425, 429})  # any other 4xx is a refusal for good
RETRY_AFTER_ON = frozenset({429, 503})
EXCERPT = 200  # characters of a refusal's body kept in the log and the row
FEDERATION = "federation"  # webhook_ca: trust the server's federation roots


def tls_context(ca: str | None, federation_roots: Sequence[Path] = ()) -> ssl.SSLContext:
    """How an https program is checked: the system's CAs (`None`), the PEM bundle at path
    `ca`, or the federation roots (`ca == "federation"`). ValueError when the bundle is
    missing or holds no certificate."""
    if ca is None:
        return ssl.create_default_context()
    if ca == FEDERATION:
        if not federation_roots:
            raise ValueError("forms webhook_ca = 'federation' but no federation roots are set")
        try:
            cadata = "".join(Path(p).read_text() for p in federation_roots)
            return ssl.create_default_context(cadata=cadata)
        except (OSError, ValueError) as exc:
            raise ValueError(f"forms webhook_ca: cannot load the federation roots: {exc}") from exc
    path = Path(ca).expanduser()
    if not path.is_file():
        raise ValueError(f"forms webhook_ca {ca!r}: no such file (a PEM bundle of CAs)")
    try:
        return ssl.create_default_context(cafile=str(path))
    except OSError as exc:
        raise ValueError(f"forms webhook_ca {ca!r} is not a PEM bundle of CAs: {exc}") from exc


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds from `now` a `Retry-After` header asks to wait (delta-seconds or an HTTP
    date); None when there is none or it makes no sense."""
    if value is None:
        return None
    value = value.strip()
    if value[:1].isdigit():  # delta-seconds: ASCII digits only ("²" is a digit to isdigit)
        try:
            return float(parse_int(value, "Retry-After", 0, 10**9))
        except RequestInvalid:
            return None
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


@dataclass(frozen=True)
class Outcome:
    """One POST's result: taken (no `error`), refused for good (`permanent`), or worth
    another attempt, not before `wait` seconds when the program said so."""

    error: str = ""
    permanent: bool = False
    wait: float = 0.0
    dropped: bool = False  # never posted: not a finished form


def idempotency_key(payload: dict[str, object]) -> str:
    """The same for every attempt and for the same finished form (its id and its XML)."""
    blob = json.dumps([payload.get("form_id"), payload.get("xml")]).encode()
    return hashlib.sha256(blob).hexdigest()


def record(tx: Tx, url: str, payload: dict[str, object], lifetime: float) -> bool:
    """Record a hand-off in the caller's transaction; False when this very finished form
    is already recorded."""
    cursor = tx.conn.execute(
        "INSERT OR IGNORE INTO forms_webhook(key, url, payload, next_attempt, created, expires)"
        " VALUES (?,?,?,?,?,?)",
        (
            idempotency_key(payload),
            url,
            json.dumps(payload).encode(),
            tx.now,
            tx.now,
            tx.now + lifetime,
        ),
    )
    return cursor.rowcount == 1


@dataclass(frozen=True)
class Due:
    id: int
    key: str
    url: str
    payload: bytes
    attempts: int
    expires: float


class Webhook:
    """The worker: one thread, woken when a hand-off is recorded, stopped by `close`."""

    def __init__(
        self,
        store: BatchStore,
        *,
        base_delay: float = 2.0,
        max_delay: float = 600.0,
        timeout: float = 10.0,
        verify: ssl.SSLContext | None = None,
        transport: httpx.BaseTransport | None = None,
        prepare: Callable[[dict[str, object]], dict[str, object] | None] | None = None,
    ) -> None:
        self.store = store
        self.prepare = prepare
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.timeout = timeout
        self.verify = verify if verify is not None else tls_context(None)
        self.transport = transport
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.store.ensure_schema(COMPONENT, MIGRATIONS)
        self._thread = threading.Thread(target=self._run, name="forms-webhook", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 5)
            self._thread = None

    # the loop ---------------------------------------------------------------------------
    def _run(self) -> None:
        with httpx.Client(
            timeout=self.timeout, verify=self.verify, transport=self.transport
        ) as http:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    wait = self.run_once(http)
                except Exception:  # keep the worker alive whatever one pass did
                    log.exception("webhook pass failed")
                    wait = self.max_delay
                self._wake.wait(wait)

    def run_once(self, http: httpx.Client) -> float:
        """POST every due hand-off once; seconds until the next one is due."""
        due = self.store.transact_sync(_due)
        for item in due:
            if self._stop.is_set():
                break
            ready = self._prepared(item)
            if isinstance(ready, Outcome):
                self.store.transact_sync(self._settle(item, ready))
                continue
            outcome = self._post(http, ready)
            self.store.transact_sync(self._settle(item, outcome))
        return self.store.transact_sync(_next_wait(self.max_delay))

    def _prepared(self, item: Due) -> Due | Outcome:
        """The item with the payload `prepare` makes of it, or how it settles instead."""
        if self.prepare is None:
            return item
        try:
            payload = self.prepare(json.loads(item.payload))
        except Exception as exc:  # noqa: BLE001 -- whatever it is, this form is not posted
            return Outcome(f"not handed on: {str(exc)[:300]}", permanent=True)
        if payload is None:
            return Outcome("not a finished form", permanent=True, dropped=True)
        return replace(item, payload=json.dumps(payload).encode())

    def _post(self, http: httpx.Client, item: Due) -> Outcome:
        """POST once; of a non-2xx answer's body only the first chunk(s) are read."""
        headers = {"content-type": "application/json", HEADER: item.key}
        try:
            with http.stream("POST", item.url, content=item.payload, headers=headers) as response:
                status = response.status_code
                if 200 <= status < 300:
                    return Outcome()
                error = f"HTTP {status}: {_excerpt(response)!r}"
                if 400 <= status < 500 and status not in RETRYABLE_4XX:
                    return Outcome(error, permanent=True)
                wait = None
                if status in RETRY_AFTER_ON:
                    wait = retry_after(response.headers.get("retry-after"), time.time())
                return Outcome(error, wait=min(wait, self.max_delay) if wait else 0.0)
        except httpx.HTTPError as exc:
            return Outcome(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # one odd answer must not stall every later hand-off
            log.exception("webhook POST of %s failed unexpectedly", item.key)
            return Outcome(f"{type(exc).__name__}: {exc}")

    def _settle(self, item: Due, outcome: Outcome) -> Callable[[Tx], None]:
        def work(tx: Tx) -> None:
            attempts = item.attempts + 1
            error = outcome.error
            if not error:
                tx.conn.execute(
                    "UPDATE forms_webhook SET state='delivered', attempts=?, last_error=NULL"
                    " WHERE id=?",
                    (attempts, item.id),
                )
                log.info("form hand-off %s taken by %r (attempt %d)", item.key, item.url, attempts)
                return
            if outcome.dropped:
                tx.conn.execute(
                    "UPDATE forms_webhook SET state='dropped', last_error=? WHERE id=?",
                    (error, item.id),
                )
                return
            if outcome.permanent or tx.now >= item.expires:
                tx.conn.execute(
                    "UPDATE forms_webhook SET state='failed', attempts=?, last_error=? WHERE id=?",
                    (attempts, error, item.id),
                )
                log.warning(
                    "form hand-off %s to %r failed for good after %d attempts (%s): %s",
                    item.key,
                    item.url,
                    attempts,
                    "refused" if outcome.permanent else "lifetime over",
                    error,
                )
                return
            delay = max(min(self.base_delay * 2 ** (attempts - 1), self.max_delay), outcome.wait)
            tx.conn.execute(
                "UPDATE forms_webhook SET attempts=?, last_error=?, next_attempt=? WHERE id=?",
                (attempts, error, min(tx.now + delay, item.expires), item.id),
            )
            log.info(
                "form hand-off %s to %r: %s; attempt %d in %.1fs",
                item.key,
                item.url,
                error,
                attempts + 1,
                delay,
            )

        return work


def _excerpt(response: httpx.Response) -> str:
    """The start of an answer's body, whitespace folded, for the log (read no further)."""
    body = b""
    try:
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) >= EXCERPT:
                break
    except httpx.HTTPError:
        pass
    text = " ".join(body.decode("utf-8", "replace").split())
    return text[:EXCERPT]


def _due(tx: Tx) -> list[Due]:
    tx.conn.execute(
        "DELETE FROM forms_webhook WHERE state!='pending' AND expires<?",
        (tx.now - KEEP_SETTLED,),
    )
    rows = tx.conn.execute(
        "SELECT id, key, url, payload, attempts, expires FROM forms_webhook"
        " WHERE state='pending' AND next_attempt<=? ORDER BY next_attempt LIMIT ?",
        (tx.now, BATCH),
    ).fetchall()
    return [Due(r[0], r[1], r[2], bytes(r[3]), r[4], r[5]) for r in rows]


def _next_wait(ceiling: float) -> Callable[[Tx], float]:
    def work(tx: Tx) -> float:
        row = tx.conn.execute(
            "SELECT min(next_attempt) FROM forms_webhook WHERE state='pending'"
        ).fetchone()
        if row is None or row[0] is None:
            return ceiling
        return max(0.0, min(float(row[0]) - tx.now, ceiling))

    return work
