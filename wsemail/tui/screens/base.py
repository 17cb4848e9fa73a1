"""In charge of what every network-using screen shares: reporting a worker's failure, and
`Invited`, how screens holding an IM push stream tell the app that a party-line invitation
arrived (the app shows it with the key to join)."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from textual.message import Message
from textual.screen import Screen

from wsemail.tui.feedback import describe

if TYPE_CHECKING:
    from wsemail.client.partyline import Invitation

ResultType = TypeVar("ResultType")


class Failed(Message):
    """A worker's call failed; `text` is what the user is told."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class Invited(Message):
    """An invitation to a party line arrived by instant message."""

    def __init__(self, invitation: Invitation) -> None:
        super().__init__()
        self.invitation = invitation


class WorkScreen(Screen[ResultType]):
    """A screen whose thread workers report failures with `self.fail(...)`."""

    def fail(self, what: str, exc: BaseException) -> None:
        """Thread-safe: post the failure back to the screen's message queue."""
        self.post_message(Failed(f"{what}: {describe(exc)}"))

    def on_failed(self, event: Failed) -> None:
        self.notify(event.text, title="wsemail", severity="error", timeout=8)
