"""In charge of the key line at the bottom of every screen: compact, without the command
palette's key (ctrl+p still opens it), so the essential keys and Help fit in 80 columns.

Textual's footer composes its keys anew whenever the screen's bindings are refreshed, which
happens more often than they change (a focus change refreshes them, and a screen that is
shown refreshes them twice or three times in its first moments); each time it removes and
mounts every key widget again. This one does so only when the keys it would show differ."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer

Shown = tuple[tuple[object, ...], ...]


def shown_keys(screen: Screen[object]) -> Shown:
    """What the footer shows of `screen`'s active bindings (the parts its keys are made of)."""
    return tuple(
        (
            binding.key,
            binding.key_display,
            binding.action,
            binding.description,
            binding.group,
            enabled,
            tooltip,
        )
        for _, binding, enabled, tooltip in screen.active_bindings.values()
        if binding.show
    )


class KeyFooter(Footer):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, show_command_palette=False, compact=True)
        self._composed: Shown | None = None  # the keys of the last recompose asked for

    def compose(self) -> ComposeResult:
        # the keys from the first drawing on (Textual's footer is empty until the screen
        # first refreshes its bindings, then composes them and draws again)
        self._bindings_ready = True
        self._composed = shown_keys(self.screen)
        yield from super().compose()

    def bindings_changed(self, screen: Screen[object]) -> None:
        if self.is_attached and screen is self.screen and screen.app.app_focus:
            shown = shown_keys(screen)
            if self._bindings_ready and shown == self._composed:
                return
            self._composed = shown
        super().bindings_changed(screen)
