"""`wsemail user add / list / passwd / remove / quota`: accounts, straight on the server's
data dir."""

from __future__ import annotations

from pathlib import Path

import typer

from wsemail.client.session import read_password
from wsemail.protocol.errors import UsageError
from wsemail.protocol.message import domain_of
from wsemail.server import accounts
from wsemail.server.config import ServerConfig, load_config, recorded_domain
from wsemail.server.store import BatchStore
from wsemail.server.stores import open_store

app = typer.Typer(help="Manage the accounts of a server's domain.", no_args_is_help=True)

DataDirOpt = typer.Option(None, "--data-dir", help="server data dir (default: embedded)")
ConfigOpt = typer.Option(None, "--config", help="server config file")
DomainOpt = typer.Option(
    None, "--domain", help="the server's mail domain (default: the one its data dir records)"
)


def _open(
    data_dir: Path | None, config: Path | None, domain: str | None = None, address: str = ""
) -> tuple[ServerConfig, BatchStore]:
    """The server's config and store; its domain is --domain, else the one the data dir
    records (`wsemail serve` writes it), else server.toml's, else the default."""
    cfg = load_config(config, data_dir)
    recorded = recorded_domain(cfg.data_dir)
    if domain and recorded and domain.lower() != recorded:
        raise UsageError(f"{cfg.data_dir} is the data dir of {recorded}, not {domain}")
    configured = cfg.domain != ServerConfig().domain
    cfg.domain = (domain or recorded or cfg.domain).lower()
    if address and "@" in address and domain_of(address) != cfg.domain:
        if not (domain or recorded or configured):
            raise UsageError(
                f"{address} is not in {cfg.domain}, the default domain: no domain is recorded "
                f"in {cfg.data_dir} yet; give --domain {domain_of(address)} (or run "
                f"`wsemail serve --domain {domain_of(address)}` once)"
            )
    cfg.prepare()
    return cfg, open_store(cfg)


@app.command()
def add(
    address: str,
    admin: bool = typer.Option(False, "--admin", help="may administer plug-ins"),
    password_stdin: bool = typer.Option(False, "--password-stdin"),
    data_dir: Path | None = DataDirOpt,
    config: Path | None = ConfigOpt,
    domain: str | None = DomainOpt,
) -> None:
    """Create an account."""
    cfg, store = _open(data_dir, config, domain, address)
    try:
        password = read_password(password_stdin)
        address = accounts.set_user(store, cfg.domain, address, password, admin=admin)
    finally:
        store.close()
    typer.echo(f"added {address}")


@app.command("list")
def list_(data_dir: Path | None = DataDirOpt, config: Path | None = ConfigOpt) -> None:
    """List the accounts."""
    _, store = _open(data_dir, config)
    try:
        for user in accounts.list_users(store):
            typer.echo(user.address + ("  (admin)" if user.admin else ""))
    finally:
        store.close()


@app.command()
def passwd(
    address: str,
    password_stdin: bool = typer.Option(False, "--password-stdin"),
    data_dir: Path | None = DataDirOpt,
    config: Path | None = ConfigOpt,
    domain: str | None = DomainOpt,
) -> None:
    """Set a new password."""
    cfg, store = _open(data_dir, config, domain, address)
    try:
        password = read_password(password_stdin, "New password")
        accounts.set_user(store, cfg.domain, address, password, create=False)
    finally:
        store.close()
    typer.echo(f"password changed for {address}")


@app.command()
def remove(
    address: str,
    data_dir: Path | None = DataDirOpt,
    config: Path | None = ConfigOpt,
    domain: str | None = DomainOpt,
) -> None:
    """Delete an account and its mailbox."""
    cfg, store = _open(data_dir, config, domain, address)
    try:
        accounts.remove_user(store, cfg.domain, address)
    finally:
        store.close()
    typer.echo(f"removed {address}")


@app.command()
def quota(
    address: str,
    size: str = typer.Argument(..., help="500M, 2G, bytes, or 'default'"),
    data_dir: Path | None = DataDirOpt,
    config: Path | None = ConfigOpt,
    domain: str | None = DomainOpt,
) -> None:
    """Set an account's own storage quota ('default': the server's [quota] per_user_bytes).
    A quota below what the account keeps is accepted: only new mail is refused."""
    from wsemail.cli.admin import check_size, quota_line
    from wsemail.client.admin import StorageUsage

    check_size(size)
    cfg, store = _open(data_dir, config, domain, address)
    try:
        usage = accounts.set_quota(store, cfg, address, size)
    finally:
        store.close()
    typer.echo(quota_line(StorageUsage(**usage)))
