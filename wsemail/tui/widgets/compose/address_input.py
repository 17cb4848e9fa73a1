"""In charge of typing address lists with completion from past correspondents."""

from __future__ import annotations

from textual.suggester import Suggester
from textual.widgets import Input

from wsemail.tui.mailbox import AddressBook


class AddressSuggester(Suggester):
    """Completes the last address of a comma-separated list from an AddressBook."""

    def __init__(self, book: AddressBook) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.book = book

    async def get_suggestion(self, value: str) -> str | None:
        head, sep, last = value.rpartition(",")
        stripped = last.lstrip()
        found = self.book.complete(stripped)
        if found is None:
            return None
        return value + found[len(stripped) :]


class AddressInput(Input):
    """An Input for "a@x, b@y"; → (right arrow) accepts the suggested completion."""

    def __init__(self, book: AddressBook, value: str = "", *, id: str, placeholder: str) -> None:
        super().__init__(
            value=value,
            placeholder=placeholder,
            id=id,
            suggester=AddressSuggester(book),
            compact=True,
        )
