"""`GET /metrics` (Prometheus text format, parsed with prometheus_client's own parser) and
`GET /healthz` (issue 21): requests by operation and outcome, latency histograms, queue
depth, relay attempts and failures per domain, push sessions, store commit time; loopback
or the server.toml token only (403 otherwise, checked from a real non-loopback address and
through a reverse proxy's X-Forwarded-For); health failing while the relay is stuck on a
peer that never answers. Real servers on loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree
from prometheus_client.parser import text_string_to_metric_families

from wsemail.client import admin
from wsemail.protocol.errors import AuthenticationFailed, RequestInvalid
from wsemail.protocol.soap import q
from wsemail.server.config import DEFAULT_PLUGINS, load_config
from wsemail.server.pipeline import PluginSpec

from conftest import Cli, Running, start_server, wait_for

TOKEN = "s3cret-metrics-token-for-tests"


def base(running: Running, host: str | None = None) -> str:
    root = running.url.rsplit("/wsemail", 1)[0]
    if host is not None:
        root = root.replace(running.config.host, host)
    return root


def scrape(running: Running, **headers: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample of /metrics by name and labels."""
    response = httpx.get(base(running) + "/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


def test_metrics_count_requests_latency_queue_relay_sessions_and_commits(tmp_path: Path) -> None:
    server = start_server(
        tmp_path / "a",
        routes={"nowhere.test": ["https://127.0.0.1:9/wsemail"]},
        retry_base=3600.0,
        relay_poll=0.1,
    )
    try:
        alice = server.client()
        alice.send(["bob@localhost", "x@nowhere.test"], "Counted", "hello")
        with pytest.raises(AuthenticationFailed):
            server.client("alice@localhost", "wrong password!").list_headers()
        wait_for(lambda: server.count("SELECT min(attempts) FROM queue") == 1, "an attempt")

        samples = scrape(server)
        requests = samples["wsemail_requests_total"]
        assert requests[(("operation", "Send"), ("outcome", "ok"))] == 1
        assert requests[(("operation", "ListHeaders"), ("outcome", "FailedAuthentication"))] == 1
        assert samples["wsemail_request_seconds_count"][(("operation", "Send"),)] == 1
        buckets = samples["wsemail_request_seconds_bucket"]
        assert buckets[(("le", "+Inf"), ("operation", "Send"))] == 1
        assert samples["wsemail_queue_depth"] == {(("domain", "nowhere.test"),): 1}
        assert samples["wsemail_queue_oldest_seconds"][(("domain", "nowhere.test"),)] >= 0
        assert samples["wsemail_relay_attempts_total"][(("domain", "nowhere.test"),)] >= 1
        assert samples["wsemail_relay_failures_total"][(("domain", "nowhere.test"),)] >= 1
        assert samples["wsemail_store_commit_seconds_count"][()] >= 2
        assert samples["wsemail_push_sessions"][()] == 0
        assert samples["wsemail_party_lines"][()] == 0
        assert samples["wsemail_deliveries_total"][()] == 1  # bob's copy
        assert samples["wsemail_users"][()] == 4

        health = httpx.get(base(server) + "/healthz", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        again = scrape(server)  # a scrape is no SOAP request: the counts hold still
        assert again["wsemail_requests_total"] == requests
    finally:
        server.stop()


def outside_address() -> str | None:
    """This host's address on its default route, if it has one that is not loopback."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("198.51.100.1", 9))  # no packet is sent for a UDP connect
        address = str(probe.getsockname()[0])
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") else address


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Running]:
    address = outside_address()
    if address is None:
        pytest.skip("this host has no non-loopback address to bind")
    running = start_server(tmp_path / "outside", host="0.0.0.0", metrics_token=TOKEN)  # noqa: S104
    yield running
    running.stop()


def test_metrics_from_a_non_loopback_peer_need_the_token(outside: Running) -> None:
    address = outside_address()
    assert address is not None
    url = base(outside, host=address) + "/metrics"
    refused = httpx.get(url, timeout=10)
    assert refused.status_code == 403 and "token" in refused.text
    assert "wsemail_requests" not in refused.text
    wrong = httpx.get(url, headers={"authorization": "Bearer not-the-token-at-all"}, timeout=10)
    assert wrong.status_code == 403
    basic = httpx.get(url, headers={"authorization": f"Basic {TOKEN}"}, timeout=10)
    assert basic.status_code == 403
    allowed = httpx.get(url, headers={"authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert allowed.status_code == 200
    names = {f.name for f in text_string_to_metric_families(allowed.text)}
    assert {"wsemail_requests", "wsemail_queue_depth", "wsemail_store_commit_seconds"} <= names
    loopback = httpx.get(base(outside, host="127.0.0.1") + "/metrics", timeout=10)
    assert loopback.status_code == 200  # loopback needs no token
    assert httpx.get(base(outside, host=address) + "/healthz", timeout=10).status_code == 200


def test_metrics_behind_a_reverse_proxy_count_the_forwarded_peer(server: Running) -> None:
    """A proxy on loopback names the real client in X-Forwarded-For (uvicorn trusts it from
    127.0.0.1): that client is not loopback, so it needs the token; without one set, none
    gets in."""
    forwarded = {"x-forwarded-for": "203.0.113.7"}
    url = base(server) + "/metrics"
    assert httpx.get(url, headers=forwarded, timeout=10).status_code == 403
    with_any = {**forwarded, "authorization": "Bearer anything-at-all-here"}
    assert httpx.get(url, headers=with_any, timeout=10).status_code == 403  # no token set
    assert httpx.get(url, timeout=10).status_code == 200
    assert server.client().list_headers().headers == []  # the server still answers


def test_the_metrics_token_is_read_from_server_toml(tmp_path: Path, cli: Cli) -> None:
    config = tmp_path / "server.toml"
    config.write_text(f'[metrics]\ntoken = "{TOKEN}"\n', encoding="utf-8")
    assert load_config(config).metrics_token == TOKEN
    assert TOKEN not in repr(load_config(config))
    config.write_text('[metrics]\ntoken = "short"\n', encoding="utf-8")
    refused = cli("serve", "--config", str(config), "--port", "0", check=False)
    assert refused.returncode == 1 and "at least 16 characters" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_healthz_fails_while_the_relay_is_stuck_on_a_peer_that_never_answers(
    tmp_path: Path,
) -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers
    port = silent.getsockname()[1]
    plugins = [s for s in DEFAULT_PLUGINS if s.ref != "operate"]
    plugins.append(PluginSpec("operate", 30, {"stuck_after": 1.0}))
    server = start_server(
        tmp_path / "a",
        routes={"silent.test": [f"https://127.0.0.1:{port}/wsemail"]},
        relay_poll=0.1,
        relay_lease=1.0,
        plugins=plugins,
    )
    try:
        url = base(server) + "/healthz"
        assert httpx.get(url, timeout=10).status_code == 200
        server.client().send(["x@silent.test"], "Stuck", "the relay waits on a silent peer")

        def failing() -> bool:
            return httpx.get(url, timeout=10).status_code == 503

        wait_for(failing, "healthz to report the stuck queue")
        answer = httpx.get(url, timeout=10).json()
        assert answer["status"] == "failing" and answer["queue"].startswith("stuck")
        assert answer["store"] == "ok"
        silent.close()  # the peer goes away: the attempt fails, the row waits for its retry
        wait_for(lambda: server.count("SELECT attempts FROM queue") == 1, "the failed attempt")
        wait_for(lambda: not failing(), "healthz to recover")
    finally:
        silent.close()
        server.stop()


def test_without_the_operate_plugin_there_are_no_routes_and_status_still_answers(
    server: Running,
) -> None:
    admin_client = server.client("admin@localhost")
    unload = etree.Element(q("Admin"), {"action": "unload", "name": "operate"})
    admin_client.extension("admin", unload)
    assert httpx.get(base(server) + "/metrics", timeout=10).status_code == 404
    assert httpx.get(base(server) + "/healthz", timeout=10).status_code == 404
    status = admin.status(admin_client)
    assert status["rates"] == {} and "sessions" not in status
    assert "operate" not in {p["name"] for p in status["plugins"]["delivery"]}
    load = etree.Element(q("Admin"), {"action": "load", "ref": "operate", "priority": "30"})
    admin_client.extension("admin", load)
    with pytest.raises(RequestInvalid, match="already loaded"):  # no second instance hooks in
        admin_client.extension("admin", load)
    assert len(server.controller.server.observers) == 1  # the loaded one's, once
    server.client().send(["bob@localhost"], "Counted again", "hi")
    samples = scrape(server)
    assert samples["wsemail_requests_total"][(("operation", "Send"), ("outcome", "ok"))] == 1
    assert httpx.get(base(server) + "/healthz", timeout=10).status_code == 200


def test_metrics_text_is_what_prometheus_client_prints(monkeypatch: pytest.MonkeyPatch) -> None:
    """The numbers are counted without prometheus_client (it loads at the first scrape), and
    a scrape prints what its own Counter, Gauge and Histogram print for the same calls,
    `_created` times included (the clock is fixed)."""
    import itertools
    import time

    import prometheus_client as client

    from wsemail.server.operate import tally
    from wsemail.server.operate.metrics import LATENCY_BUCKETS, Metrics

    def exercise(m: Any) -> None:
        m.requests.labels("Send", "ok").inc()
        m.requests.labels("Send", "ok").inc()
        m.requests.labels("ListHeaders", "FailedAuthentication").inc()
        m.latency.labels("Send").observe(0.0031)
        m.latency.labels("Send").observe(12.5)
        m.latency.labels("GetSalt").observe(0.001)
        m.relay_attempts.labels("b.test").inc()
        m.relay_failures.labels("b.test").inc()
        m.commit_seconds.observe(0.002)
        m.deliveries.inc()
        m.refusals.inc(3)
        m.queue_depth.labels("b.test").set(4)
        m.queue_depth.clear()
        m.queue_depth.labels("c.test").set(1)
        m.queue_oldest.labels("c.test").set(2.5)
        m.users.set(4)
        m.party_lines.set(1)

    template = vars(Metrics())  # names, help texts, labels

    class Theirs:
        """The same metrics as prometheus_client's objects, in a registry of their own."""

        def __init__(self) -> None:
            self.registry = r = client.CollectorRegistry(auto_describe=True)
            for name, metric in template.items():
                kind = {tally.Counter: client.Counter, tally.Gauge: client.Gauge}
                labels = list(metric.labelnames)
                if isinstance(metric, tally.Histogram):
                    made: Any = client.Histogram(
                        metric.name, metric.documentation, labels, registry=r,
                        buckets=LATENCY_BUCKETS,
                    )  # fmt: skip
                else:
                    made = kind[type(metric)](metric.name, metric.documentation, labels, registry=r)
                setattr(self, name, made)

    texts = []
    for make in (Metrics, Theirs):
        monkeypatch.setattr(time, "time", itertools.count(1000.0).__next__)
        made = make()
        exercise(made)
        rendered = (
            made.render() if isinstance(made, Metrics) else client.generate_latest(made.registry)
        )
        texts.append(rendered.decode())
        monkeypatch.undo()
    assert texts[0] == texts[1]
    assert 'wsemail_request_seconds_bucket{le="0.005",operation="Send"} 1.0' in texts[0]
    assert "wsemail_requests_created" in texts[0]
