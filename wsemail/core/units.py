"""Small shared measures: byte sizes as people read them, and percentiles of timings
(the CLI, the TUI and the benchmarks use these and no copies of their own)."""

from __future__ import annotations


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
    import statistics  # (here: the terminal client's start formats sizes, never percentiles)

    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
MAX_SIZE = 1 << 60


def parse_size(text: str) -> int:
    """A byte size as people write it: "5000", "500K", "20 MB", "1.5G", "2 GiB" (binary
    units, as `byte_size` prints them). ValueError with a one-line reason otherwise."""
    cleaned = text.strip().upper().replace(" ", "")
    for suffix in ("IB", "B"):
        if cleaned.endswith(suffix) and cleaned[: -len(suffix)][-1:] in "KMGT":
            cleaned = cleaned[: -len(suffix)]
            break
    unit = cleaned[-1:] if cleaned[-1:] in "BKMGT" else ""
    number = cleaned[: len(cleaned) - len(unit)]
    if not number or not all(c.isdigit() or c == "." for c in number) or number.count(".") > 1:
        raise ValueError(f"not a size: {text!r} (say 5000, 500K, 20MB or 2G)")
    try:
        value = float(number) * _UNITS[unit]
    except ValueError as exc:
        raise ValueError(f"not a size: {text!r} (say 5000, 500K, 20MB or 2G)") from exc
    if value > MAX_SIZE:
        raise ValueError(f"size too large: {text!r}")
    return int(value)


def duration(seconds: int) -> str:
    """Whole seconds as people read a wait or an age: "42s", "5m03s", "2h07m", "3d04h"."""
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
