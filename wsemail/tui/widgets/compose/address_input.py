"""In charge of typing address lists with completion: the user's contacts, their domain's
directory and the addresses they sent mail to (`wsemail.client.completion.Completer`,
asked in a thread), then past correspondents seen in this session."""

from __future__ import annotations

import asyncio

from textual.suggester import Suggester
from textual.widgets import Input

from wsemail.client.completion import Completer
from wsemail.protocol.errors import WsemailError
from wsemail.tui.mailbox import AddressBook


class AddressSuggester(Suggester):
    """Completes the last address of a comma-separated list: the first address from the
    completer (contacts → directory → sent to) that starts with what was typed, else one
    from the AddressBook."""

    def __init__(self, book: AddressBook, completer: Completer | None = None) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.book = book
        self.completer = completer

    async def _completed(self, typed: str) -> str | None:
        if self.completer is None:
            return None
        try:
            found = await asyncio.to_thread(self.completer.complete, typed, limit=20)
        except WsemailError:  # unreachable server: complete from what is known
            return None
        needle = typed.casefold()
        for item in found:
            if item.address.casefold().startswith(needle) and len(item.address) > len(typed):
                return item.address
        return None

    async def get_suggestion(self, value: str) -> str | None:
        head, sep, last = value.rpartition(",")
        stripped = last.lstrip()
        if not stripped:
            return None
        found = await self._completed(stripped) or self.book.complete(stripped)
        if found is None:
            return None
        return value + found[len(stripped) :]


class AddressInput(Input):
    """An Input for "a@x, b@y"; → (right arrow) accepts the suggested completion."""

    def __init__(
        self,
        book: AddressBook,
        value: str = "",
        *,
        id: str,
        placeholder: str,
        completer: Completer | None = None,
    ) -> None:
        super().__init__(
            value=value,
            placeholder=placeholder,
            id=id,
            suggester=AddressSuggester(book, completer),
            compact=True,
        )
