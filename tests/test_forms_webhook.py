"""The finished form's hand-off to the `webhook` program is durable: recorded with the
delivery that finished the workflow, retried with backoff while a real HTTP receiver on
loopback fails, the same Idempotency-Key on every attempt, taken up again after a server
restart, and marked failed (nothing more sent) once its lifetime is over. A refusal for
good (400) fails it after one POST, a 429's Retry-After is waited out, and an https
receiver is checked against the CAs `webhook_ca` names (the federation roots or not)."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from stores import on_store
from test_federation import start_domain
from test_forms import ITEMS_500, Domain, built, requisition  # noqa: F401  (built: a fixture)

from wsemail.client.forms import workflow
from wsemail.pki import create_root, issue_server, write_crl
from wsemail.protocol.errors import PluginError
from wsemail.server.config import DEFAULT_PLUGINS
from wsemail.server.forms.webhook import HEADER, retry_after
from wsemail.server.pipeline import PluginSpec

from certs import make_tls_files
from conftest import Running, wait_for


class Receiver:
    """A real HTTP(S) program on loopback: answers `answer` (status, headers, body; 503 by
    default) to the first `fail` POSTs, then 204; records (Idempotency-Key, body) and the
    time of every POST it got. With `tls` (cert, key) it speaks https as `localhost`."""

    def __init__(
        self,
        fail: int,
        answer: tuple[int, dict[str, str], bytes] = (503, {}, b""),
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.fail = fail
        self.got: list[tuple[str, dict[str, object]]] = []
        self.times: list[float] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                outer.times.append(time.monotonic())
                outer.got.append((self.headers.get(HEADER, ""), json.loads(body)))
                status, headers, content = (
                    answer if len(outer.got) <= outer.fail else (204, {}, b"")
                )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.scheme, self.host = "http", "127.0.0.1"
        if tls is not None:  # the handshake runs in accept(): a refused one is dropped there
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme, self.host = "https", "localhost"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.httpd.server_address[1]}/done"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@dataclass
class Shop:
    ca: Path
    tmp: Path
    receiver: Receiver
    lifetime: float
    options: dict[str, object] = field(default_factory=dict)
    running: Running | None = None
    store_url: str = ""  # "" SQLite in the data dir, else a PostgreSQL database

    def start(self) -> Domain:
        options = {
            "webhook": self.receiver.url,
            "webhook_retry": 0.05,
            "webhook_max_delay": 0.2,
            "webhook_lifetime": self.lifetime,
            **self.options,
        }
        plugins = [
            *(spec for spec in DEFAULT_PLUGINS if spec.ref != "forms"),
            PluginSpec("forms", 40, options),
        ]
        self.running = start_domain(
            self.tmp, self.ca, "a.test", **on_store(self.store_url, plugins)
        )
        return Domain(self.ca, self.running, self.tmp)

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop()
            self.running = None

    def rows(self) -> list[tuple[str, int, str]]:
        return [(state, attempts, key) for state, attempts, key, _ in self.rows_with_error()]

    def rows_with_error(self) -> list[tuple[str, int, str, str | None]]:
        assert self.running is not None
        return self.running.controller.server.store.transact_sync(
            lambda tx: [
                (r[0], r[1], r[2], r[3])
                for r in tx.conn.execute(
                    "SELECT state, attempts, key, last_error FROM forms_webhook"
                )
            ]
        )


def make_shop(
    tmp_path: Path,
    fail: int,
    lifetime: float = 3600.0,
    receiver: Receiver | None = None,
    store_url: str = "",
) -> Shop:
    ca = tmp_path / "ca"
    if not (ca / "root.pem").exists():
        create_root(ca)
        write_crl(ca)
    return Shop(ca, tmp_path, receiver or Receiver(fail), lifetime, store_url=store_url)


@pytest.fixture
def shops(tmp_path: Path) -> Iterator[list[Shop]]:
    made: list[Shop] = []
    yield made
    for shop in made:
        shop.stop()
        shop.receiver.stop()


def finish_a_form(dom: Domain, built: dict[str, Path]) -> None:  # noqa: F811
    """carol's requisition, approved by bob, comes back to carol: the workflow's end."""
    first = requisition(dom, built, ITEMS_500)
    _, chain, to = workflow.act(dom.client("bob@a.test"), first, "approve", root=dom.forms)
    assert chain.complete and to == ["carol@a.test"]


@pytest.mark.both_stores
def test_a_failing_receiver_gets_the_form_again_with_the_same_key_until_it_takes_it(
    tmp_path: Path,
    shops: list[Shop],
    built: dict[str, Path],  # noqa: F811
    store_url: str,
) -> None:
    shop = make_shop(tmp_path, fail=3, store_url=store_url)
    shops.append(shop)
    dom = shop.start()
    finish_a_form(dom, built)
    wait_for(lambda: shop.rows() and shop.rows()[0][0] == "delivered", "the hand-off")
    got = shop.receiver.got
    assert len(got) == 4  # three 503s, then 204
    keys = {key for key, _ in got}
    assert len(keys) == 1 and len(next(iter(keys))) == 64
    assert all(body == got[0][1] for _, body in got)
    assert got[0][1]["status"] == "approved" and got[0][1]["sender"] == "carol@a.test"
    assert shop.rows() == [("delivered", 4, got[0][0])]
    # the same finished form brought back again (carol mails it to herself): recorded once
    carol = dom.client("carol@a.test")
    carol.send(["carol@a.test"], "again", str(got[0][1]["xml"]))
    assert len(carol.list_headers().headers) >= 2  # delivered, and the server still answers
    assert shop.rows() == [("delivered", 4, got[0][0])] and len(got) == 4


@pytest.mark.both_stores
def test_a_pending_hand_off_survives_a_restart(
    tmp_path: Path,
    shops: list[Shop],
    built: dict[str, Path],  # noqa: F811
    store_url: str,
) -> None:
    shop = make_shop(tmp_path, fail=10**6, store_url=store_url)  # the program is down for now
    shops.append(shop)
    dom = shop.start()
    finish_a_form(dom, built)
    wait_for(lambda: len(shop.receiver.got) >= 2, "two failed attempts")
    shop.stop()
    shop.receiver.fail = 0  # the program is back; the server is not
    before = len(shop.receiver.got)
    dom = shop.start()  # the same data directory
    wait_for(lambda: shop.rows()[0][0] == "delivered", "the hand-off after the restart")
    got = shop.receiver.got
    assert len(got) >= before + 1 and len({key for key, _ in got}) == 1
    assert len(shop.rows()) == 1
    assert dom.client("carol@a.test").list_headers().headers


def test_a_hand_off_past_its_lifetime_is_marked_failed_and_not_sent_again(
    tmp_path: Path,
    shops: list[Shop],
    built: dict[str, Path],  # noqa: F811
) -> None:
    shop = make_shop(tmp_path, fail=10**6, lifetime=0.5)
    shops.append(shop)
    dom = shop.start()
    finish_a_form(dom, built)
    wait_for(lambda: shop.rows() and shop.rows()[0][0] == "failed", "the hand-off to fail")
    attempts = shop.rows()[0][1]
    assert attempts >= 1 and len(shop.receiver.got) == attempts
    dom.client("carol@a.test").list_headers()  # a request later: still no further attempt
    assert shop.rows()[0][:2] == ("failed", attempts) and len(shop.receiver.got) == attempts


def test_a_receiver_refusing_the_form_for_good_gets_one_post_and_the_hand_off_fails(
    tmp_path: Path,
    shops: list[Shop],
    built: dict[str, Path],  # noqa: F811
) -> None:
    refusal = (400, {"content-type": "text/plain"}, b"no such cost centre\n" + b"x" * 5000)
    shop = make_shop(tmp_path, 0, receiver=Receiver(fail=10**6, answer=refusal))
    shops.append(shop)
    dom = shop.start()
    finish_a_form(dom, built)
    wait_for(lambda: shop.rows() and shop.rows()[0][0] == "failed", "the hand-off to fail")
    [(state, attempts, _, error)] = shop.rows_with_error()
    assert (state, attempts) == ("failed", 1) and len(shop.receiver.got) == 1
    assert error is not None and error.startswith("HTTP 400: 'no such cost centre xxx")
    assert len(error) < 300  # an excerpt, not the whole body
    dom.client("carol@a.test").list_headers()  # a request later: the server answers, no retry
    assert shop.rows()[0][:2] == ("failed", 1) and len(shop.receiver.got) == 1


def test_a_429_retry_after_is_waited_out_then_the_form_is_delivered(
    tmp_path: Path,
    shops: list[Shop],
    built: dict[str, Path],  # noqa: F811
) -> None:
    slow_down = (429, {"Retry-After": "1"}, b"slow down")
    shop = make_shop(tmp_path, 0, receiver=Receiver(fail=1, answer=slow_down))
    shop.options = {"webhook_max_delay": 5.0}  # the backoff alone would retry after 0.05 s
    shops.append(shop)
    dom = shop.start()
    finish_a_form(dom, built)
    wait_for(lambda: shop.rows() and shop.rows()[0][0] == "delivered", "the hand-off")
    times = shop.receiver.times
    assert len(times) == 2 and shop.rows()[0][:2] == ("delivered", 2)
    assert times[1] - times[0] >= 0.9  # loosely: not before Retry-After said


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    now = 1_800_000_000.0
    later = format_datetime(datetime.fromtimestamp(now + 30, UTC), usegmt=True)
    assert retry_after("7", now) == 7.0
    assert retry_after(later, now) == 30.0
    assert (
        retry_after(format_datetime(datetime.fromtimestamp(now - 30, UTC), usegmt=True), now) == 0
    )
    assert retry_after(None, now) is None and retry_after("soon", now) is None
    assert retry_after("-5", now) is None
    # issue 24 (fuzzing): digits to str.isdigit() that int() refuses, and out-of-range dates
    for odd in ("²", "①", "٣", "9" * 40):
        assert retry_after(odd, now) is None
    assert retry_after("Mon, 01 Jan 0001 00:00:00 +0100", now) == 0  # long past: retry now


def test_a_retry_after_that_is_not_ascii_digits_does_not_stall_the_hand_off(
    tmp_path: Path,
    shops: list[Shop],
    built: dict[str, Path],  # noqa: F811
) -> None:
    odd = (429, {"Retry-After": "²"}, b"slow down")
    shop = make_shop(tmp_path, 0, receiver=Receiver(fail=1, answer=odd))
    shops.append(shop)
    dom = shop.start()
    finish_a_form(dom, built)
    wait_for(lambda: shop.rows() and shop.rows()[0][0] == "delivered", "the hand-off")
    assert shop.rows()[0][:2] == ("delivered", 2) and len(shop.receiver.got) == 2


def https_receiver(tmp_path: Path, ca: Path) -> Receiver:
    """An https program whose certificate (for localhost) the federation root issued."""
    identity = tmp_path / "hooks-identity"
    issue_server(ca, "localhost", identity)
    return Receiver(fail=0, tls=(identity / "server.pem", identity / "server.key"))


def test_an_https_receiver_under_the_federation_root_is_trusted_with_webhook_ca_federation(
    tmp_path: Path,
    shops: list[Shop],
    built: dict[str, Path],  # noqa: F811
) -> None:
    shop = make_shop(tmp_path, 0)
    shop.receiver.stop()
    shop.receiver = https_receiver(tmp_path, shop.ca)
    shop.options = {"webhook_ca": "federation"}
    shops.append(shop)
    dom = shop.start()
    finish_a_form(dom, built)
    wait_for(lambda: shop.rows() and shop.rows()[0][0] == "delivered", "the https hand-off")
    assert len(shop.receiver.got) == 1 and shop.rows()[0][:2] == ("delivered", 1)


def test_an_https_receiver_under_the_federation_root_is_refused_with_the_system_cas(
    tmp_path: Path,
    shops: list[Shop],
    built: dict[str, Path],  # noqa: F811
) -> None:
    shop = make_shop(tmp_path, 0)
    shop.receiver.stop()
    shop.receiver = https_receiver(tmp_path, shop.ca)
    shops.append(shop)
    dom = shop.start()
    finish_a_form(dom, built)
    wait_for(lambda: shop.rows() and shop.rows()[0][1] >= 2, "two refused handshakes")
    [(state, _, _, error)] = shop.rows_with_error()
    assert state == "pending" and error is not None and "CERTIFICATE_VERIFY_FAILED" in error
    assert shop.receiver.got == []  # nothing was ever POSTed
    assert dom.client("carol@a.test").list_headers().headers


def test_a_webhook_ca_that_is_missing_or_not_pem_stops_the_plug_in_from_loading(
    tmp_path: Path, shops: list[Shop]
) -> None:
    shop = make_shop(tmp_path, 0)
    shops.append(shop)
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    for bad, message in [
        (str(tmp_path / "missing.pem"), "no such file"),
        (str(not_pem), "not a PEM bundle"),
    ]:
        shop.options = {"webhook_ca": bad}
        with pytest.raises(PluginError, match=f"bad options for plug-in 'forms'.*{message}"):
            shop.start()
        assert shop.running is None
    # a bundle that does hold a CA (not the receiver's) loads, the server answers, and the
    # refused loads left nothing behind
    shop.options = {"webhook_ca": str(make_tls_files(tmp_path)[0])}
    dom = shop.start()
    assert dom.client("carol@a.test").list_headers().headers == []
    assert shop.rows() == []


def test_a_form_whose_chain_does_not_verify_is_checked_by_the_worker_and_never_posted(
    tmp_path: Path,
    shops: list[Shop],
    built: dict[str, Path],  # noqa: F811
) -> None:
    """The chain is verified by the webhook worker, outside the delivery's transaction: a
    finished form changed after its approval is recorded, then failed unposted."""
    shop = make_shop(tmp_path, fail=0)
    shops.append(shop)
    dom = shop.start()
    finish_a_form(dom, built)
    wait_for(lambda: shop.rows() and shop.rows()[0][0] == "delivered", "the genuine hand-off")
    xml = str(shop.receiver.got[0][1]["xml"])
    tampered = xml.replace("<wf:Sender>carol@a.test", "<wf:Sender> carol@a.test")
    assert tampered != xml
    carol = dom.client("carol@a.test")
    carol.send(["carol@a.test"], "tampered", tampered)
    wait_for(lambda: len(shop.rows()) == 2 and shop.rows()[1][0] == "failed", "the refusal")
    [_, (state, attempts, _, error)] = shop.rows_with_error()
    assert (state, attempts) == ("failed", 1) and error is not None
    assert "not handed on" in error and "does not cover" in error
    assert len(shop.receiver.got) == 1  # only the genuine one was posted
    assert carol.list_headers().headers  # the server still answers


@pytest.mark.both_stores
def test_hand_offs_taken_but_not_tried_when_stopping_are_due_again(
    tmp_path: Path, store_url: str
) -> None:
    """A pass that takes due hand-offs (on PostgreSQL: leased to this node for the whole
    pass) and finds the server stopping gives them back: the next start, or another node,
    tries them at once instead of after the lease (minutes)."""
    from wsemail.server.config import ServerConfig
    from wsemail.server.forms import webhook
    from wsemail.server.store import SqliteStore
    from wsemail.server.stores import open_store

    store = open_store(ServerConfig(data_dir=tmp_path, store_url=store_url))
    try:
        hook = webhook.Webhook(store)
        store.ensure_schema(webhook.COMPONENT, webhook.MIGRATIONS)
        store.transact_sync(lambda tx: webhook.record(tx, "http://127.0.0.1:9/", {"n": 1}, 3600))
        hook._stop.set()  # the server stops while the pass holds what it took
        wait = hook.run_once(None)  # type: ignore[arg-type]  # nothing is posted
        assert wait == 0.0  # due now, not after the lease
        due = store.transact_sync(lambda tx: webhook._due(tx, 0.0))
        assert [d.payload for d in due] == [b'{"n": 1}']
    finally:
        store.close()
    assert isinstance(store, SqliteStore) == (store_url == "")
