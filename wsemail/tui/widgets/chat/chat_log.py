"""In charge of showing a conversation: one line per instant message, oldest first."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual.widgets import RichLog


def clock(at: float | None) -> str:
    """Local HH:MM of a timestamp; blank when unknown."""
    if not at:
        return "     "
    return datetime.fromtimestamp(at).astimezone().strftime("%H:%M")


class ChatLog(RichLog):
    """Keeps the plain lines it shows (`lines_shown`) so tests can read them."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, wrap=True, markup=False, auto_scroll=True)
        self.lines_shown: list[str] = []

    def add(self, sender: str, body: str, at: float | None, *, mine: bool = False) -> None:
        who = "me" if mine else sender
        line = Text()
        line.append(f"{clock(at)} ", style="dim")
        line.append(f"{who}: ", style="bold green" if mine else "bold")
        line.append(body)
        self.lines_shown.append(f"{who}: {body}")
        self.write(line)

    def note(self, text: str) -> None:
        self.lines_shown.append(text)
        self.write(Text(text, style="dim italic"))
