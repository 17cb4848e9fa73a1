"""`wsemail bench`: benchmarks on loopback that print figures (never timed tests).

`wsemail bench` alone measures the accept path; `wsemail bench testbed` reproduces the
retrospective paper's two-server test bed.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(
    help="Benchmarks on loopback: the accept path (no subcommand) or the paper's test bed.",
    invoke_without_command=True,
    no_args_is_help=False,
)


@app.callback()
def bench(
    ctx: typer.Context,
    clients: int = typer.Option(16, min=1, max=1024, help="concurrent clients"),
    seconds: float = typer.Option(5.0, min=0.1, max=3600, help="how long to send"),
    data_dir: str = typer.Option("", help="server data dir (default: a temporary one)"),
    signed_answers: bool = typer.Option(
        False, "--signed-answers", help="ask for signed answers, as clients with trust roots do"
    ),
    store: str = typer.Option(
        "",
        "--store",
        help="postgresql://… (an empty database), or pg: a throwaway PostgreSQL started here "
        "(default: SQLite in the data dir)",
    ),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="server processes (--store)"),
    mailbox: int = typer.Option(
        5000, "--mailbox", min=0, max=1_000_000, help="messages in the inboxes before the run"
    ),
    recipients: int = typer.Option(
        1, "--recipients", min=1, max=1024, help="mailboxes the clients send to (client n: n mod N)"
    ),
) -> None:
    """Measure accepted sends/s, latency and server CPU per send on loopback."""
    if ctx.invoked_subcommand is not None:
        return
    from wsemail.bench.accept import run_bench

    if workers > 1 and not store:
        raise typer.BadParameter("--workers needs --store (the PostgreSQL store)")
    run_bench(
        clients=clients,
        seconds=seconds,
        data_dir=data_dir or None,
        signed_answers=signed_answers,
        store_url=store,
        workers=workers,
        mailbox=mailbox,
        recipients=recipients,
    )


@app.command()
def testbed(
    clients: int = typer.Option(4, "--clients", "-n", help="simulated clients"),
    requests: int = typer.Option(2000, "--requests", "-r", help="requests per client"),
    mix: str = typer.Option(
        "25,25,25,25", help="weights of send,list,retrieve,delete (or send=40,list=20,…)"
    ),
    size: int = typer.Option(1024, help="message body size in bytes"),
    duration: float | None = typer.Option(
        None, help="run this many seconds instead of a request count"
    ),
    rate: float | None = typer.Option(
        None, help="open loop: total requests/s over all clients (default: closed loop)"
    ),
    feed_rate: float = typer.Option(1.0, help="messages/s the external server sends per client"),
    seed: int | None = typer.Option(None, help="random seed for the operation mix"),
    as_json: bool = typer.Option(False, "--json", help="print the figures as JSON"),
    plot: Path | None = typer.Option(None, help="write the latency distribution to this PNG"),
    profile: Path | None = typer.Option(
        None,
        help="profile the local server: FILE.prof (cProfile) or py-spy raw/.svg/.json",
    ),
    data_dir: Path | None = typer.Option(None, help="keep both servers' data here (empty dir)"),
    signed_answers: bool = typer.Option(
        False, "--signed-answers", help="clients ask for signed answers (certificate by digest)"
    ),
    nodes: int = typer.Option(1, "--nodes", help="servers of the local domain (needs --store)"),
    store: str = typer.Option(
        "", "--store", help="the local domain's PostgreSQL store: postgresql://… or pg (throwaway)"
    ),
) -> None:
    """The paper's test bed: local + external server over TLS, N clients, Tables 1 and 2."""
    from wsemail.bench.testbed import Options, parse_mix, run_testbed

    options = Options(
        clients=clients,
        requests=requests,
        mix=parse_mix(mix),
        size=size,
        duration=duration,
        rate=rate,
        feed_rate=feed_rate,
        profile=profile,
        plot=plot,
        data_dir=data_dir,
        seed=seed,
        signed_answers=signed_answers,
        nodes=nodes,
        store=store,
    )
    result = run_testbed(options, quiet=as_json)
    if as_json:
        typer.echo(json.dumps(result, indent=2))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="bench")
