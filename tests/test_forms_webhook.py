"""The finished form's hand-off to the `webhook` program is durable: recorded with the
delivery that finished the workflow, retried with backoff while a real HTTP receiver on
loopback fails, the same Idempotency-Key on every attempt, taken up again after a server
restart, and marked failed (nothing more sent) once its lifetime is over."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_federation import start_domain
from test_forms import ITEMS_500, Domain, built, requisition  # noqa: F401  (built: a fixture)

from wsemail.forms import workflow
from wsemail.pki import create_root, write_crl
from wsemail.server.config import DEFAULT_PLUGINS
from wsemail.server.forms.webhook import HEADER
from wsemail.server.pipeline import PluginSpec

from conftest import Running, wait_for


class Receiver:
    """A real HTTP program on loopback: answers 503 to the first `fail` POSTs, then 204;
    records (Idempotency-Key, body) of every POST it got."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.got: list[tuple[str, dict[str, object]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                outer.got.append((self.headers.get(HEADER, ""), json.loads(body)))
                self.send_response(503 if len(outer.got) <= outer.fail else 204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/done"

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
    running: Running | None = None

    def start(self) -> Domain:
        options = {
            "webhook": self.receiver.url,
            "webhook_retry": 0.05,
            "webhook_max_delay": 0.2,
            "webhook_lifetime": self.lifetime,
        }
        plugins = [
            *(spec for spec in DEFAULT_PLUGINS if spec.ref != "forms"),
            PluginSpec("forms", 40, options),
        ]
        self.running = start_domain(self.tmp, self.ca, "a.test", plugins=plugins)
        return Domain(self.ca, self.running, self.tmp)

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop()
            self.running = None

    def rows(self) -> list[tuple[str, int, str]]:
        assert self.running is not None
        return self.running.controller.server.store.transact_sync(
            lambda tx: [
                (r[0], r[1], r[2])
                for r in tx.conn.execute("SELECT state, attempts, key FROM forms_webhook")
            ]
        )


def make_shop(tmp_path: Path, fail: int, lifetime: float = 3600.0) -> Shop:
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    return Shop(ca, tmp_path, Receiver(fail), lifetime)


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
    _, chain, to = workflow.act(dom.client("bob@a.test"), first, "approve")
    assert chain.complete and to == ["carol@a.test"]


def test_a_failing_receiver_gets_the_form_again_with_the_same_key_until_it_takes_it(
    tmp_path: Path,
    shops: list[Shop],
    built: dict[str, Path],  # noqa: F811
) -> None:
    shop = make_shop(tmp_path, fail=3)
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


def test_a_pending_hand_off_survives_a_restart(
    tmp_path: Path,
    shops: list[Shop],
    built: dict[str, Path],  # noqa: F811
) -> None:
    shop = make_shop(tmp_path, fail=10**6)  # the program is down for now
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
