"""In charge of the `wsemail` console script: `wsemail tui` with no more than its own
options (--server, --user, --account, --web) starts the terminal client at once; everything
else goes to the command line (`wsemail.cli.main`). `python -m wsemail.console` is the same
(a browser session of `wsemail web` starts that way).

The command line imports typer, click and the command's own group
(`wsemail.cli.commands.MODULES`), a cold start the terminal client does not need. What this
fast path accepts, the CLI's `tui` command does the same way; anything else (`--help`, an
unknown or repeated option, a missing value) is left to the CLI, which explains it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

TUI_OPTIONS = ("--server", "--user", "--account")  # each with a value
TUI_FLAGS = ("--web",)  # a session of `wsemail web`


def tui_options(args: Sequence[str]) -> dict[str, str] | None:
    """The options of `wsemail tui …` when the fast path can take them, else None."""
    if not args or args[0] != "tui":
        return None
    found: dict[str, str] = {}
    rest = list(args[1:])
    while rest:
        name, has_value, value = rest.pop(0).partition("=")
        if name in found or name not in TUI_OPTIONS + TUI_FLAGS:
            return None
        if name in TUI_FLAGS:
            if has_value:
                return None
            found[name] = ""
            continue
        if not has_value:
            if not rest or rest[0].startswith("-"):
                return None
            value = rest.pop(0)
        found[name] = value
    return found


def main() -> None:
    options = tui_options(sys.argv[1:])
    if options is None:
        from wsemail.cli import main as cli

        cli()
        return
    import logging

    from wsemail.client import session
    from wsemail.protocol.errors import WsemailError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if options.get("--account"):
            session.selected_account = session.check_account_name(options["--account"])
        if "--web" in options:
            from wsemail.tui.app import run_web

            run_web(options.get("--server") or "")
        else:
            from wsemail.tui.app import run

            run(options.get("--server"), options.get("--user"))
    except WsemailError as exc:
        print(f"wsemail: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(0)


if __name__ == "__main__":
    main()
