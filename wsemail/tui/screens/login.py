"""In charge of signing in: server URL, address and password, checked against the server.

When everything is already known (flags, WSEMAIL_* environment, client.toml + keyring) the
form stays hidden and the screen signs in at once; a refusal shows the form and a
notification."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Button, Header, Input, Label

from wsemail.client import Client
from wsemail.tui.screens.base import Failed, WorkScreen
from wsemail.tui.signin import ClientFactory, LoginDefaults, default_client, open_session
from wsemail.tui.widgets.footer import KeyFooter


class LoginScreen(WorkScreen[Client]):
    """Dismisses with a checked Client."""

    CSS_PATH = "login.tcss"

    class SignedIn(Message):
        def __init__(self, client: Client) -> None:
            super().__init__()
            self.client = client

    def __init__(self, defaults: LoginDefaults, *, factory: ClientFactory = default_client) -> None:
        super().__init__()
        self.defaults = defaults
        self.factory = factory
        self.busy = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="login-form"):
            yield Label("Sign in to your wsemail server", id="login-title")
            yield Label("Server", classes="login-label")
            yield Input(self.defaults.server, id="login-server", placeholder="https://…/wsemail")
            yield Label("Address", classes="login-label")
            yield Input(self.defaults.user, id="login-address", placeholder="you@example.org")
            yield Label("Password", classes="login-label")
            yield Input(self.defaults.password, id="login-password", password=True)
            yield Button("Sign in", id="login-submit", variant="primary")
        yield Label("", id="login-status")
        yield KeyFooter()

    def on_mount(self) -> None:
        if self.defaults.complete:
            self.add_class("-auto")
            self.submit()
        else:
            self._focus_first_empty()

    def _focus_first_empty(self) -> None:
        for selector in ("#login-server", "#login-address", "#login-password"):
            field = self.query_one(selector, Input)
            if not field.value:
                field.focus()
                return
        self.query_one("#login-submit", Button).focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#login-submit")
    def submit(self) -> None:
        if self.busy:
            return
        server = self.query_one("#login-server", Input).value.strip()
        address = self.query_one("#login-address", Input).value.strip()
        password = self.query_one("#login-password", Input).value
        if not (server and address and password):
            self.notify("server, address and password are all needed", severity="warning")
            self._focus_first_empty()
            return
        self.busy = True
        self.query_one("#login-status", Label).update(f"Signing in as {address} …")
        self.sign_in(server, address, password)

    @work(thread=True, exclusive=True, group="login")
    def sign_in(self, server: str, address: str, password: str) -> None:
        try:
            client = open_session(server, address, password, self.factory)
        except Exception as exc:
            self.fail("Sign-in failed", exc)
        else:
            self.post_message(self.SignedIn(client))

    def on_login_screen_signed_in(self, event: LoginScreen.SignedIn) -> None:
        self.dismiss(event.client)

    def on_failed(self, event: Failed) -> None:
        # WorkScreen.on_failed (run after this one: Textual walks the MRO) shows the error
        self.busy = False
        self.remove_class("-auto")
        self.query_one("#login-status", Label).update("")
        self.query_one("#login-password", Input).focus()
