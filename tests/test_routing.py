"""Routing against a real DNS server: dnsmasq on a loopback port, serving SRV records."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from wsemail.core.routing import (
    ChainResolver,
    Resolver,
    SrvResolver,
    StaticResolver,
    Target,
    build_resolver,
)
from wsemail.protocol.errors import NoRoute, RoutingError, UsageError

TTL = 30
AUTH_TTL = 40
RECORDS = [
    # _service._prot.domain, target, port, priority, weight (dnsmasq's order)
    "_wsemail._tcp.a.test,mx1.a.test,8443,10,60",
    "_wsemail._tcp.a.test,mx2.a.test,8444,10,40",
    "_wsemail._tcp.a.test,backup.a.test,9443,20,0",
    "_wsemail._tcp.w.test,heavy.w.test,443,10,90",
    "_wsemail._tcp.w.test,light.w.test,443,10,10",
    "_wsemail._tcp.z.test,zero1.z.test,443,10,0",
    "_wsemail._tcp.z.test,zero2.z.test,443,10,0",
    "_wsemail._tcp.nothere.test",  # no target: the RFC 2782 "." (service not available)
]


def dnsmasq_binary() -> str:
    found = shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin:/sbin")
    if found is None:
        pytest.fail("dnsmasq is not installed: run scripts/install-system-deps")
    return found


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise AssertionError("no free UDP+TCP port on 127.0.0.1")


class Dnsmasq:
    """A dnsmasq on a free loopback port, serving what `options` say."""

    def __init__(self, log: Path, options: list[str], probe: str) -> None:
        self.log = log
        self.options = options
        self.probe = probe  # a name it answers NXDOMAIN for once ready
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        for _ in range(5):  # the free port may be taken before dnsmasq binds it
            self.port = free_port()
            args = [
                dnsmasq_binary(),
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                f"--port={self.port}",
                "--pid-file=",  # none: no root-owned /run file
                "--log-facility=-",
                *self.options,
            ]
            if os.geteuid() == 0:
                args += ["-u", "root"]
            with self.log.open("ab") as log:
                self.process = subprocess.Popen(args, stdout=log, stderr=log)
            if self._wait_ready():
                return
        raise AssertionError(f"dnsmasq did not start: {self.log.read_text()}")

    def _wait_ready(self) -> bool:
        assert self.process is not None
        query = dns.message.make_query(self.probe, "SRV")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                answer = dns.query.udp(query, "127.0.0.1", port=self.port, timeout=0.05)
                if answer.rcode() == dns.rcode.NXDOMAIN:  # its config is loaded
                    return True
            except (dns.exception.Timeout, OSError):
                pass
            time.sleep(0.01)
        self.stop()
        return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[Dnsmasq]:
    """RECORDS under .test (NXDOMAIN for other .test names, REFUSED outside .test)."""
    server = Dnsmasq(
        tmp_path / "dnsmasq.log",
        [
            f"--local-ttl={TTL}",
            "--local=/test/",
            "--txt-record=_wsemail._tcp.nodata.test,not an SRV record",
            *(f"--srv-host={record}" for record in RECORDS),
        ],
        probe="probe.test",
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def authoritative(tmp_path: Path) -> Iterator[Dnsmasq]:
    """An authoritative-only server for auth.test: its negative answers carry an SOA."""
    server = Dnsmasq(
        tmp_path / "dnsmasq-auth.log",
        [
            "--auth-server=ns.auth.test,127.0.0.1",
            "--auth-zone=auth.test",
            f"--auth-ttl={AUTH_TTL}",  # also the SOA minimum (negative-caching TTL)
            "--srv-host=_wsemail._tcp.auth.test,mx.auth.test,8443,10,0",
        ],
        probe="probe.auth.test",
    )
    server.start()
    yield server
    server.stop()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def resolver(
    server: Dnsmasq, *, clock: Clock | None = None, seed: int = 1, timeout: float = 2.0
) -> SrvResolver:
    return SrvResolver(
        ["127.0.0.1"],
        server.port,
        timeout=timeout,
        clock=clock or Clock(),
        rng=random.Random(seed),
    )


def resolve(r: Resolver, domain: str) -> list[Target]:
    return asyncio.run(r.resolve(domain))


def test_srv_targets_come_in_priority_order_for_failover(dnsmasq: Dnsmasq) -> None:
    targets = resolve(resolver(dnsmasq), "a.test")
    assert [t.priority for t in targets] == [10, 10, 20]
    assert {(t.host, t.port, t.weight) for t in targets[:2]} == {
        ("mx1.a.test", 8443, 60),
        ("mx2.a.test", 8444, 40),
    }
    assert targets[2] == Target("backup.a.test", 9443, priority=20, weight=0)
    assert targets[2].url == "https://backup.a.test:9443/wsemail"


def test_domain_is_normalized_before_the_query(dnsmasq: Dnsmasq) -> None:
    targets = resolve(resolver(dnsmasq), "A.Test.")
    assert {t.host for t in targets} == {"mx1.a.test", "mx2.a.test", "backup.a.test"}


def test_weighted_selection_follows_the_weights_within_a_priority(dnsmasq: Dnsmasq) -> None:
    r = resolver(dnsmasq, seed=2782)
    first = Counter(resolve(r, "w.test")[0].host for _ in range(400))
    assert 0.80 <= first["heavy.w.test"] / 400 <= 0.97
    assert first["light.w.test"] > 0


def test_every_target_of_a_priority_appears_once(dnsmasq: Dnsmasq) -> None:
    r = resolver(dnsmasq, seed=7)
    for _ in range(50):
        hosts = [t.host for t in resolve(r, "a.test")]
        assert sorted(hosts[:2]) == ["mx1.a.test", "mx2.a.test"]
        assert hosts[2] == "backup.a.test"


def test_zero_weight_targets_share_the_load_when_all_weights_are_zero(
    dnsmasq: Dnsmasq,
) -> None:
    r = resolver(dnsmasq, seed=11)
    first = Counter(resolve(r, "z.test")[0].host for _ in range(200))
    assert 0.3 <= first["zero1.z.test"] / 200 <= 0.7


def test_cached_answer_is_served_within_its_ttl_then_queried_again(dnsmasq: Dnsmasq) -> None:
    clock = Clock()
    r = resolver(dnsmasq, clock=clock, timeout=0.5)
    assert len(resolve(r, "a.test")) == 3
    dnsmasq.stop()
    clock.now += TTL - 1
    assert len(resolve(r, "a.test")) == 3  # from the cache: the server is gone
    clock.now += 2
    with pytest.raises(RoutingError) as caught:
        resolve(r, "a.test")
    assert not isinstance(caught.value, NoRoute)


def test_no_route_is_cached_for_a_short_time(dnsmasq: Dnsmasq) -> None:
    clock = Clock()
    r = resolver(dnsmasq, clock=clock, timeout=0.5)
    with pytest.raises(NoRoute):
        resolve(r, "nosuch.test")
    dnsmasq.stop()
    clock.now += 59  # no SOA in dnsmasq's answer: remembered for 60 s
    with pytest.raises(NoRoute):
        resolve(r, "nosuch.test")
    clock.now += 2
    with pytest.raises(RoutingError) as caught:
        resolve(r, "nosuch.test")
    assert not isinstance(caught.value, NoRoute)


def test_no_route_is_cached_for_the_soa_minimum_when_given(authoritative: Dnsmasq) -> None:
    clock = Clock()
    r = resolver(authoritative, clock=clock, timeout=0.5)
    assert resolve(r, "auth.test")[0].host == "mx.auth.test"
    with pytest.raises(NoRoute):
        resolve(r, "nosuch.auth.test")
    authoritative.stop()
    clock.now += AUTH_TTL - 1
    with pytest.raises(NoRoute):
        resolve(r, "nosuch.auth.test")
    clock.now += 2  # before the 60 s used when there is no SOA
    with pytest.raises(RoutingError) as caught:
        resolve(r, "nosuch.auth.test")
    assert not isinstance(caught.value, NoRoute)


def test_nxdomain_is_no_route(dnsmasq: Dnsmasq) -> None:
    with pytest.raises(NoRoute, match="nosuch.test has no wsemail service"):
        resolve(resolver(dnsmasq), "nosuch.test")


def test_name_without_srv_record_is_no_route(dnsmasq: Dnsmasq) -> None:
    with pytest.raises(NoRoute, match="no SRV"):
        resolve(resolver(dnsmasq), "nodata.test")


def test_dot_target_is_no_route(dnsmasq: Dnsmasq) -> None:
    with pytest.raises(NoRoute, match="declares no wsemail service"):
        resolve(resolver(dnsmasq), "nothere.test")


def test_refused_query_is_a_temporary_routing_error(dnsmasq: Dnsmasq) -> None:
    # dnsmasq has no upstream for names outside .test and answers REFUSED
    with pytest.raises(RoutingError, match="example.org") as caught:
        resolve(resolver(dnsmasq), "example.org")
    assert not isinstance(caught.value, NoRoute)
    assert caught.value.__cause__ is not None  # translated, with the original kept


def test_silent_nameserver_times_out_as_a_routing_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # bound, never answers
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        r = SrvResolver(["127.0.0.1"], port, timeout=0.3)
        with pytest.raises(RoutingError, match="timed out") as caught:
            resolve(r, "a.test")
    assert not isinstance(caught.value, NoRoute)


def test_closed_nameserver_port_is_a_routing_error() -> None:
    r = SrvResolver(["127.0.0.1"], free_port(), timeout=0.3)
    with pytest.raises(RoutingError) as caught:
        resolve(r, "a.test")
    assert not isinstance(caught.value, NoRoute)


@pytest.mark.parametrize(
    "domain",
    ["", ".", "a..test", "bad domain.test", "a/b.test", "-a.test", "_x.test", "x" * 64 + ".test"],
)
def test_malformed_domain_is_no_route_with_a_clear_message(domain: str) -> None:
    r = SrvResolver(["127.0.0.1"], free_port(), timeout=0.3)  # never asked
    with pytest.raises(NoRoute, match="invalid domain name"):
        resolve(r, domain)
    with pytest.raises(NoRoute, match="invalid domain name"):
        resolve(StaticResolver({}), domain)


def test_static_routes_keep_their_order() -> None:
    static = StaticResolver(
        {"B.test": ["http://127.0.0.1:9001/wsemail", "https://[::1]:9002", "http://b2.test"]}
    )
    targets = resolve(static, "b.test")
    assert [t.url for t in targets] == [
        "http://127.0.0.1:9001/wsemail",
        "https://[::1]:9002/wsemail",
        "http://b2.test:80/wsemail",
    ]
    assert [t.priority for t in targets] == [0, 1, 2]
    with pytest.raises(NoRoute, match="no static route for c.test"):
        resolve(static, "c.test")


@pytest.mark.parametrize(
    "url", ["ftp://h/wsemail", "http:///x", "http://h:99999/", "http://h/x?q=1", "nonsense"]
)
def test_static_route_with_a_bad_url_is_a_usage_error(url: str) -> None:
    with pytest.raises(UsageError, match="invalid route URL"):
        StaticResolver({"b.test": [url]})


def test_static_routes_override_dns(dnsmasq: Dnsmasq) -> None:
    chain = ChainResolver(
        StaticResolver({"a.test": ["http://127.0.0.1:9001/wsemail"]}), resolver(dnsmasq)
    )
    assert [t.url for t in resolve(chain, "a.test")] == ["http://127.0.0.1:9001/wsemail"]
    assert [t.host for t in resolve(chain, "w.test")][0].endswith(".w.test")
    with pytest.raises(NoRoute):
        resolve(chain, "nosuch.test")


def test_build_resolver_chains_static_routes_before_dns(dnsmasq: Dnsmasq) -> None:
    static = {"a.test": ["http://127.0.0.1:9001/wsemail"]}
    chain = build_resolver(static, ["127.0.0.1"], dnsmasq.port)
    assert isinstance(chain, ChainResolver)
    assert resolve(chain, "a.test")[0].port == 9001
    assert resolve(chain, "w.test")[0].port == 443
    plain = build_resolver(None, ["127.0.0.1"], dnsmasq.port)
    assert isinstance(plain, SrvResolver)
    assert len(resolve(plain, "a.test")) == 3


def test_target_url() -> None:
    assert Target("mx.b.test", 8443).url == "https://mx.b.test:8443/wsemail"
    assert Target("::1", 80, scheme="http", path="/x").url == "http://[::1]:80/x"


def test_bad_nameserver_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="cannot set up DNS"):
        SrvResolver(["not an address"])


def test_the_srv_records_domain_dns_prints_for_several_nodes_route_by_their_weights(
    tmp_path: Path,
) -> None:
    """`wsemail domain dns --node …` for a domain on three servers, published through a real
    DNS server: senders find both nodes of priority 10 (by weight), the backup after them."""
    from conftest import wsemail_binary

    printed = subprocess.run(
        [wsemail_binary(), "domain", "dns", "--data-dir", str(tmp_path / "d"),
         "--domain", "n.test", "--node", "mx1.n.test:8443:10:75",
         "--node", "mx2.n.test:8443:10:25", "--node", "backup.n.test:9443:20"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    srv = [line.split() for line in printed.splitlines() if " IN SRV " in line]
    assert len(srv) == 3
    records = [  # zone line: name ttl IN SRV priority weight port target
        f"{f[0].rstrip('.')},{f[7].rstrip('.')},{f[6]},{f[4]},{f[5]}" for f in srv
    ]
    server = Dnsmasq(
        tmp_path / "dnsmasq.log",
        ["--local=/test/", *(f"--srv-host={r}" for r in records)],
        probe="probe.test",
    )
    server.start()
    try:
        r = resolver(server, seed=2782)
        firsts = Counter()
        for _ in range(200):
            targets = resolve(r, "n.test")
            assert [(t.priority, t.port) for t in targets][2] == (20, 9443)
            assert {t.host for t in targets[:2]} == {"mx1.n.test", "mx2.n.test"}
            firsts[targets[0].host] += 1
        assert firsts["mx1.n.test"] > firsts["mx2.n.test"] > 0  # 75:25
    finally:
        server.stop()


@pytest.mark.parametrize("node", ["", ":1", "h:0", "h:x", "h:1:2:3:4", "h:70000"])
def test_domain_dns_refuses_a_bad_node_in_one_line(tmp_path: Path, node: str) -> None:
    from conftest import wsemail_binary

    result = subprocess.run(
        [wsemail_binary(), "domain", "dns", "--data-dir", str(tmp_path / "d"), "--node", node],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "--node" in result.stderr
    assert "Traceback" not in result.stderr
