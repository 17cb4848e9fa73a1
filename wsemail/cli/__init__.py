"""The `wsemail` command. Errors become one line on stderr and an exit code:
0 ok, 1 usage or local error, 2 authentication refused, 3 server or network unreachable,
4 rejected by the server."""

from __future__ import annotations

import logging
import sys

import click
import typer

from wsemail.cli import (
    attachments,
    bench,
    ca,
    demo,
    domain,
    forms,
    im,
    keys,
    mail,
    plugins,
    serve,
    tui,
    users,
)
from wsemail.errors import WsemailError

app = typer.Typer(
    name="wsemail",
    help="Secure internet mail as web services: server, client and tools.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
serve.register(app)
mail.register(app)
app.add_typer(users.app, name="user")
app.add_typer(plugins.app, name="plugins")
app.add_typer(ca.app, name="ca")
app.command("tui")(tui.tui)
bench.register(app)
domain.register(app)
demo.register(app)
attachments.register(app)
forms.register(app)
im.register(app)
keys.register(app)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = app(standalone_mode=False)
    except click.exceptions.Abort:
        print("wsemail: aborted", file=sys.stderr)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(1)
    except WsemailError as exc:
        print(f"wsemail: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)
