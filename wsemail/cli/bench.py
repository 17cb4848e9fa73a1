"""`wsemail bench`: benchmarks on loopback that print figures (never timed tests)."""

from __future__ import annotations

import typer


def bench(
    clients: int = typer.Option(16, help="concurrent clients"),
    seconds: float = typer.Option(5.0, help="how long to send"),
    data_dir: str = typer.Option("", help="server data dir (default: a temporary one)"),
) -> None:
    """Measure accepted sends/s, latency and server CPU per send on loopback."""
    from wsemail.bench import run_bench

    run_bench(clients=clients, seconds=seconds, data_dir=data_dir or None)


def register(app: typer.Typer) -> None:
    app.command()(bench)
