"""The one rate limiter (`wsemail.server.ratelimit`) used by the SOAP endpoint's failure
counts and the SMTP listeners: token buckets with an injected clock, idle keys forgotten,
a hard cap on keys (issue 22: the old SMTP limiter kept every peer and scanned them all)."""

from __future__ import annotations

import pytest

from wsemail.server.ratelimit import RateLimiter, peer_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_allow_takes_up_to_the_limit_then_refills_gradually() -> None:
    clock = Clock()
    limiter = RateLimiter(3, 60.0, clock=clock)
    assert [limiter.allow("p") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("q")  # another key has its own bucket
    clock.now += 19.9
    assert not limiter.allow("p")
    clock.now += 0.1  # 3 a minute: one back every 20 s
    assert limiter.allow("p") and not limiter.allow("p")


def test_over_asks_without_taking_and_hit_counts_even_when_over() -> None:
    clock = Clock()
    limiter = RateLimiter(2, 10.0, clock=clock)
    assert not limiter.over("u")
    limiter.hit("u")
    assert not limiter.over("u")
    limiter.hit("u")
    limiter.hit("u")
    assert limiter.over("u")
    clock.now += 5
    assert not limiter.over("u")


def test_idle_keys_are_forgotten_and_answers_do_not_change() -> None:
    clock = Clock()
    limiter = RateLimiter(2, 60.0, clock=clock)
    for n in range(22_000):  # an hour of distinct peers, one event each
        limiter.allow(f"10.0.{n // 256}.{n % 256}")
        clock.now += 3600 / 22_000
    assert len(limiter) <= 400  # only the last window's (about 367), not 22,000
    clock.now += 60
    limiter.allow("192.0.2.1")
    assert len(limiter) == 1
    assert limiter.allow("10.0.0.0")  # forgotten = a full bucket


def test_the_number_of_keys_is_capped() -> None:
    clock = Clock()
    limiter = RateLimiter(5, 60.0, clock=clock, max_keys=100)
    for n in range(1000):
        limiter.hit(f"name{n}")
    assert len(limiter) == 100
    assert limiter.over("name999") is False and len(limiter) == 100


def test_a_bad_configuration_is_refused() -> None:
    for args in ((0, 60.0), (1, 0.0)):
        with pytest.raises(ValueError):
            RateLimiter(*args)


def test_peers_are_counted_by_ipv4_address_or_ipv6_slash_64() -> None:
    assert peer_key("192.0.2.7") == "192.0.2.7"
    assert peer_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert (
        peer_key("2001:db8:1:2:aaaa::1")
        == peer_key("2001:db8:1:2:bbbb::9")
        == ("2001:db8:1:2::/64")
    )
    assert peer_key("2001:db8:1:3::1") != peer_key("2001:db8:1:2::1")
    assert peer_key("not an address") == "not an address"
