"""`wsemail contacts add|edit|list|remove|import FILE|export [FILE]|suggest|dismiss|complete`:
personal contacts kept on your server, vCard in and out, the addresses you sent mail to
offered for adding, and address completion as the TUI does it."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import typer

from wsemail.cli.people import ServerOpt, UserOpt, checked_locally
from wsemail.client import session
from wsemail.protocol.errors import UsageError

app = typer.Typer(
    help="Your contacts, kept on your server: add, list, import and export vCards.",
    no_args_is_help=True,
)


def _line(contact_dict: dict[str, object]) -> str:
    emails = ", ".join(str(e) for e in contact_dict["emails"])  # type: ignore[attr-defined]
    name = contact_dict["name"] or "-"
    org = f"  ({contact_dict['org']})" if contact_dict["org"] else ""
    return f"{contact_dict['id']:16}  {name}  <{emails}>{org}"


@app.command()
def add(
    address: list[str] = typer.Argument(..., help="the contact's address(es)"),
    name: str = typer.Option("", "--name", help="the contact's name"),
    org: str = typer.Option("", "--org", help="organisation"),
    note: str = typer.Option("", "--note", help="a note"),
    as_json: bool = typer.Option(False, "--json"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Add a contact."""
    from wsemail.client.contacts import Contact, Contacts

    contact = checked_locally(Contact(name, list(address), org, note).checked)
    with session.open_client(server, user) as client:
        stored = Contacts(client).add(contact)
    typer.echo(json.dumps(stored.as_dict()) if as_json else _line(stored.as_dict()))


@app.command()
def edit(
    ref: str = typer.Argument(..., help="the contact's id, or one of its addresses"),
    name: str | None = typer.Option(None, "--name"),
    email: list[str] = typer.Option([], "--email", help="its addresses (repeatable; replaces)"),
    org: str | None = typer.Option(None, "--org"),
    note: str | None = typer.Option(None, "--note"),
    as_json: bool = typer.Option(False, "--json"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Change a contact's name, addresses, organisation or note."""
    from wsemail.client.contacts import Contact, Contacts

    if name is None and not email and org is None and note is None:
        print("wsemail: say what to change (--name, --email, --org, --note)", file=sys.stderr)
        raise typer.Exit(2)
    checked_locally(
        Contact(name or "", list(email) or ["x@example.org"], org or "", note or "").checked
    )
    with session.open_client(server, user) as client:
        stored = Contacts(client).edit(
            ref, name=name, emails=list(email) or None, org=org, note=note
        )
    typer.echo(json.dumps(stored.as_dict()) if as_json else _line(stored.as_dict()))


@app.command("list")
def list_contacts(
    prefix: str = typer.Argument("", help="only names or addresses starting so"),
    as_json: bool = typer.Option(False, "--json", help="NDJSON, one contact per line"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """List your contacts by name."""
    from wsemail.client.contacts import Contacts

    with session.open_client(server, user) as client:
        for contact in Contacts(client).iter(prefix):
            typer.echo(json.dumps(contact.as_dict()) if as_json else _line(contact.as_dict()))


@app.command()
def remove(
    ref: str = typer.Argument(..., help="the contact's id, or one of its addresses"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Remove a contact."""
    from wsemail.client.contacts import Contacts

    with session.open_client(server, user) as client:
        removed = Contacts(client).remove(ref)
    typer.echo(f"removed {removed}")


@app.command("import")
def import_file(
    file: str = typer.Argument(..., help="a vCard file (.vcf), or - for stdin"),
    as_json: bool = typer.Option(False, "--json"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Import the cards of a vCard file: all or, if one is bad, none. A card holding an
    address you already have updates that contact; cards without an address are skipped."""
    from wsemail.client.contacts import Contacts
    from wsemail.client.vcard import read_vcards

    if file == "-":
        text, source = sys.stdin.read(), "stdin"
    else:
        try:
            text, source = Path(file).read_text(encoding="utf-8-sig"), file
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read {file}: {exc}") from exc
    found = read_vcards(text, source)
    if not found.contacts:
        raise UsageError(f"{source} holds no card with an e-mail address")
    with session.open_client(server, user) as client:
        done = Contacts(client).import_contacts(found.contacts)
    if as_json:
        typer.echo(
            json.dumps({"added": done.added, "updated": done.updated, "skipped": found.skipped})
        )
        return
    typer.echo(f"imported {done.added} new, updated {done.updated}")
    if found.skipped:
        typer.echo(f"skipped {found.skipped} card(s) without an e-mail address", err=True)


@app.command()
def export(
    file: Path | None = typer.Argument(None, help="write here (default: stdout)"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Export your contacts as vCard 3.0."""
    from wsemail.client.contacts import Contacts
    from wsemail.client.vcard import write_vcards

    with session.open_client(server, user) as client:
        text = write_vcards(Contacts(client).export())
    if file is None:
        sys.stdout.write(text)
        return
    try:
        tmp = file.with_name(f".{file.name}.tmp")
        tmp.write_text(text, encoding="utf-8", newline="")
        os.replace(tmp, file)
    except OSError as exc:
        raise UsageError(f"cannot write {file}: {exc}") from exc


@app.command()
def suggest(
    prefix: str = typer.Argument("", help="only addresses starting so"),
    limit: int = typer.Option(50, "--limit", min=1, max=500),
    as_json: bool = typer.Option(False, "--json", help="NDJSON, one address per line"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Addresses you sent mail to that are not contacts yet, most recent first (add one
    with `wsemail contacts add`, stop offering it with `wsemail contacts dismiss`)."""
    from wsemail.client.contacts import Contacts

    with session.open_client(server, user) as client:
        for seen in Contacts(client).seen(prefix, limit=limit):
            if as_json:
                typer.echo(json.dumps(seen.as_dict()))
            else:
                when = datetime.fromtimestamp(seen.last, UTC).strftime("%Y-%m-%d")
                typer.echo(f"{seen.address}  ({seen.times} message(s), last {when})")


@app.command()
def dismiss(
    address: str = typer.Argument(..., help="an address `wsemail contacts suggest` shows"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Stop offering an address you sent mail to."""
    from wsemail.client.contacts import Contacts

    with session.open_client(server, user) as client:
        Contacts(client).dismiss(address)


@app.command()
def complete(
    prefix: str = typer.Argument(..., help="the start of a name or an address"),
    limit: int = typer.Option(10, "--limit", min=1, max=100),
    as_json: bool = typer.Option(False, "--json", help="NDJSON, one completion per line"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Complete an address: contacts first, then your domain's directory, then addresses
    you sent mail to."""
    from wsemail.client.completion import complete as completions

    with session.open_client(server, user) as client:
        for item in completions(client, prefix, limit=limit):
            typer.echo(json.dumps(item.as_dict()) if as_json else f"{item.label}  [{item.source}]")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="contacts")
