"""The `wsemail` command. Errors become one line on stderr and an exit code:
0 ok, 1 usage or local error, 2 authentication refused, 3 server or network unreachable,
4 rejected by the server."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click
import typer
from typer.core import TyperCommand, TyperGroup
from typer.exceptions import TyperException
from typer.models import ParamMeta

from wsemail.cli import (
    attachments,
    bench,
    ca,
    demo,
    domain,
    forms,
    im,
    keys,
    login,
    mail,
    plugins,
    serve,
    tui,
    users,
)
from wsemail.client import session
from wsemail.protocol.errors import WsemailError

app = typer.Typer(
    name="wsemail",
    help="Secure internet mail as web services: server, client and tools.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
serve.register(app)
login.register(app)
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


def _choose_account(value: str | None) -> None:
    if value:
        session.selected_account = session.check_account_name(value)


ACCOUNT_OPTION = ParamMeta(
    name="account",
    default=typer.Option(
        None,
        "--account",
        metavar="NAME",
        expose_value=False,
        is_eager=True,
        callback=_choose_account,
        help="the client.toml account to use (or WSEMAIL_ACCOUNT; default: the default one)",
    ),
    annotation=str | None,
)


def with_account_option(command: TyperCommand | TyperGroup) -> TyperCommand | TyperGroup:
    """Give every command that takes --user (so talks to a server as someone) an --account
    option choosing the client.toml account: the one place that does it for all of them."""
    if isinstance(command, TyperGroup):
        for sub in command.commands.values():
            if isinstance(sub, TyperCommand | TyperGroup):
                with_account_option(sub)
        return command
    options = {opt for param in command.params for opt in param.opts}
    if "--user" in options and "--account" not in options:
        command.params.append(_account_param())
    return command


def _account_param() -> Any:
    """typer's click parameter for ACCOUNT_OPTION. typer has no public call for this: newer
    releases name it `_get_param`, older ones `get_click_param` (returning a pair)."""
    make = getattr(typer.main, "_get_param", None)
    if make is not None:
        return make(ACCOUNT_OPTION)
    param, _ = typer.main.get_click_param(ACCOUNT_OPTION)  # type: ignore[attr-defined]
    return param


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        command = typer.main.get_command(app)
        if isinstance(command, TyperGroup):
            with_account_option(command)
        result = command.main(standalone_mode=False)
    except (click.exceptions.Abort, typer.Abort):
        print("wsemail: aborted", file=sys.stderr)
        sys.exit(1)
    except (click.ClickException, TyperException) as exc:  # typer may bundle its own click
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            print(f"wsemail: {exc}", file=sys.stderr)
        sys.exit(1)
    except WsemailError as exc:
        print(f"wsemail: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)
