"""In charge of rate limits: one bounded limiter for every key the server counts (failed
authentications per (user, peer) and per peer on the SOAP endpoint and SMTP submission,
messages per peer on the SMTP gateway).

Each key has a token bucket: `limit` events, refilled continuously at `limit` per `window`
seconds, so a key that stays under the limit is never refused and one over it recovers
gradually instead of all at once. Every call is O(1): keys sit in least-recently-used
order, and each call first forgets keys idle for a whole window (their bucket would be full
again, so forgetting them changes no answer). At most `max_keys` keys are held; past that
the least recently used is dropped, so a spray of addresses or names costs bounded memory.
The clock is injected (tests drive it; the server passes its own).

Peers are counted by `peer_key`: an IPv4 address, or the /64 network of an IPv6 address
(one host usually holds a whole /64, so counting single IPv6 addresses would not limit it).
"""

from __future__ import annotations

import functools
import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

MAX_KEYS = 100_000


@functools.lru_cache(maxsize=4096)  # every request asks, and a peer sends many
def peer_key(host: str) -> str:
    """What a peer address is counted as: IPv4 as is (also when IPv4-mapped), IPv6 by /64."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:100]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class RateLimiter:
    """Token buckets per key (see the module doc). Thread-safe: the SMTP listeners call it
    from their own threads."""

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        if limit < 1 or window <= 0 or max_keys < 1:
            raise ValueError("a rate limit needs limit >= 1, window > 0 and max_keys >= 1")
        self.limit = limit
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        self._rate = limit / window
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, key: str, now: float) -> float:
        """The key's tokens now (forgetting idle keys first); `limit` for an unknown key."""
        buckets = self._buckets
        while buckets:  # oldest first: stop at the first key touched within the window
            oldest, (_, when) = next(iter(buckets.items()))
            if now - when < self.window:
                break
            del buckets[oldest]
        held = buckets.get(key)
        if held is None:
            return float(self.limit)
        tokens, when = held
        return min(float(self.limit), tokens + max(0.0, now - when) * self._rate)

    def _store(self, key: str, tokens: float, now: float) -> None:
        buckets = self._buckets
        buckets[key] = (tokens, now)
        buckets.move_to_end(key)
        while len(buckets) > self.max_keys:
            buckets.popitem(last=False)

    def over(self, key: str) -> bool:
        """Whether `key` has used up its allowance (asking takes nothing)."""
        with self._lock:
            return self._tokens(key, self.clock()) < 1.0

    def hit(self, key: str) -> None:
        """Count one event against `key` (a failed login, say), allowed or not."""
        with self._lock:
            now = self.clock()
            self._store(key, max(0.0, self._tokens(key, now) - 1.0), now)

    def allow(self, key: str) -> bool:
        """Take one event for `key` if its allowance has one; False (nothing taken) if not."""
        with self._lock:
            now = self.clock()
            tokens = self._tokens(key, now)
            if tokens < 1.0:
                return False
            self._store(key, tokens - 1.0, now)
            return True
