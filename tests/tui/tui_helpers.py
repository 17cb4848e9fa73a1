"""Shared by the TUI tests: an app signed in against a real loopback server, and waiting."""

from __future__ import annotations

from collections.abc import Callable

from textual.pilot import Pilot

from wsemail.tui.app import WsemailApp
from wsemail.tui.signin import ClientFactory, LoginDefaults, default_client

from conftest import PASSWORD, Running


def make_app(
    server: Running,
    user: str = "alice@localhost",
    password: str = PASSWORD,
    *,
    page_size: int = 50,
    poll_seconds: float = 0,
    im_notify: bool = False,
    client_factory: ClientFactory | None = None,
    autosave_seconds: float = 5.0,
) -> WsemailApp:
    """`im_notify` off by default: most tests do not want the inbox's IM push stream."""
    return WsemailApp(
        LoginDefaults(server.url, user, password),
        page_size=page_size,
        poll_seconds=poll_seconds,
        im_notify=im_notify,
        client_factory=client_factory or default_client,
        autosave_seconds=autosave_seconds,
    )


async def wait_for(
    pilot: Pilot[None], condition: Callable[[], object], timeout: float = 30.0
) -> None:
    """Let the app run until `condition()` is true (workers call a real server)."""
    waited = 0.0
    while not condition():
        if waited > timeout:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.05)
        waited += 0.05
