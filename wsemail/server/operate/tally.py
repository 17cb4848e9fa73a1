"""In charge of the numbers `/metrics` reports, kept as plain numbers between scrapes.

Counters, gauges and histograms with the calls and the samples of prometheus_client's own
(`labels(...)`, `inc`, `set`, `clear`, `observe`; a counter's `_total` and `_created`, a
histogram's cumulative `_bucket`s, `_count`, `_sum` and `_created`), so the text a scrape
gets is what prometheus_client's metrics printed. prometheus_client itself (with the HTTP
and WSGI servers its package imports, about 1.5 MB of a server's memory) is imported by the
first scrape (`families`), not when the server starts. Each metric takes a lock per change:
the event loop and the store's writer thread both count.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

INF = float("inf")


class Tally:
    kind = ""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()
        self._children: dict[tuple[str, ...], Any] = {}
        if not self.labelnames:
            self._children[()] = self._new()

    def _new(self) -> Any:
        raise NotImplementedError

    def labels(self, *values: str) -> Any:
        """The series of these label values (made on first use, as prometheus_client does)."""
        if len(values) != len(self.labelnames) or not self.labelnames:
            raise ValueError(f"{self.name} takes the labels {self.labelnames}")
        key = tuple(str(v) for v in values)
        with self._lock:
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self._new()
            return child

    def clear(self) -> None:
        with self._lock:
            self._children = {} if self.labelnames else {(): self._new()}

    def _only(self) -> Any:
        if self.labelnames:
            raise ValueError(f"{self.name} needs its labels {self.labelnames}")
        return self._children[()]

    def samples(self, created: bool) -> Iterable[tuple[str, dict[str, str], float]]:
        with self._lock:
            children = list(self._children.items())
        for key, child in children:
            series = list(zip(self.labelnames, key, strict=True))
            for suffix, labels, value in child.samples(created):
                yield self.name + suffix, dict(series + list(labels.items())), value


class _Count:
    def __init__(self, lock: threading.Lock) -> None:
        self.lock = lock
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        with self.lock:
            self.value += float(amount)

    def samples(self, created: bool) -> list[tuple[str, dict[str, str], float]]:
        found: list[tuple[str, dict[str, str], float]] = [("_total", {}, self.value)]
        if created:
            found.append(("_created", {}, self.created))
        return found


class Counter(Tally):
    kind = "counter"

    def _new(self) -> _Count:
        return _Count(self._lock)

    def inc(self, amount: float = 1) -> None:
        self._only().inc(amount)


class _Level:
    def __init__(self, lock: threading.Lock) -> None:
        self.lock = lock
        self.value = 0.0

    def set(self, value: float) -> None:
        with self.lock:
            self.value = float(value)

    def samples(self, created: bool) -> list[tuple[str, dict[str, str], float]]:
        return [("", {}, self.value)]


class Gauge(Tally):
    kind = "gauge"

    def _new(self) -> _Level:
        return _Level(self._lock)

    def set(self, value: float) -> None:
        self._only().set(value)


class _Spread:
    def __init__(self, lock: threading.Lock, bounds: tuple[float, ...]) -> None:
        self.lock = lock
        self.bounds = bounds
        self.counts = [0.0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        with self.lock:
            self.sum += amount
            for index, bound in enumerate(self.bounds):
                if amount <= bound:
                    self.counts[index] += 1
                    break

    def samples(self, created: bool) -> list[tuple[str, dict[str, str], float]]:
        from prometheus_client.utils import floatToGoString

        found: list[tuple[str, dict[str, str], float]] = []
        total = 0.0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            total += count
            le = floatToGoString(bound)  # type: ignore[no-untyped-call]
            found.append(("_bucket", {"le": le}, total))
        found.append(("_count", {}, total))
        if self.bounds[0] >= 0:
            found.append(("_sum", {}, self.sum))
        if created:
            found.append(("_created", {}, self.created))
        return found


class Histogram(Tally):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
    ) -> None:
        bounds = [float(b) for b in buckets]
        if bounds != sorted(bounds) or not bounds:
            raise ValueError("buckets go in ascending order")
        if bounds[-1] != INF:
            bounds.append(INF)
        self.bounds = tuple(bounds)
        super().__init__(name, documentation, labelnames)

    def _new(self) -> _Spread:
        return _Spread(self._lock, self.bounds)

    def observe(self, amount: float) -> None:
        self._only().observe(amount)


def families(metrics: Iterable[Tally]) -> list[Metric]:
    """The metrics as prometheus_client's metric families, in the order given."""
    from prometheus_client import metrics as client_metrics
    from prometheus_client.metrics_core import Metric

    created = bool(client_metrics._use_created)  # PROMETHEUS_DISABLE_CREATED_SERIES
    found = []
    for metric in metrics:
        family = Metric(metric.name, metric.documentation, metric.kind)
        for name, labels, value in metric.samples(created):
            family.add_sample(name, labels, value)
        found.append(family)
    return found
