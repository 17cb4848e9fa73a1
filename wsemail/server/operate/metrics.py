"""In charge of `GET /metrics` (Prometheus text format, prometheus_client) and
`GET /healthz`: the counters and histograms the server's hooks feed (requests by operation
and outcome, their latency, relay attempts and failures per destination domain, store
commit time) and the gauges read at scrape time (queue depth and oldest age per domain,
live push sessions and party lines).

/metrics answers a loopback peer, or any peer with `Authorization: Bearer <token>` of
server.toml's `[metrics] token`; anyone else gets 403. /healthz answers 200 when the store
answers and the queue is not stuck (no row overdue by more than `stuck_after` seconds),
503 otherwise; it says no more than that and needs no token.

The numbers are kept by `tally.py` between scrapes; prometheus_client prints them, loaded by
the first scrape.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from wsemail.server.operate.tally import Counter, Gauge, Histogram, Tally, families

METRICS_PATH = "/metrics"
HEALTH_PATH = "/healthz"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Metrics:
    """One server's metrics, of its own (several servers may share a process: tests, the
    testbed)."""

    def __init__(self) -> None:
        self.requests = Counter(
            "wsemail_requests",
            "SOAP requests answered, by operation and outcome (ok or the fault subcode)",
            ["operation", "outcome"],
        )
        self.latency = Histogram(
            "wsemail_request_seconds",
            "time from the request's arrival to its answer, by operation",
            ["operation"],
            buckets=LATENCY_BUCKETS,
        )
        self.relay_attempts = Counter(
            "wsemail_relay_attempts",
            "signed Deliver transactions sent, by destination domain",
            ["domain"],
        )
        self.relay_failures = Counter(
            "wsemail_relay_failures",
            "Deliver transactions that got no results (unreachable, refused), by domain",
            ["domain"],
        )
        self.commit_seconds = Histogram(
            "wsemail_store_commit_seconds",
            "time one store transaction (a group commit) took, BEGIN to COMMIT",
            buckets=LATENCY_BUCKETS,
        )
        self.deliveries = Counter(
            "wsemail_deliveries", "copies delivered into mailboxes on this server"
        )
        self.refusals = Counter(
            "wsemail_refusals",
            "messages refused (a Send or Deliver refused, a recipient rejected)",
        )
        self.queue_depth = Gauge(
            "wsemail_queue_depth",
            "outbound messages waiting, by destination domain",
            ["domain"],
        )
        self.queue_oldest = Gauge(
            "wsemail_queue_oldest_seconds",
            "age of the oldest waiting message, by destination domain",
            ["domain"],
        )
        self.push_sessions = Gauge("wsemail_push_sessions", "live IM push sessions")
        self.party_lines = Gauge("wsemail_party_lines", "open party lines")
        self.users = Gauge("wsemail_users", "accounts on this server")
        self.messages = Gauge("wsemail_messages", "mailbox copies stored")

    def render(self) -> bytes:
        """The Prometheus text of every metric, in the order above."""
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry()  # of this scrape's families only
        registry.register(
            _Families(families(m for m in vars(self).values() if isinstance(m, Tally)))
        )
        return generate_latest(registry)


class _Families:
    """A prometheus_client collector of the families of one scrape."""

    def __init__(self, found: list[Any]) -> None:
        self.found = found

    def collect(self) -> list[Any]:
        return self.found


Snapshot = Callable[[], Awaitable[None]]  # refreshes the scrape-time gauges
Health = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]


def metrics_route(metrics: Metrics, token: Callable[[], str], refresh: Snapshot) -> Any:
    """The ASGI app for /metrics."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        peer = request.client.host if request.client else ""
        if request.method != "GET":
            response = Response("use GET\n", status_code=405, media_type="text/plain")
        elif not (is_loopback(peer) or _token_ok(request, token())):
            response = Response(
                "metrics are for loopback or the metrics token\n",
                status_code=403,
                media_type="text/plain",
            )
        else:
            await refresh()
            from prometheus_client.exposition import CONTENT_TYPE_LATEST

            response = Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
        await response(scope, receive, send)

    return app


def _token_ok(request: Request, expected: str) -> bool:
    if not expected:
        return False
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())


def health_route(check: Health) -> Any:
    """The ASGI app for /healthz: 200 {"status": "ok"} or 503 with what is wrong."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        healthy, detail = await check()
        body = json.dumps({"status": "ok" if healthy else "failing", **detail}) + "\n"
        response = Response(
            body, status_code=200 if healthy else 503, media_type="application/json"
        )
        await response(scope, receive, send)

    return app
