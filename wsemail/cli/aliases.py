"""`wsemail alias add / list / remove`: mapped addresses (aliases, role addresses,
auto-responders), straight on the server's data dir like `wsemail user`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from wsemail.cli.users import ConfigOpt, DataDirOpt, DomainOpt, _open
from wsemail.protocol.errors import UsageError
from wsemail.server.addresses import records, rules
from wsemail.server.addresses.records import Mapped
from wsemail.server.config import ServerConfig
from wsemail.server.store import BatchStore, Tx

app = typer.Typer(
    help="Manage mapped addresses: aliases, role addresses, auto-responders.",
    no_args_is_help=True,
)


def _external(cfg: ServerConfig) -> list[str]:
    """The aliases plug-in's `external` option in server.toml: outside domains allowed."""
    for spec in cfg.plugins:
        if spec.ref in ("aliases", "wsemail.server.addresses:Aliases"):
            value: Any = spec.options.get("external", [])
            return [str(d) for d in value] if isinstance(value, list) else []
    return []


def _store(
    data_dir: Path | None, config: Path | None, domain: str | None, address: str = ""
) -> tuple[ServerConfig, BatchStore]:
    cfg, store = _open(data_dir, config, domain, address)
    store.ensure_schema(records.COMPONENT, records.MIGRATIONS)
    return cfg, store


@app.command()
def add(
    alias: str = typer.Argument(..., help="the address to map, in this server's domain"),
    targets: list[str] = typer.Argument(None, help="where its mail goes (accounts, aliases)"),
    role: bool = typer.Option(False, "--role", help="a role address (forms rules may name it)"),
    reply_subject: str = typer.Option("", "--reply-subject", help="auto-responder: subject"),
    reply_body: str | None = typer.Option(
        None, "--reply-body", help="auto-responder: the answer every sender gets (no targets)"
    ),
    data_dir: Path | None = DataDirOpt,
    config: Path | None = ConfigOpt,
    domain: str | None = DomainOpt,
) -> None:
    """Map ALIAS to TARGET… (or, with --reply-body, make it an auto-responder)."""
    kind = "autoresponse" if reply_body is not None else ("role" if role else "alias")
    if kind == "autoresponse" and role:
        raise UsageError("--role and --reply-body do not go together")
    cfg, store = _store(data_dir, config, domain, alias)
    wanted = Mapped(alias, kind, tuple(targets or ()), reply_subject, reply_body or "")

    def work(tx: Tx) -> Mapped:
        checked = rules.check(tx, cfg.domain, wanted, _external(cfg))
        records.put(tx, checked)
        return checked

    try:
        done = store.transact_sync(work)
    finally:
        store.close()
    what = ", ".join(done.targets) if done.targets else "auto-responder"
    typer.echo(f"{done.address} ({done.kind}) -> {what}")


@app.command("list")
def list_(
    data_dir: Path | None = DataDirOpt,
    config: Path | None = ConfigOpt,
    domain: str | None = DomainOpt,
) -> None:
    """List the mapped addresses."""
    _, store = _store(data_dir, config, domain)
    try:
        found = store.transact_sync(records.listing)
    finally:
        store.close()
    for mapped in found:
        what = ", ".join(mapped.targets) if mapped.targets else f"replies {mapped.subject!r}"
        typer.echo(f"{mapped.address}  {mapped.kind}  {what}")


@app.command()
def remove(
    alias: str,
    data_dir: Path | None = DataDirOpt,
    config: Path | None = ConfigOpt,
    domain: str | None = DomainOpt,
) -> None:
    """Remove a mapped address."""
    cfg, store = _store(data_dir, config, domain, alias)

    def work(tx: Tx) -> str:
        name = rules.address(alias, cfg.domain)
        rules.check_remove(tx, name)
        if not records.remove(tx, name):
            raise UsageError(f"no mapped address {name}")
        return name

    try:
        name = store.transact_sync(work)
    finally:
        store.close()
    typer.echo(f"removed {name}")
