"""In charge of signing in: what the login form starts with (flags, WSEMAIL_* environment,
client.toml and the OS keyring, as `wsemail.cli.session` finds them) and opening a checked
client session. Pure Python (no Textual)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from wsemail.cli import session
from wsemail.client import Client
from wsemail.errors import WsemailError

ClientFactory = Callable[[str, str, str], Client]


@dataclass
class LoginDefaults:
    server: str = session.DEFAULT_SERVER
    user: str = ""
    password: str = field(default="", repr=False)

    @property
    def complete(self) -> bool:
        return bool(self.server and self.user and self.password)


def known_login(server: str | None = None, user: str | None = None) -> LoginDefaults:
    """Whatever is already known about the session; never raises, never prompts."""
    try:
        saved = session.read_config()
    except WsemailError:
        saved = {}
    server = (
        server or os.environ.get("WSEMAIL_SERVER") or saved.get("server") or session.DEFAULT_SERVER
    )
    user = user or os.environ.get("WSEMAIL_USER") or saved.get("user") or ""
    password = os.environ.get("WSEMAIL_PASSWORD") or ""
    if user and not password:
        password = session.keyring_get(server, user) or ""
    return LoginDefaults(server, user, password)


def default_client(server: str, user: str, password: str) -> Client:
    return Client(
        server,
        user,
        password,
        verify=session.tls_verify(),
        trust_roots=session.trust_roots(),
        tls_name=os.environ.get("WSEMAIL_TLS_NAME") or None,
    )


def open_session(
    server: str, user: str, password: str, factory: ClientFactory = default_client
) -> Client:
    """A client whose password the server has accepted (one cheap ListHeaders)."""
    client = factory(server.strip(), user.strip(), password)
    try:
        client.list_headers(limit=1)
    except BaseException:
        client.close()
        raise
    return client
