"""`wsemail serve`: run one domain's server; with no arguments, the embedded default
(domain localhost, SQLite under the platform data dir, created on first run). The options
are parsed here; `wsemail.cli.serving` serves."""

from __future__ import annotations

from pathlib import Path

import typer

from wsemail.cli import serving


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
    if imap_port is not None and imap_tls not in ("auto", "implicit", "starttls", "none"):
        raise typer.BadParameter("--imap-tls is auto, implicit, starttls or none")
    serving.launch(
        {
            "config": config,
            "data_dir": data_dir,
            "domain": domain,
            "host": host,
            "port": port,
            "tls_cert": tls_cert,
            "tls_key": tls_key,
            "smtp_port": smtp_port,
            "submission_port": submission_port,
            "imap_port": imap_port,
            "imap_tls": imap_tls,
            "store": store,
            "workers": workers,
            "demo": demo,
            "verbose": verbose,
            "log_format": log_format,
            "log_level": log_level,
        }
    )


def register(app: typer.Typer) -> None:
    app.command()(serve)
