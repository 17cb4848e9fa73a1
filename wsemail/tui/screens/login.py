"""In charge of signing in: server URL, address and password, checked against the server.

When everything is already known (switching to a saved account with ctrl+a) the screen
signs in at once without composing the form; a refusal mounts the form, then a notification
says why. (At start the app signs in with what is known itself, behind the inbox; a refusal
brings this screen with the form and why: `refused`.) On first run (nothing configured)
the form sets up an account: on success it is saved to client.toml and, with "remember"
ticked, its password to the OS keyring. With several accounts the form starts with a choice
of them (and "New account…"). With `saving` off (a browser session of `wsemail web`)
nothing is saved on this machine: no account, no keyring entry, and no "remember" box."""

from __future__ import annotations

from collections.abc import Sequence

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Header, Input, Label, Select

from wsemail.protocol.errors import WsemailError
from wsemail.tui.feedback import describe
from wsemail.tui.screens.base import Failed, WorkScreen
from wsemail.tui.signin import (
    NEW_ACCOUNT,
    ClientFactory,
    LoginDefaults,
    Session,
    default_client,
    open_session,
    save_account,
)
from wsemail.tui.widgets.footer import KeyFooter


class LoginScreen(WorkScreen[Session]):
    """Dismisses with a checked client and the inbox's first `page_size` headers (or None
    when cancelled: `cancellable` only)."""

    CSS_PATH = "login.tcss"
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    class SignedIn(Message):
        def __init__(self, session: Session, warning: str = "") -> None:
            super().__init__()
            self.session = session
            self.warning = warning

    def __init__(
        self,
        defaults: LoginDefaults,
        *,
        factory: ClientFactory = default_client,
        choices: Sequence[LoginDefaults] = (),
        cancellable: bool = False,
        saving: bool = True,
        page_size: int = 50,
        refused: str = "",
    ) -> None:
        """`refused`: why signing in with `defaults` just failed (the app tried at once):
        the screen starts with the form, the password field focused, and says so."""
        super().__init__()
        self.defaults = defaults
        self.refused = refused
        self.page_size = page_size
        self.saving = saving
        self.factory = factory
        self.choices = {c.account: c for c in choices if c.account}
        self.cancellable = cancellable
        self.setup = defaults.first_run and saving
        # the account the fields show (the Select's first Changed repeats it)
        self.shown = defaults.account if defaults.account in self.choices else ""
        if self.choices and not self.shown:
            self.shown = next(iter(self.choices))
        self.busy = False

    @property
    def auto(self) -> bool:
        """Everything is known: sign in at once; the form is composed only if that fails."""
        return self.defaults.complete and not self.choices and not self.refused

    def compose(self) -> ComposeResult:
        yield Header()
        if not self.auto:
            yield self._form()
        yield Label("", id="login-status")
        yield KeyFooter()

    def _form(self) -> Vertical:
        rows: list[Widget] = [Label(self._title(), id="login-title")]
        if self.choices:
            options = [(f"{c.account}  ({c.user})", c.account) for c in self.choices.values()]
            select = Select(
                [*options, ("New account…", NEW_ACCOUNT)],
                value=self.shown,
                allow_blank=False,
                compact=True,
                id="login-account",
            )
            rows.append(
                Horizontal(Label("Account", classes="login-label"), select, classes="login-row")
            )
        for label, name, value, placeholder in (
            ("Server", "server", self.defaults.server, "https://…/wsemail"),
            ("Address", "address", self.defaults.user, "you@example.org"),
            ("Password", "password", self.defaults.password, ""),
            (
                "Trust roots",
                "roots",
                self.defaults.trust_roots,
                "optional: federation root certificate path(s)",
            ),
        ):
            field = Input(
                value,
                id=f"login-{name}",
                placeholder=placeholder,
                password=name == "password",
                compact=True,
            )
            rows.append(Horizontal(Label(label, classes="login-label"), field, classes="login-row"))
        if self.saving:
            rows.append(
                Checkbox(
                    "Remember the password in the OS keyring",
                    self.setup,
                    id="login-remember",
                    compact=True,
                )
            )
        rows.append(Button("Sign in", id="login-submit", variant="primary", compact=True))
        return Vertical(*rows, id="login-form")

    def _title(self) -> str:
        if self.setup:
            return "Set up your wsemail account"
        if self.choices:
            return "Sign in: choose an account"
        return "Sign in to your wsemail server"

    def on_mount(self) -> None:
        if self.auto:
            self.add_class("-auto")
            d = self.defaults
            self.busy = True
            self._signing_in(d.user.strip())
            self.sign_in(
                d.server.strip(),
                d.user.strip(),
                d.password,
                self.setup,
                self.setup,
                d.trust_roots.strip(),
            )
        elif self.refused:
            self.on_failed(Failed(self.refused))  # the form, its password focused, and why
        elif self.choices:
            self.query_one("#login-account", Select).focus()
        else:
            self._focus_first_empty()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self.cancellable if action == "cancel" else True

    def action_cancel(self) -> None:
        if self.cancellable and not self.busy:
            self.dismiss(None)

    def _focus_first_empty(self) -> None:
        for selector in ("#login-server", "#login-address", "#login-password"):
            field = self.query_one(selector, Input)
            if not field.value:
                field.focus()
                return
        self.query_one("#login-submit", Button).focus()

    @on(Select.Changed, "#login-account")
    def _account_chosen(self, event: Select.Changed) -> None:
        if str(event.value) == self.shown:
            return
        self.shown = str(event.value)
        chosen = self.choices.get(self.shown)
        self.setup = chosen is None and self.saving
        if chosen is None:  # a new account, perhaps on the same server
            chosen = LoginDefaults(self.query_one("#login-server", Input).value)
        self.query_one("#login-server", Input).value = chosen.server
        self.query_one("#login-address", Input).value = chosen.user
        self.query_one("#login-password", Input).value = chosen.password
        self.query_one("#login-roots", Input).value = chosen.trust_roots
        if self.saving:
            self.query_one("#login-remember", Checkbox).value = self.setup
        self.query_one("#login-title", Label).update(self._title())
        if event.select.has_focus:
            self._focus_first_empty()

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
        self._signing_in(address)
        remember = self.saving and self.query_one("#login-remember", Checkbox).value
        roots = self.query_one("#login-roots", Input).value.strip()
        self.sign_in(server, address, password, self.setup or remember, remember, roots)

    def _signing_in(self, address: str) -> None:
        self.query_one("#login-status", Label).update(f"Signing in as {address} …")

    @work(thread=True, exclusive=True, group="login")
    def sign_in(
        self, server: str, address: str, password: str, save: bool, remember: bool, roots: str
    ) -> None:
        try:
            signed_in = open_session(
                server,
                address,
                password,
                self.factory,
                trust_roots=roots,
                page_size=self.page_size,
            )
        except Exception as exc:
            self.fail("Sign-in failed", exc)
            return
        warning = ""
        client = signed_in.client
        if save and self.saving:
            try:
                save_account(
                    client.server, client.username, password, remember=remember, trust_roots=roots
                )
            except WsemailError as exc:
                warning = f"Signed in, but {describe(exc)}"
        self.post_message(self.SignedIn(signed_in, warning))

    def on_login_screen_signed_in(self, event: LoginScreen.SignedIn) -> None:
        if event.warning:
            self.app.notify(event.warning, title="wsemail", severity="warning", timeout=10)
        self.dismiss(event.session)

    def on_failed(self, event: Failed) -> None:
        event.prevent_default()  # WorkScreen.on_failed runs once the form is shown
        self.busy = False
        self.call_later(self._show_form, event)

    async def _show_form(self, event: Failed) -> None:
        if not self.query("#login-form"):  # signed in at once until now: compose the form
            await self.mount(self._form(), before="#login-status")
        self.remove_class("-auto")
        self.query_one("#login-status", Label).update("")
        self.set_focus(self.query_one("#login-password", Input))
        super().on_failed(event)  # the notice saying why
