"""The `wsemail` command line: its commands, one module per group (MODULES), and how a
mistake or a refusal ends. Errors become one line on stderr and an exit code:
0 ok, 1 local error (bad URL, unreadable file, no keyring…), 2 a command-line mistake or a
refused security check (authentication, an answer's signature), 3 server or network
unreachable, 4 rejected by the server, 5 the server's storage is full (try later)."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Iterable
from typing import Any

import click
import typer
from typer.core import TyperCommand, TyperGroup
from typer.exceptions import TyperException
from typer.models import ParamMeta

from wsemail import __version__ as wsemail_version
from wsemail.client import session
from wsemail.protocol.errors import WsemailError


def _version(value: bool) -> None:
    if value:
        print(f"wsemail {wsemail_version}")
        raise typer.Exit()


def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    """Secure internet mail as web services: server, client and tools."""


def root_app() -> typer.Typer:
    """The `wsemail` typer app, without its commands (see `register`)."""
    app = typer.Typer(
        name="wsemail",
        help="Secure internet mail as web services: server, client and tools.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    app.callback()(_root)
    return app


# Each command group module, in the order `wsemail --help` lists them, with the commands it
# adds: how it adds them (its `register(app)`, its typer `app` added under a name, or one
# function) and their names. `main` imports only the module of the command it runs (the
# whole CLI imports the server's DKIM and DNS code, the PKI, signatures… which `wsemail
# send` or `wsemail serve` never use); help, a mistyped command or none imports them all.
MODULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("serve", "register", ("serve",)),
    ("login", "register", ("login", "logout", "accounts")),
    ("mail", "register", ("send", "list", "retrieve", "delete")),
    ("conversations", "register", ("thread", "reply", "forward")),
    ("mailbox", "register", ("folders", "move", "flag", "search", "folder")),
    ("drafts", "register", ("draft",)),
    ("archive", "register", ("export", "import")),
    ("users", "app", ("user",)),
    ("aliases", "app", ("alias",)),
    ("filters", "register", ("filters", "vacation")),
    ("plugins", "app", ("plugins",)),
    ("admin", "app", ("admin",)),
    ("ca", "app", ("ca",)),
    ("tui", "tui", ("tui",)),
    ("bench", "register", ("bench",)),
    ("domain", "register", ("domain",)),
    ("demo", "register", ("demo",)),
    ("attachments", "register", ("attachments", "fetch")),
    ("forms", "register", ("forms",)),
    ("im", "register", ("im",)),
    ("keys", "register", ("keys",)),
    ("contacts", "register", ("contacts",)),
    ("directory", "register", ("directory",)),
    ("watch", "register", ("watch",)),
    ("web", "register", ("web",)),
)
COMMANDS = {name: module for module, _, names in MODULES for name in names}


def register(app: typer.Typer, modules: Iterable[str]) -> None:
    """Add the commands of `modules` (names in MODULES) to `app`, in MODULES' order."""
    wanted = set(modules)
    for module, how, names in MODULES:
        if module not in wanted:
            continue
        found = importlib.import_module(f"wsemail.cli.{module}")
        if how == "register":
            found.register(app)
        elif how == "app":
            app.add_typer(found.app, name=names[0])
        else:
            app.command(names[0])(getattr(found, how))


def modules_for(args: list[str]) -> list[str]:
    """The command group modules `wsemail ARGS` needs: the one of its command, or all of
    them for --help, --version, no command or a name that is not one (click's answer
    lists or suggests the commands)."""
    if args and args[0] in COMMANDS:
        return [COMMANDS[args[0]]]
    return [module for module, _, _ in MODULES]


def command(args: list[str]) -> Any:
    """The click command that runs `wsemail ARGS` (typer's: newer typer bundles its own
    click)."""
    app = root_app()
    register(app, modules_for(args))
    found = typer.main.get_command(app)
    if isinstance(found, TyperGroup):
        with_account_option(found)
    return found


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
        result = command(sys.argv[1:]).main(standalone_mode=False)
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
