"""In charge of handing finished forms to the `webhook` program, durably: the hand-off is a
row of the server's SQLite store written in the same transaction as the delivery that
finished the workflow, and a worker thread POSTs it until the program answers 2xx,
retrying with exponential backoff until the hand-off's lifetime runs out (then it is
logged and marked failed). Rows outlive restarts, so delivery is at least once: every
attempt carries the same `Idempotency-Key` header (a digest of the finished form) for the
receiver to drop repeats; the same finished form brought back twice is recorded once.
Settled rows are kept a week past their lifetime, then swept.

    pending ──2xx──▶ delivered
       │ error: attempts+1, next attempt after base·2^attempts (at most `max_delay`)
       └─lifetime over──▶ failed
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from wsemail.server.store import SqliteStore, Tx

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
        store: SqliteStore,
        *,
        base_delay: float = 2.0,
        max_delay: float = 600.0,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.store = store
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.timeout = timeout
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
        with httpx.Client(timeout=self.timeout, transport=self.transport) as http:
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
            error = self._post(http, item)
            self.store.transact_sync(self._settle(item, error))
        return self.store.transact_sync(_next_wait(self.max_delay))

    def _post(self, http: httpx.Client, item: Due) -> str:
        """'' when the program took it (2xx), else what went wrong."""
        try:
            response = http.post(
                item.url,
                content=item.payload,
                headers={"content-type": "application/json", HEADER: item.key},
            )
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if 200 <= response.status_code < 300:
            return ""
        return f"HTTP {response.status_code}"

    def _settle(self, item: Due, error: str) -> Callable[[Tx], None]:
        def work(tx: Tx) -> None:
            attempts = item.attempts + 1
            if not error:
                tx.conn.execute(
                    "UPDATE forms_webhook SET state='delivered', attempts=?, last_error=NULL"
                    " WHERE id=?",
                    (attempts, item.id),
                )
                log.info("form hand-off %s taken by %r (attempt %d)", item.key, item.url, attempts)
                return
            if tx.now >= item.expires:
                tx.conn.execute(
                    "UPDATE forms_webhook SET state='failed', attempts=?, last_error=? WHERE id=?",
                    (attempts, error, item.id),
                )
                log.warning(
                    "form hand-off %s to %r failed for good after %d attempts: %s",
                    item.key,
                    item.url,
                    attempts,
                    error,
                )
                return
            delay = min(self.base_delay * 2 ** (attempts - 1), self.max_delay)
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
