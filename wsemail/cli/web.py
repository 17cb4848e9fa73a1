"""`wsemail web`: the terminal client in a browser. Each browser connection gets its own
`wsemail tui` process, signed in through the TUI's own form (nothing in the URL, no saved
password). Loopback by default; another address needs TLS (or `--insecure`)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from wsemail.client import session
from wsemail.protocol.errors import UsageError


def _refuse(message: str) -> None:
    typer.echo(f"wsemail: {message}", err=True)
    raise typer.Exit(2)


def web(
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on"),
    port: int = typer.Option(8026, "--port", help="port to listen on (0: any free one)"),
    server: str | None = typer.Option(
        None, "--server", help="the mail server the sign-in form starts with (or WSEMAIL_SERVER)"
    ),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="PEM certificate chain"),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="PEM private key"),
    insecure: bool = typer.Option(
        False, "--insecure", help="allow plain HTTP on an address other than loopback"
    ),
) -> None:
    """Serve the terminal client to web browsers (Ctrl-C stops it)."""
    from wsemail.tui.web import BrowserServer, bind, is_loopback, tls_context, tui_command

    if (tls_cert is None) != (tls_key is None):
        _refuse("--tls-cert and --tls-key go together")
    if not 0 <= port <= 65535:
        _refuse(f"--port {port} is not a port number")
    if tls_cert is None and not is_loopback(host) and not insecure:
        _refuse(
            f"refusing to serve the client on {host} without TLS "
            "(give --tls-cert and --tls-key, or --insecure)"
        )
    tls = None
    if tls_cert is not None and tls_key is not None:
        try:
            tls = tls_context(tls_cert, tls_key)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot load the TLS certificate or key: {exc}") from exc
    try:
        sock = bind(host, port)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    target = server or os.environ.get("WSEMAIL_SERVER") or session.DEFAULT_SERVER
    BrowserServer(tui_command(target), sock, tls=tls).serve()


def register(app: typer.Typer) -> None:
    app.command()(web)
