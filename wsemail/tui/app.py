"""In charge of the Textual application: screen routing (sign in → inbox; with everything
known the inbox is the first screen and says it signs in while the sign-in runs behind it,
and the sign-in form comes over it only when that is refused), the global keys,
the one wsemail Client the screens share, switching to another account from the inbox
(ctrl+a: sign in to it, then the new inbox replaces the old, whose push stream and client
close), and party-line invitations (announced once with
the key that joins the latest; with none waiting, that key asks for a channel id). Everything
else lives in the screens."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.message import Message

from wsemail.client.mail import Client, Page
from wsemail.tui.autosave import AUTOSAVE_SECONDS
from wsemail.tui.feedback import describe
from wsemail.tui.mailbox import AddressBook
from wsemail.tui.screens.base import Invited
from wsemail.tui.screens.inbox import InboxScreen
from wsemail.tui.signin import (
    NEW_ACCOUNT,
    ClientFactory,
    LoginDefaults,
    Session,
    account_choice_needed,
    account_login,
    check_chosen_account,
    default_client,
    known_login,
    saved_accounts,
    sign_in,
)

if TYPE_CHECKING:
    from wsemail.client.partyline import Invitation

# The screens a user opens later (compose, message, channel, help, prompts) are imported
# when first opened, so a cold start shows the first page of the inbox sooner
# (tests/test_layout.py keeps them out of `import wsemail.tui.app`).


def saved_choices() -> list[LoginDefaults]:
    """The sign-in form of each account in client.toml, the default one first."""
    return [account_login(account) for account in saved_accounts()]


GENERIC_ACTIONS = {"app.focus_next", "app.focus_previous", "screen.copy_text"}


class WsemailApp(App[None]):
    """`defaults` prefill (or, when complete, skip) the sign-in form; `choices` (one per
    saved account) make it offer a choice first; `accounts` lists them for ctrl+a;
    `client_factory`, `page_size`, `poll_seconds`, `im_notify` (hold an IM push stream
    for notifications) and `autosave_seconds` (the compose screen's drafts) are seams for
    tests; `saving` off (a browser session) keeps sign-ins from saving accounts or
    passwords on this machine."""

    TITLE = "wsemail"
    # the inbox's own CSS too: read while the sign-in runs, so showing the inbox does not
    # re-parse the stylesheet and restyle every widget (Textual does for a screen's new CSS)
    CSS_PATH = ["app.tcss", "screens/inbox.tcss"]
    BINDINGS = [
        Binding("question_mark,f1", "help", "Help"),
        Binding(
            # announced by the invitation's notification and listed by Help; the footer
            # keeps its room for each screen's own keys at 80 columns
            "ctrl+g",
            "join_channel",
            "Join",
            show=False,
            tooltip="join the party line you were invited to",
        ),
        Binding(
            # listed by Help; the inbox footer has no room left at 80 columns
            "ctrl+a",
            "accounts",
            "Accounts",
            show=False,
            tooltip="switch to another account (from the inbox)",
        ),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(
        self,
        defaults: LoginDefaults | None = None,
        *,
        choices: Sequence[LoginDefaults] = (),
        accounts: Callable[[], list[LoginDefaults]] = saved_choices,
        client_factory: ClientFactory = default_client,
        page_size: int = 50,
        poll_seconds: float = 5.0,
        im_notify: bool = True,
        autosave_seconds: float = AUTOSAVE_SECONDS,
        saving: bool = True,
    ) -> None:
        super().__init__()
        self.autosave_seconds = autosave_seconds
        self.saving = saving
        self.defaults = defaults if defaults is not None else LoginDefaults()
        self.choices = list(choices)
        self.accounts = accounts
        self.client_factory = client_factory
        self.page_size = page_size
        self.poll_seconds = poll_seconds
        self.im_notify = im_notify
        self.client: Client | None = None
        self.address_book = AddressBook()
        self.invitations: dict[str, Invitation] = {}  # channel id → not yet joined
        self.signing_in: Client | None = None  # the start's sign-in, while under way

    class SignInEnded(Message):
        """The sign-in begun at start: `session`, or None and `refusal` (what went wrong)."""

        def __init__(self, inbox: InboxScreen, session: Session | None, refusal: str) -> None:
            super().__init__()
            self.inbox = inbox
            self.session = session
            self.refusal = refusal

    def on_mount(self) -> None:
        d = self.defaults
        if d.complete and not self.choices:
            # everything known: the inbox shows at once, saying it signs in, so it is
            # composed and drawn while the sign-in waits on the server and on scrypt; a
            # refusal brings the sign-in form over it
            try:
                client = self.client_factory(d.server.strip(), d.user.strip(), d.password)
            except Exception as exc:  # not a server URL, not an address: the form says why
                self._ask(refused=f"Sign-in failed: {describe(exc)}")
                return
            self.signing_in = client
            inbox = self._inbox(client, None, signing_in=True)
            self.push_screen(inbox)
            self._sign_in(inbox, d.trust_roots.strip())
            return
        self._ask()

    def _ask(self, refused: str = "", inbox: InboxScreen | None = None) -> None:
        """The sign-in form (or a choice of accounts); signed in, the inbox shows: `inbox`
        below the form, else a new one."""
        from wsemail.tui.screens.login import LoginScreen

        login = LoginScreen(
            self.defaults,
            factory=self.client_factory,
            choices=[] if refused else self.choices,
            saving=self.saving,
            page_size=self.page_size,
            refused=refused,
        )
        if inbox is None:
            self.push_screen(login, self.signed_in)
            return

        def signed_in(session: Session | None) -> None:
            if session is not None:
                self.client = session.client
                inbox.signed_in(session.client, session.inbox)

        self.push_screen(login, signed_in)

    @work(thread=True, exclusive=True, group="sign-in")
    def _sign_in(self, inbox: InboxScreen, trust_roots: str) -> None:
        try:
            session = sign_in(inbox.client, trust_roots=trust_roots, page_size=self.page_size)
        except Exception as exc:
            self.post_message(self.SignInEnded(inbox, None, f"Sign-in failed: {describe(exc)}"))
        else:
            self.post_message(self.SignInEnded(inbox, session, ""))

    def on_wsemail_app_sign_in_ended(self, event: WsemailApp.SignInEnded) -> None:
        self.signing_in = None
        if event.session is None:
            self._ask(event.refusal, event.inbox)
            return
        self.client = event.session.client
        event.inbox.signed_in(event.session.client, event.session.inbox)

    def _inbox(
        self, client: Client, first_page: Page | None, *, signing_in: bool = False
    ) -> InboxScreen:
        return InboxScreen(
            client,
            self.address_book,
            first_page=first_page,
            signing_in=signing_in,
            page_size=self.page_size,
            poll_seconds=self.poll_seconds,
            im_notify=self.im_notify,
        )

    def signed_in(self, session: Session | None) -> None:
        if session is None:
            self.exit()
            return
        self.client = session.client
        self.push_screen(self._inbox(session.client, session.inbox))

    # accounts -----------------------------------------------------------------------------
    def action_accounts(self) -> None:
        from wsemail.tui.screens.choose import ChooseScreen
        from wsemail.tui.screens.login import LoginScreen

        current = self.client
        if current is None or not isinstance(self.screen, InboxScreen):
            self.notify("Switch accounts from the inbox.", severity="warning")
            return
        try:
            choices = {c.account: c for c in self.accounts()}
        except Exception as exc:  # an unreadable client.toml must not end the session
            self.notify(f"Cannot read the accounts: {exc}", severity="error")
            return
        width = max((len(name) for name in choices), default=0)
        here = (current.server, current.username)
        rows = [
            (
                name,
                f"{name:{width}}  {c.user}"
                + ("  (signed in)" if (c.server, c.user) == here else ""),
            )
            for name, c in choices.items()
        ]

        def answered(name: str | None) -> None:
            if name is None:
                return
            chosen = choices.get(name)
            if chosen is not None and (chosen.server, chosen.user) == here:
                self.notify(f"Already signed in as {current.username}.")
                return
            defaults = chosen or LoginDefaults(current.server, first_run=True)
            screen = LoginScreen(
                defaults,
                factory=self.client_factory,
                cancellable=True,
                saving=self.saving,
                page_size=self.page_size,
            )
            self.push_screen(screen, self.switched)

        self.push_screen(
            ChooseScreen("Switch to account:", [*rows, (NEW_ACCOUNT, "New account…")]), answered
        )

    def switched(self, session: Session | None) -> None:
        """Signed in to another account: its inbox replaces the old one (whose unmount
        closes the push stream), then the old client closes. None: stay where one was."""
        old = self.client
        if session is None or old is None:
            return
        client = self.client = session.client
        self.address_book = AddressBook()
        self.invitations.clear()
        self.switch_screen(self._inbox(client, session.inbox))
        old.close()
        self.notify(f"Signed in as {client.username}.", title="Accounts")

    async def action_quit(self) -> None:
        """Quit; a message being written is kept in Drafts first (when it can be)."""
        for screen in self.screen_stack:
            save = getattr(screen, "save_before_quit", None)  # a compose screen's draft
            if callable(save):
                try:
                    await asyncio.to_thread(save)
                except Exception as exc:  # quitting must not fail: say so on the way out
                    self.log.warning(f"draft not saved: {exc}")
        self.exit()

    def on_unmount(self) -> None:
        for client in (self.client, self.signing_in):
            if client is not None:
                client.close()

    # party lines --------------------------------------------------------------------------
    def _in_channel(self, channel: str) -> bool:
        from wsemail.tui.screens.channel import ChannelScreen

        return any(isinstance(s, ChannelScreen) and s.channel == channel for s in self.screen_stack)

    def on_invited(self, event: Invited) -> None:
        invitation = event.invitation
        if (
            invitation.channel in self.invitations
            or self._in_channel(invitation.channel)
            or (self.client is not None and invitation.sender == self.client.username)
        ):
            return  # told already (several push streams), one's own, or the one one is in
        self.invitations[invitation.channel] = invitation
        self.notify(
            f"{invitation.sender or invitation.domain} invites you to a party line. "
            "Press ctrl+g to join.",
            title="Party line",
            timeout=30,
        )

    def action_join_channel(self) -> None:
        from wsemail.tui.screens.channel import ChannelScreen
        from wsemail.tui.screens.login import LoginScreen
        from wsemail.tui.screens.prompt import PromptScreen

        if self.client is None or isinstance(self.screen, LoginScreen):
            return
        client = self.client
        if self.invitations:
            invitation = self.invitations.pop(next(reversed(self.invitations)))
            self.push_screen(ChannelScreen(client, invitation))
            return

        def answered(channel: str | None) -> None:
            if channel:
                self.push_screen(ChannelScreen(client, channel))

        self.push_screen(PromptScreen("Join the party line with channel id:"), answered)

    def action_help(self) -> None:
        from wsemail.tui.screens.help import HelpScreen

        if isinstance(self.screen, HelpScreen):
            return
        screen: list[tuple[str, str]] = []  # the screen's own keys first
        app: list[tuple[str, str]] = []  # then the keys that work everywhere
        widgets: list[tuple[str, str]] = []  # then the focused widget's (navigation)
        for active in self.active_bindings.values():
            binding = active.binding
            if binding.description and active.enabled:
                entry = (self.get_key_display(binding), binding.description)
                generic = binding.action in GENERIC_ACTIONS  # focus moves, copy: last
                if active.node is self.screen and not generic:
                    screen.append(entry)
                elif active.node is self:
                    app.append(entry)
                else:
                    widgets.append(entry)
        keys = list(dict.fromkeys(screen + app + widgets))
        name = type(self.screen).__name__.removesuffix("Screen")
        self.push_screen(HelpScreen(name, keys))


def run(server: str | None = None, user: str | None = None) -> None:
    """Sign in with what is known (flags, environment, the chosen or default account of
    client.toml, keyring) and run; with several accounts and none chosen, offer them."""
    check_chosen_account()
    choices = saved_choices() if account_choice_needed(server, user) else []
    WsemailApp(known_login(server, user), choices=choices).run()


def run_web(server: str) -> None:
    """One browser session of `wsemail web`: the sign-in form with only the server filled
    in; nothing from this machine's accounts, keyring or environment signs anyone in, and
    nothing is saved."""
    WsemailApp(LoginDefaults(server), accounts=list, saving=False).run()


def main() -> None:
    run()
