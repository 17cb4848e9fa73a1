"""In charge of the Textual application: screen routing (sign in → inbox), the global keys,
and the one wsemail Client the screens share. Everything else lives in the screens."""

from __future__ import annotations

from textual.app import App
from textual.binding import Binding

from wsemail.client import Client
from wsemail.tui.mailbox import AddressBook
from wsemail.tui.screens.help import HelpScreen
from wsemail.tui.screens.inbox import InboxScreen
from wsemail.tui.screens.login import LoginScreen
from wsemail.tui.signin import ClientFactory, LoginDefaults, default_client, known_login


class WsemailApp(App[None]):
    """`defaults` prefill (or, when complete, skip) the sign-in form; `client_factory`,
    `page_size`, `poll_seconds` and `im_notify` (hold an IM push stream for notifications)
    are seams for tests."""

    TITLE = "wsemail"
    CSS_PATH = "app.tcss"
    BINDINGS = [
        Binding("question_mark,f1", "help", "Help"),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(
        self,
        defaults: LoginDefaults | None = None,
        *,
        client_factory: ClientFactory = default_client,
        page_size: int = 50,
        poll_seconds: float = 5.0,
        im_notify: bool = True,
    ) -> None:
        super().__init__()
        self.defaults = defaults if defaults is not None else LoginDefaults()
        self.client_factory = client_factory
        self.page_size = page_size
        self.poll_seconds = poll_seconds
        self.im_notify = im_notify
        self.client: Client | None = None
        self.address_book = AddressBook()

    def on_mount(self) -> None:
        self.push_screen(LoginScreen(self.defaults, factory=self.client_factory), self.signed_in)

    def signed_in(self, client: Client | None) -> None:
        if client is None:
            self.exit()
            return
        self.client = client
        self.push_screen(
            InboxScreen(
                client,
                self.address_book,
                page_size=self.page_size,
                poll_seconds=self.poll_seconds,
                im_notify=self.im_notify,
            )
        )

    def on_unmount(self) -> None:
        if self.client is not None:
            self.client.close()

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        own: list[tuple[str, str]] = []  # the screen's and the app's keys first
        widgets: list[tuple[str, str]] = []  # then the focused widget's (navigation)
        for active in self.active_bindings.values():
            binding = active.binding
            if binding.description and active.enabled:
                mine = active.node is self or active.node is self.screen
                entry = (self.get_key_display(binding), binding.description)
                (own if mine else widgets).append(entry)
        keys = own + widgets
        name = type(self.screen).__name__.removesuffix("Screen")
        self.push_screen(HelpScreen(name, keys))


def run(server: str | None = None, user: str | None = None) -> None:
    """Sign in with what is known (flags, environment, client.toml, keyring) and run."""
    WsemailApp(known_login(server, user)).run()


def main() -> None:
    run()
