"""`wsemail admin status / queue / users / quota`: operate a running server through the
authenticated admin extension (an admin account; signed answers when trust roots are set)."""

from __future__ import annotations

import json
from typing import NoReturn

import typer

from wsemail.client import admin
from wsemail.client.session import open_client
from wsemail.core.units import byte_size, duration

app = typer.Typer(help="Operate a running server (admin account).", no_args_is_help=True)
ServerOpt = typer.Option(None, "--server", help="server URL (or WSEMAIL_SERVER)")
UserOpt = typer.Option(None, "--user", help="admin address (or WSEMAIL_USER)")


def mistake(message: str) -> NoReturn:
    """A command-line mistake: one line on stderr, exit 2 (as click's own)."""
    typer.echo(f"wsemail: {message}", err=True)
    raise typer.Exit(2)


@app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="one JSON object"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Version, uptime, store, queue, recent deliveries and refusals, accounts, live
    sessions, plug-ins per role, certificate and CRL expiry, free disk."""
    with open_client(server, user) as client:
        info = admin.status(client)
    if as_json:
        typer.echo(json.dumps(info, sort_keys=True))
        return
    for line in admin.status_lines(info):
        typer.echo(line)


@app.command()
def queue(
    domain: str | None = typer.Option(None, "--domain", help="only mail for this domain"),
    retry: int | None = typer.Option(None, "--retry", help="try queued message ID now"),
    bounce: int | None = typer.Option(
        None, "--bounce", help="give queued message ID back to its sender now"
    ),
    as_json: bool = typer.Option(False, "--json", help="NDJSON, one queued message per line"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Queued outbound messages (id, destination, tries, age, next attempt, last error);
    --retry ID tries one now, --bounce ID returns it to its sender with a notice."""
    if retry is not None and bounce is not None:
        mistake("give --retry or --bounce, not both")
    with open_client(server, user) as client:
        if retry is not None:
            admin.retry(client, retry)
            typer.echo(f"queued message {retry} will be tried now")
            return
        if bounce is not None:
            admin.bounce(client, bounce)
            typer.echo(f"queued message {bounce} returned to its sender")
            return
        rows = admin.queue_rows(client, domain.lower() if domain else None)
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row, sort_keys=True))
        return
    if not rows:
        typer.echo("the outbound queue is empty" + (f" for {domain}" if domain else ""))
        return
    typer.echo(f"{'id':>6}  {'domain':20} {'tries':>5} {'age':>7} {'next in':>7}  from → to")
    for row in rows:
        typer.echo(
            f"{row['id']:>6}  {row['domain']:20} {row['attempts']:>5} "
            f"{duration(int(row['age'])):>7} {duration(int(row['next-attempt-in'])):>7}  "
            f"{row['sender']} → {row['recipients']}"
            + (f"\n{'':8}last error: {row['last-error'][:100]}" if row["last-error"] else "")
        )


@app.command()
def users(
    usage: bool = typer.Option(False, "--usage", help="storage used and quota per account"),
    as_json: bool = typer.Option(False, "--json", help="NDJSON, one account per line"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """The accounts; with --usage, what each keeps against its quota."""
    with open_client(server, user) as client:
        rows = admin.users_usage(client)
    for row in rows:
        if as_json:
            typer.echo(json.dumps(row.__dict__ | {"percent": round(row.percent, 1)}))
        elif usage:
            own = " (own quota)" if row.override else ""
            over = "  OVER QUOTA" if row.used > row.limit else ""
            typer.echo(
                f"{row.address:32} {row.messages:>6} msgs  {byte_size(row.used):>9} of "
                f"{byte_size(row.limit)}{own}  {row.percent:.0f}%{over}"
            )
        else:
            typer.echo(row.address)


@app.command()
def quota(
    address: str,
    size: str = typer.Argument(..., help="500M, 2G, bytes, or 'default'"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Set an account's own storage quota (below its usage: only new mail is refused)."""
    check_size(size)
    with open_client(server, user) as client:
        row = admin.set_quota(client, address, size)
    typer.echo(quota_line(row))


def check_size(size: str) -> None:
    from wsemail.core.units import parse_size

    if size.strip().lower() == "default":
        return
    try:
        parse_size(size)
    except ValueError as exc:
        mistake(f"SIZE: {exc}")


def quota_line(row: admin.StorageUsage) -> str:
    which = "own quota" if row.override else "server default"
    over = " — over quota: new mail is refused" if row.used > row.limit else ""
    return f"{row.address}: {byte_size(row.limit)} ({which}), {byte_size(row.used)} used{over}"
