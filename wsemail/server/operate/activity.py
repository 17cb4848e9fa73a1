"""In charge of the recent activity an operator reads in the admin status: deliveries and
refusals per minute over the last 1, 5 and 15 minutes (per-second buckets, in memory)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

WINDOWS = (1, 5, 15)  # minutes
KEEP = 60 * max(WINDOWS)


class Rate:
    """Events counted per second for the last 15 minutes."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: deque[list[int]] = deque()  # [second, count], oldest first
        self.total = 0

    def add(self, count: int = 1) -> None:
        if count <= 0:
            return
        second = int(self.clock())
        with self._lock:
            self.total += count
            if self._buckets and self._buckets[-1][0] == second:
                self._buckets[-1][1] += count
            else:
                self._buckets.append([second, count])
            self._trim(second)

    def _trim(self, second: int) -> None:
        while self._buckets and self._buckets[0][0] <= second - KEEP:
            self._buckets.popleft()

    def per_minute(self) -> dict[int, float]:
        """Events per minute over each window: {1: …, 5: …, 15: …}."""
        second = int(self.clock())
        with self._lock:
            self._trim(second)
            buckets = list(self._buckets)
        return {
            minutes: sum(c for s, c in buckets if s > second - 60 * minutes) / minutes
            for minutes in WINDOWS
        }
