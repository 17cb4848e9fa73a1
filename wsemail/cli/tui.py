"""`wsemail tui`: the terminal mail client. Textual is imported only when the command runs,
so the rest of the CLI (and the headless core) never loads it."""

from __future__ import annotations

import typer


def tui(
    server: str | None = typer.Option(None, "--server", help="server URL (or WSEMAIL_SERVER)"),
    user: str | None = typer.Option(None, "--user", help="your address (or WSEMAIL_USER)"),
    web: bool = typer.Option(False, "--web", hidden=True, help="a session of `wsemail web`"),
) -> None:
    """Open the terminal client: inbox, message view, compose (press ? for keys)."""
    if web:
        from wsemail.tui.app import run_web

        run_web(server or "")
        return
    from wsemail.tui.app import run

    run(server, user)
