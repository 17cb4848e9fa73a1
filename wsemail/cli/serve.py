"""`wsemail serve`: run one domain's server; with no arguments, the embedded default
(domain localhost, SQLite under the platform data dir, created on first run)."""

from __future__ import annotations

import secrets
from pathlib import Path

import typer

from wsemail.server.config import ServerConfig, check_store_url, load_config
from wsemail.server.pipeline import PluginSpec

SUBMISSION = "smtp-submission"


def serve(
    config: Path | None = typer.Option(None, "--config", help="server config (TOML)"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="where the server keeps data"),
    domain: str | None = typer.Option(None, "--domain", help="mail domain served"),
    host: str | None = typer.Option(None, "--host", help="address to listen on"),
    port: int | None = typer.Option(None, "--port", help="port to listen on"),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="PEM certificate chain"),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="PEM private key"),
    smtp_port: int | None = typer.Option(
        None, "--smtp-port", help="also accept Internet mail for local users by SMTP here"
    ),
    submission_port: int | None = typer.Option(
        None,
        "--submission-port",
        help="also let mail programs send here (SMTP AUTH after STARTTLS; needs --tls-cert)",
    ),
    imap_port: int | None = typer.Option(
        None,
        "--imap-port",
        help="also serve IMAP here for mail programs (implicit TLS with --tls-cert, "
        "else plain on a loopback --host only)",
    ),
    imap_tls: str = typer.Option(
        "auto", "--imap-tls", help="IMAP TLS: auto, implicit (IMAPS), starttls or none"
    ),
    store: str | None = typer.Option(
        None,
        "--store",
        help="postgresql://USER@HOST/DB: keep everything in that database, shared by "
        "every node of the domain (default: SQLite in the data dir)",
    ),
    workers: int = typer.Option(
        1, "--workers", min=1, max=64, help="processes serving (needs the PostgreSQL --store)"
    ),
    demo: bool = typer.Option(False, "--demo", help="create two users and send a message"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="same as --log-level info"),
    log_format: str = typer.Option(
        "text", "--log-format", help="text, or json: one JSON object per line"
    ),
    log_level: str | None = typer.Option(
        None,
        "--log-level",
        help="debug, info (one line per request), warning (default) or error",
    ),
) -> None:
    """Run a wsemail server (Ctrl-C stops it)."""
    from wsemail.server.controller import serve_forever, serve_workers
    from wsemail.server.operate import logs

    level = (log_level or ("info" if verbose else "warning")).lower()
    try:
        logs.configure(log_format.lower(), level)
    except ValueError as exc:
        typer.echo(f"wsemail: {exc}", err=True)
        raise typer.Exit(2) from exc
    cfg = load_config(
        config, data_dir, domain=domain, host=host, port=port, tls_cert=tls_cert, tls_key=tls_key
    )
    if store is not None:
        cfg.store_url = check_store_url(store)

    if smtp_port is not None:
        refs = {spec.ref for spec in cfg.plugins}
        if "smtp-inbound" not in refs:
            cfg.plugins.append(
                PluginSpec("smtp-inbound", 50, {"port": smtp_port, "host": cfg.host})
            )
        if "smtp-outbound" not in refs:
            cfg.plugins.append(PluginSpec("smtp-outbound", 60))
    if submission_port is not None:
        refs = {spec.ref for spec in cfg.plugins}
        if not refs & {SUBMISSION, "wsemail.server.smtp.plugins:SmtpSubmission"}:
            cfg.plugins.append(
                PluginSpec(SUBMISSION, 55, {"port": submission_port, "host": cfg.host})
            )
        if "smtp-outbound" not in refs:  # submitted mail may go to the Internet
            cfg.plugins.append(PluginSpec("smtp-outbound", 60))

    if imap_port is not None:
        if imap_tls not in ("auto", "implicit", "starttls", "none"):
            raise typer.BadParameter("--imap-tls is auto, implicit, starttls or none")
        refs = {spec.ref for spec in cfg.plugins}
        if not refs & {"imap", "wsemail.server.imap:Imap"}:
            options = {"port": imap_port, "host": cfg.host, "tls": imap_tls}
            cfg.plugins.append(PluginSpec("imap", 30, options))

    def ready(url: str) -> None:
        where = "the PostgreSQL store" if cfg.store_url else f"data in {cfg.data_dir}"
        many = f", {workers} workers" if workers > 1 else ""
        typer.echo(f"wsemail: serving {cfg.domain} at {url} ({where}{many})")
        if demo:
            run_demo(url, cfg)

    if workers > 1:
        serve_workers(cfg, workers, on_ready=ready)
    else:
        serve_forever(cfg, on_ready=ready)


def run_demo(url: str, cfg: ServerConfig) -> None:
    """Two fresh demo accounts, one message between them, read back through the client."""
    from wsemail.cli.demo import command
    from wsemail.client.mail import Client
    from wsemail.server.accounts import set_user
    from wsemail.server.stores import open_store

    domain = cfg.domain
    store = open_store(cfg)
    suffix = secrets.token_hex(2)
    people = {name: secrets.token_urlsafe(9) for name in (f"alice{suffix}", f"bob{suffix}")}
    try:
        for name, password in people.items():
            set_user(store, domain, f"{name}@{domain}", password)
    finally:
        store.close()
    (alice, alice_pw), (bob, bob_pw) = people.items()
    with Client(url, f"{alice}@{domain}", alice_pw) as client:
        sent = client.send(
            [f"{bob}@{domain}"], "Hello from wsemail", "Signed, sealed, delivered over SOAP."
        )
    with Client(url, f"{bob}@{domain}", bob_pw) as client:
        header = client.list_headers().headers[0]
        message = client.retrieve(header.id)
    typer.echo(
        f"demo: {alice}@{domain} sent {sent.message_id}; {bob}@{domain} read "
        f"{message.subject!r} from {message.sender}"
    )
    me = command()
    typer.echo(
        "demo: try it yourself in another terminal:\n"
        f"  export WSEMAIL_SERVER={url} WSEMAIL_USER={bob}@{domain} "
        f"WSEMAIL_PASSWORD={bob_pw}\n  {me} list && {me} retrieve {header.id}"
    )


def register(app: typer.Typer) -> None:
    app.command()(serve)
