"""`wsemail login / logout / accounts`: the named accounts in client.toml, each with its
password in the OS keyring under (server, user)."""

from __future__ import annotations

from pathlib import Path

import typer

from wsemail.client import session
from wsemail.protocol.errors import UsageError


def login(
    account: str | None = typer.Option(
        None, "--account", help="name to keep it under (default: your address)"
    ),
    server: str | None = typer.Option(
        None, "--server", help=f"server URL (default: the account's, else {session.DEFAULT_SERVER})"
    ),
    user: str | None = typer.Option(None, "--user", help="your address"),
    trust_root: list[Path] = typer.Option(
        [], "--trust-root", help="federation root certificate to check server answers with"
    ),
    tls_name: str | None = typer.Option(None, "--tls-name", help="the name the TLS cert has"),
    make_default: bool = typer.Option(False, "--default", help="make it the default account"),
    password_stdin: bool = typer.Option(False, "--password-stdin"),
    password_command: str | None = typer.Option(
        None,
        "--password-command",
        help="a shell command that prints the password (kept in client.toml instead of "
        "the password: for machines without an OS keyring)",
    ),
) -> None:
    """Check your password with the server, keep it in the OS keyring (or the account's
    password command) and the account in client.toml (added, or updated when the name is
    known)."""
    from wsemail.client.mail import Client

    config = session.load_accounts()
    name = session.check_account_name(account) if account else None
    known = config.accounts.get(name) if name else None
    server = server or (known.server if known else session.DEFAULT_SERVER)
    user = user or (known.user if known else None) or typer.prompt("User")
    roots = tuple(str(p) for p in trust_root) or (known.trust_roots if known else ())
    tls = tls_name if tls_name is not None else (known.tls_name if known else "")
    command = password_command if password_command is not None else ""
    if not command and password_command is None and known is not None:
        command = known.password_command
    if command:
        password = session.run_password_command(command, "--password-command")
    else:
        password = session.read_password(password_stdin)
    with Client(
        server,
        user,
        password,
        verify=session.tls_verify(),
        trust_roots=[Path(p) for p in roots],
        tls_name=tls or None,
    ) as client:
        client.list_headers(limit=1)
        address = client.username
    if not command:
        session.keyring_set(server, address, password)
    name = name or session.check_account_name(config.name_for(server, address))
    routes = known.directory_routes if known else ()
    same = known or config.find(server, address)
    hook = same.new_mail_command if same else ""  # kept: only client.toml sets it
    config = config.with_account(
        session.Account(name, server, address, roots, tls, command, routes, hook),
        make_default=make_default,
    )
    path = session.save_accounts(config)
    kept = "its password_command" if command else "the OS keyring"
    typer.echo(
        f"logged in as {address} at {server}, account {name!r} (settings in {path}; "
        f"password from {kept})"
    )


def logout(
    account: str | None = typer.Option(
        None, "--account", help="the account to remove (default: WSEMAIL_ACCOUNT, else the default)"
    ),
) -> None:
    """Remove an account from client.toml and its password from the OS keyring."""
    config = session.load_accounts()
    found = config.current(account or session.chosen_account())
    if found is None:
        raise UsageError("no account to log out of (wsemail accounts lists them)")
    forgot = session.keyring_delete(found.server, found.user)
    config = config.without(found.name)
    session.save_accounts(config)
    note = "password removed from the keyring" if forgot else "no password was in the keyring"
    default = f"; the default is now {config.default!r}" if config.default else ""
    typer.echo(f"logged out of {found.name!r} ({found.user}); {note}{default}")


def accounts(
    default: str | None = typer.Option(None, "--default", help="make this account the default"),
) -> None:
    """List the accounts (* marks the default one)."""
    config = session.load_accounts()
    if default:
        config = config.with_account(config.get(default), make_default=True)
        session.save_accounts(config)
    if not config.accounts:
        typer.echo(f"no accounts yet: run 'wsemail login' (settings go to {session.config_path()})")
        return
    width = max(len(name) for name in config.accounts)
    for name in sorted(config.accounts):
        found = config.accounts[name]
        mark = "*" if name == config.default else " "
        typer.echo(f"{mark} {name:{width}}  {found.user}  {found.server}")


def register(app: typer.Typer) -> None:
    app.command()(login)
    app.command()(logout)
    app.command()(accounts)
