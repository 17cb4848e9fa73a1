"""`wsemail directory search TEXT [--domain D] / publish [--name N] / unpublish / show`:
the address directory (users who chose to be listed), one's own domain or another."""

from __future__ import annotations

import json

import typer

from wsemail.cli.people import ServerOpt, UserOpt, checked_locally
from wsemail.client import session

app = typer.Typer(
    help="The address directory: find people who chose to be listed; list yourself.",
    no_args_is_help=True,
)


@app.command()
def search(
    text: str = typer.Argument(..., help="the start of a name or an address"),
    domain: str | None = typer.Option(None, "--domain", help="another domain's directory"),
    limit: int = typer.Option(20, "--limit", min=1, max=50, help="entries per page"),
    as_json: bool = typer.Option(False, "--json", help="NDJSON, one entry per line"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Search a directory by the start of a name (any word) or of an address."""
    from wsemail.client.directory import AddressDirectory

    with session.open_client(server, user) as client:
        book = AddressDirectory(client)
        cursor: str | None = None
        truncated = False
        while True:
            page = book.search(text, domain=domain, limit=limit, cursor=cursor)
            for entry in page.entries:
                if as_json:
                    typer.echo(json.dumps({**entry.as_dict(), "domain": page.domain}))
                else:
                    typer.echo(f"{entry.name} <{entry.address}>" if entry.name else entry.address)
            truncated = page.truncated
            if not page.next_cursor:
                break
            cursor = page.next_cursor
    if truncated:
        typer.echo("wsemail: more entries match; give more of the name", err=True)


def _show(listing_dict: dict[str, object], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(listing_dict))
    elif listing_dict["listed"]:
        name = listing_dict["name"]
        shown = f"{name} <{listing_dict['address']}>" if name else listing_dict["address"]
        typer.echo(f"listed as {shown}")
    else:
        typer.echo(f"{listing_dict['address']} is not listed")


@app.command()
def publish(
    name: str = typer.Option("", "--name", help="the name others see beside your address"),
    as_json: bool = typer.Option(False, "--json"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """List yourself in your domain's directory (or change your name there)."""
    from wsemail.client.directory import AddressDirectory
    from wsemail.core.people import display_name

    name = checked_locally(display_name, name)
    with session.open_client(server, user) as client:
        _show(AddressDirectory(client).publish(name).as_dict(), as_json)


@app.command()
def unpublish(
    as_json: bool = typer.Option(False, "--json"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Leave the directory (nobody finds you by searching)."""
    from wsemail.client.directory import AddressDirectory

    with session.open_client(server, user) as client:
        _show(AddressDirectory(client).unpublish().as_dict(), as_json)


@app.command()
def show(
    as_json: bool = typer.Option(False, "--json"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Whether you are listed, and under which name."""
    from wsemail.client.directory import AddressDirectory

    with session.open_client(server, user) as client:
        _show(AddressDirectory(client).show().as_dict(), as_json)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="directory")
