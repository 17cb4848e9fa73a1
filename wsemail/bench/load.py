"""In charge of the test bed's load: clients on keep-alive TLS connections making
password-MAC requests from a mix, and the feeder that sends to every client through the
external server."""

from __future__ import annotations

import asyncio
import random
import re
import socket
import ssl
import time
from dataclasses import dataclass

from lxml import etree

from wsemail.bench.options import OPS, Failure, OpTally, Options
from wsemail.protocol import soap
from wsemail.protocol.auth import SIGN_RESPONSE, Credentials
from wsemail.protocol.message import Draft
from wsemail.protocol.soap import element, q

_ID = re.compile(rb"<(?:[\w.-]+:)?Id>([^<]+)</")


class Connection:
    """One keep-alive HTTP/1.1 connection over TLS, raw, so the generator stays cheap."""

    def __init__(self, url: str, context: ssl.SSLContext, tls_name: str) -> None:
        host, _, rest = url.split("://", 1)[1].partition(":")
        port, _, path = rest.partition("/")
        self.host, self.port, self.path = host, int(port), "/" + path
        self.context, self.tls_name = context, tls_name
        self.head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: {soap.CONTENT_TYPE}\r\n"
        ).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, ssl=self.context, server_hostname=self.tls_name
        )
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def post(self, data: bytes) -> tuple[int, bytes, int, int]:
        """(status, body, bytes sent, bytes received)."""
        assert self.reader is not None and self.writer is not None
        request = self.head + b"Content-Length: %d\r\n\r\n" % len(data) + data
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length)
        return status, body, len(request), len(head) + length

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                async with asyncio.timeout(2):
                    await self.writer.wait_closed()
            except (TimeoutError, OSError):
                self.writer.transport.abort()


def _envelope(creds: Credentials, op: etree._Element, known: str | None = None) -> bytes:
    env, header, body = soap.new_envelope()
    body.append(op)
    creds.sign(header, body)
    if known is not None:  # a signed answer, naming the server certificate the client holds
        etree.SubElement(header, q(SIGN_RESPONSE)).set("ServerCertificate", known)
    return soap.serialize(env)


@dataclass
class Plan:
    options: Options
    local_users: list[str]
    external_users: list[str]
    stop_at: float | None
    rng: random.Random
    known: str | None = None  # digest of local.test's server certificate (signed answers)


class Client:
    """One simulated user: its own connection, its known inbox, its tallies."""

    def __init__(self, creds: Credentials, conn: Connection, plan: Plan) -> None:
        self.creds, self.conn, self.plan = creds, conn, plan
        self.known: list[str] = []
        self.tallies = {op: OpTally() for op in OPS}
        self.failures: list[Failure] = []
        self.n = 0

    def build(self, op: str) -> bytes | None:
        plan, rng = self.plan, self.plan.rng
        if op == "send":
            self.n += 1
            node = etree.Element(q("Send"))
            Draft(
                to=[rng.choice(plan.local_users), rng.choice(plan.external_users)],
                subject=f"testbed {self.creds.username} {self.n}",
                body="x" * plan.options.size,
            ).to_xml(node)
        elif op == "list":
            node = etree.Element(q("ListHeaders"))
            element(node, "Folder", "inbox")
            element(node, "Limit", "50")
        else:
            if not self.known:
                return None
            target = rng.choice(self.known)
            node = etree.Element(q("Retrieve" if op == "retrieve" else "Delete"))
            element(node, "Id", target)
            if op == "delete":
                self.known.remove(target)
        return _envelope(self.creds, node, self.plan.known)

    async def call(self, op: str, data: bytes, started: float) -> None:
        status, body, sent, received = await self.conn.post(data)
        elapsed = (time.perf_counter() - started) * 1000
        tally = self.tallies[op]
        tally.sent += sent
        tally.received += received
        if status != 200:
            tally.failed += 1
            if len(self.failures) < 5:
                self.failures.append(
                    Failure(op, str(status), body[:300].decode("utf-8", "replace"))
                )
            return
        tally.latencies.append(elapsed)
        if op == "list":
            self.known = [m.decode() for m in _ID.findall(body)]
        elif op == "retrieve" and b"Provenance" in body:
            tally.relayed += 1
            tally.relayed_received += received

    async def run(self, count: int, interval: float | None, offset: float) -> None:
        ops, weights = list(self.plan.options.mix), list(self.plan.options.mix.values())
        rng = self.plan.rng
        # learn the primed inbox (not counted)
        data = self.build("list")
        assert data is not None
        status, body, _, _ = await self.conn.post(data)
        self.known = [m.decode() for m in _ID.findall(body)] if status == 200 else []
        start = time.perf_counter() + offset
        made = attempts = 0
        stop_at = self.plan.stop_at
        while True:
            if stop_at is not None:
                if time.perf_counter() >= stop_at:
                    return
            elif made >= count or attempts >= 20 * count:
                return
            attempts += 1
            op = rng.choices(ops, weights)[0]
            scheduled = None
            if interval is not None:
                scheduled = start + made * interval
                # loop: the event loop's timers may fire up to a millisecond early
                while (delay := scheduled - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)
            data = self.build(op)
            if data is None:
                self.tallies[op].skipped += 1
                continue
            made += 1
            # open loop: latency from the scheduled start (no coordinated omission)
            await self.call(op, data, scheduled if scheduled is not None else time.perf_counter())


async def feeder(
    creds: Credentials,
    conn: Connection,
    recipients: list[str],
    rate: float,
    stop: asyncio.Event,
    counts: dict[str, int],
) -> None:
    """S_e's load: `rate` messages/s to each client, through S_e's client interface."""
    if rate <= 0:
        return
    await conn.open()
    try:
        tick, n = time.perf_counter(), 0
        while not stop.is_set():
            for recipient in recipients:
                n += 1
                op = etree.Element(q("Send"))
                Draft(to=[recipient], subject=f"from outside {n}", body="e" * 1024).to_xml(op)
                status, _, _, _ = await conn.post(_envelope(creds, op))
                counts["ok" if status == 200 else "failed"] += 1
            tick += 1.0 / rate
            try:
                await asyncio.wait_for(stop.wait(), max(0.0, tick - time.perf_counter()))
            except TimeoutError:
                pass
    finally:
        await conn.close()


# -- statistics ---------------------------------------------------------------------------
