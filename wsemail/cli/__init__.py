"""The `wsemail` command (`wsemail.cli.commands`). This package's own module imports
nothing heavy: `wsemail serve` runs the server in a process that was never loaded with the
command line's parser (`wsemail.cli.serving`)."""

from __future__ import annotations

import os


def main() -> None:
    from wsemail.cli import serving

    if serving.OPTIONS in os.environ:  # `wsemail serve` executed again by itself
        serving.main()
        return
    from wsemail.cli import commands

    serving.again = True  # this is the `wsemail` process: `serve` may execute it again
    commands.main()
