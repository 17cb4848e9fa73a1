"""In charge of signing in: what the login form starts with (flags, WSEMAIL_* environment,
the chosen or default account of client.toml and the OS keyring, as `wsemail.client.session`
finds them), the accounts one may switch between, opening a checked client session (its
first request is the inbox's first page, which the inbox then shows), and saving an account
set up in the form. Pure Python (no Textual)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from wsemail.client import session
from wsemail.client.mail import Client, Page
from wsemail.client.salts import SaltMemory
from wsemail.protocol.errors import WsemailError

ClientFactory = Callable[[str, str, str], Client]
NEW_ACCOUNT = "+new"  # the choice of a new account (account names start with a letter or digit)


@dataclass
class LoginDefaults:
    """What the form starts with. `first_run`: nothing is configured, so the form sets up
    an account (saved on success); `account`: the client.toml account these come from."""

    server: str = session.DEFAULT_SERVER
    user: str = ""
    password: str = field(default="", repr=False)
    account: str = ""
    first_run: bool = False
    trust_roots: str = ""  # the account's federation roots, os.pathsep-joined, as typed

    @property
    def complete(self) -> bool:
        return bool(self.server and self.user and self.password)


def _config() -> session.ClientConfig:
    try:
        return session.load_accounts()
    except WsemailError:
        return session.ClientConfig()


def known_login(
    server: str | None = None, user: str | None = None, account: str | None = None
) -> LoginDefaults:
    """Whatever is already known about the session; never raises, never prompts."""
    config = _config()
    try:
        found = config.current(account or session.chosen_account())
    except WsemailError:
        found = config.current(None)
    server = server or os.environ.get("WSEMAIL_SERVER") or (found.server if found else None)
    user = user or os.environ.get("WSEMAIL_USER") or (found.user if found else "")
    password = os.environ.get("WSEMAIL_PASSWORD") or ""
    server = server or session.DEFAULT_SERVER
    same = found if found and (found.server, found.user) == (server, user) else None
    if user and not password:
        password = _stored_password(same, server, user)
    return LoginDefaults(
        server,
        user,
        password,
        account=same.name if same else "",
        first_run=not config.accounts and not user,
        trust_roots=os.environ.get("WSEMAIL_TRUST_ROOTS")
        or (os.pathsep.join(same.trust_roots) if same else ""),
    )


def _stored_password(account: session.Account | None, server: str, user: str) -> str:
    """The account's password_command's answer, else the keyring's; "" when neither
    gives one (the form then asks)."""
    if account is not None and account.password_command:
        try:
            return session.run_password_command(
                account.password_command, f"account {account.name!r}"
            )
        except WsemailError:
            return ""
    return session.keyring_get(server, user) or ""


def check_chosen_account() -> None:
    """Before the app starts: an unknown --account / WSEMAIL_ACCOUNT, or an unreadable
    client.toml, is a one-line UsageError rather than a silent fallback."""
    session.load_accounts().current(session.chosen_account())


def account_login(account: session.Account) -> LoginDefaults:
    """The form for one saved account (its password from its password_command or the
    keyring when there)."""
    password = _stored_password(account, account.server, account.user)
    return LoginDefaults(
        account.server,
        account.user,
        password,
        account=account.name,
        trust_roots=os.pathsep.join(account.trust_roots),
    )


def saved_accounts() -> list[session.Account]:
    """The accounts of client.toml, the default one first; none when it is unreadable."""
    config = _config()
    return sorted(config.accounts.values(), key=lambda a: (a.name != config.default, a.name))


def account_choice_needed(server: str | None = None, user: str | None = None) -> bool:
    """Several accounts and none picked by flags or environment: the user chooses."""
    picked = server or user or session.chosen_account()
    env = os.environ.get("WSEMAIL_SERVER") or os.environ.get("WSEMAIL_USER")
    return not (picked or env) and len(_config().accounts) > 1


def default_client(server: str, user: str, password: str) -> Client:
    """A client with the trust roots and TLS name of the account for (server, user)."""
    config = _config()
    found = config.find(server, user)
    env_roots = os.environ.get("WSEMAIL_TRUST_ROOTS")
    roots = (
        session.trust_roots()
        if env_roots or found is None
        else [Path(p) for p in found.trust_roots]
    )
    tls_name = os.environ.get("WSEMAIL_TLS_NAME") or (found.tls_name if found else "")
    return Client(
        server,
        user,
        password,
        verify=session.tls_verify(),
        trust_roots=roots,
        tls_name=tls_name or None,
        # the key derivation begins from this account's salt of its last session, while
        # the client connects and fetches the salt (wsemail.client.salts)
        salts=SaltMemory.default(),
    )


@dataclass(frozen=True)
class Session:
    """A client whose password the server has accepted, and the answer that showed it: the
    first `page_size` headers of the inbox, which the inbox shows without asking again."""

    client: Client
    inbox: Page


def open_session(
    server: str,
    user: str,
    password: str,
    factory: ClientFactory = default_client,
    *,
    trust_roots: str = "",
    page_size: int = 50,
) -> Session:
    """Sign in: the inbox's first page is the first authenticated request; federation
    roots typed into the form are used from this first answer on, not after a restart."""
    client = factory(server.strip(), user.strip(), password)
    return sign_in(client, trust_roots=trust_roots, page_size=page_size)


def sign_in(client: Client, *, trust_roots: str = "", page_size: int = 50) -> Session:
    """`open_session` with a client already made (closed when the sign-in fails)."""
    try:
        roots = [Path(p.strip()) for p in trust_roots.split(os.pathsep) if p.strip()]
        if roots:
            client.set_trust_roots(roots)
        inbox = client.list_headers("inbox", limit=page_size)
    except BaseException:
        client.close()
        raise
    return Session(client, inbox)


def save_account(
    server: str, user: str, password: str, *, remember: bool, trust_roots: str = ""
) -> str:
    """Keep the account a form signed in with (named after the address; made the default
    when it is the first) and, when `remember`, its password in the OS keyring. Returns the
    account name; raises UsageError when there is no keyring (the account is kept)."""
    config = _config()
    same = config.find(server, user)
    roots = tuple(p.strip() for p in trust_roots.split(os.pathsep) if p.strip())
    name = config.name_for(server, user)
    if same is not None and not roots:
        roots = same.trust_roots
    tls_name = same.tls_name if same else ""
    command, routes = (same.password_command, same.directory_routes) if same else ("", ())
    hook = same.new_mail_command if same else ""
    config = config.with_account(
        session.Account(name, server, user, roots, tls_name, command, routes, hook)
    )
    session.save_accounts(config)
    if remember and not command:
        session.keyring_set(server, user, password)
    return name
