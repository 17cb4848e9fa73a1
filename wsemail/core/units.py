"""Small shared measures: byte sizes as people read them, and percentiles of timings
(the CLI, the TUI and the benchmarks use these and no copies of their own)."""

from __future__ import annotations

import statistics


def byte_size(size: int, *, compact: bool = False) -> str:
    """Bytes in binary units: "512 B", "1.5 KB", "3.1 MB"; `compact` for narrow columns:
    "512B", "1.5K", "20K", "3.1M"."""
    value = float(size)
    if compact:
        for unit in ("B", "K", "M"):
            if value < 1000:
                return f"{value:.0f}{unit}" if unit == "B" or value >= 10 else f"{value:.1f}{unit}"
            value /= 1024
        return f"{value:.1f}G"
    for unit in ("B", "KB", "MB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def percentile(values: list[float], pct: int) -> float:
    """The `pct`th percentile (1..99) by `statistics.quantiles` (inclusive method, so it
    stays within the observed values); 0.0 for no values, the value itself for one."""
    if not values:
        return 0.0
    if len(values) == 1:
        return float(values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]
