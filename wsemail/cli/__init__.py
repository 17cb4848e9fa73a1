"""The `wsemail` command. Errors become one line on stderr and an exit code:
0 ok, 1 local error (bad URL, unreadable file, no keyring…), 2 a command-line mistake or a
refused security check (authentication, an answer's signature), 3 server or network
unreachable, 4 rejected by the server, 5 the server's storage is full (try later)."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click
import typer
from typer.core import TyperCommand, TyperGroup
from typer.exceptions import TyperException
from typer.models import ParamMeta

from wsemail import __version__ as wsemail_version
from wsemail.cli import (
    admin,
    aliases,
    archive,
    attachments,
    bench,
    ca,
    contacts,
    conversations,
    demo,
    directory,
    domain,
    drafts,
    filters,
    forms,
    im,
    keys,
    login,
    mail,
    mailbox,
    plugins,
    serve,
    tui,
    users,
    watch,
    web,
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


def _version(value: bool) -> None:
    if value:
        print(f"wsemail {wsemail_version}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    """Secure internet mail as web services: server, client and tools."""


serve.register(app)
login.register(app)
mail.register(app)
conversations.register(app)
mailbox.register(app)
drafts.register(app)
archive.register(app)
app.add_typer(users.app, name="user")
app.add_typer(aliases.app, name="alias")
filters.register(app)
app.add_typer(plugins.app, name="plugins")
app.add_typer(admin.app, name="admin")
app.add_typer(ca.app, name="ca")
app.command("tui")(tui.tui)
bench.register(app)
domain.register(app)
demo.register(app)
attachments.register(app)
forms.register(app)
im.register(app)
keys.register(app)
contacts.register(app)
directory.register(app)
watch.register(app)
web.register(app)


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
    option choosing the client.toml account: the one place that does it for all of them;
    and give every option a help label like `TEXT` or none for a flag (typer would show the
    Python annotation, `<bool>` or `<list[str]>`)."""
    if isinstance(command, TyperGroup):
        for sub in command.commands.values():
            if isinstance(sub, TyperCommand | TyperGroup):
                with_account_option(sub)
        _label(command)
        return command
    options = {opt for param in command.params for opt in param.opts}
    if "--user" in options and "--account" not in options:
        command.params.append(_account_param())
    _label(command)
    return command


_LABELS = {"str": "TEXT", "int": "INTEGER", "float": "NUMBER", "Path": "PATH"}


def _label(command: TyperCommand | TyperGroup) -> None:
    make_help = command.get_help_option

    def help_option(ctx: Any) -> Any:
        option = make_help(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = help_option  # type: ignore[method-assign]
    for param in command.params:
        kind = getattr(param, "param_type_name", "")
        if kind == "argument" and hasattr(param, "display_type_rich"):
            param.display_type_rich = lambda ctx: None  # the name says it: ADDRESS, ID…
        if kind != "option" or param.metavar is not None:
            continue
        if getattr(param, "is_flag", False):
            param.metavar = ""
            continue
        bare = getattr(param, "bare_type", None)
        name = bare() if callable(bare) else ""
        inner = name.removeprefix("list[").removesuffix("]")
        param.metavar = _LABELS.get(inner, inner.upper() if inner.isidentifier() else None)


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
        # a mistake on the command line exits 2, as in every Unix tool (click's own code)
        sys.exit(getattr(exc, "exit_code", 2) or 2)
    except WsemailError as exc:
        print(f"wsemail: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)
