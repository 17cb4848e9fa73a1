"""In charge of the key line at the bottom of every screen: compact, without the command
palette's key (ctrl+p still opens it), so the essential keys and Help fit in 80 columns."""

from __future__ import annotations

from textual.widgets import Footer


class KeyFooter(Footer):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, show_command_palette=False, compact=True)
