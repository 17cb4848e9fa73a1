"""In charge of the terminal client in a browser (`wsemail web`): a textual-serve web server
whose page runs xterm.js; every browser connection (one WebSocket) starts its own
`wsemail tui --web` process, whose user signs in in the TUI's own form. Here: binding first
(port 0 works, the real URL is printed), TLS, URLs built from the page's own origin, a
WebSocket refused unless it comes from that origin (another site's page must not drive a
client running as this user), and the page without fonts fetched from elsewhere."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import shlex
import socket
import ssl
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
import textual_serve.server
from aiohttp import web
from textual_serve.server import Server

log = logging.getLogger("wsemail.web")

# passwords the browser sessions must never inherit from whoever started `wsemail web`
SECRET_ENVIRONMENT = ("WSEMAIL_PASSWORD",)
SHUTDOWN_SECONDS = 3.0
_REMOTE_FONT = re.compile(r"<link[^>]*fonts\.googleapis\.com[^>]*>", re.DOTALL)


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1 (a name other than localhost is not loopback)."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tui_command(server: str) -> list[str]:
    """The command line of one browser session: this same wsemail (the venv's interpreter
    with `-m wsemail.console`, which starts the TUI without loading the whole CLI, or the
    single-file build run by the same interpreter)."""
    me = sys.argv[0]
    if me and os.path.isfile(me) and zipfile.is_zipfile(me):  # dist/wsemail (a zipapp)
        base = [sys.executable, str(Path(me).absolute())]
    else:
        base = [sys.executable, "-m", "wsemail.console"]
    return [*base, "tui", "--web", "--server", server]


def _template(name: str) -> str | None:
    """textual-serve's page without its stylesheet link to a web font service (the
    terminal's own font is served locally from /static)."""
    path = Path(textual_serve.server.__file__).parent / "templates" / name
    if not path.is_file():
        return None
    return _REMOTE_FONT.sub("", path.read_text(encoding="utf-8"))


class BrowserServer(Server):
    """textual-serve's server on a socket bound before it starts, with optional TLS."""

    def __init__(
        self,
        command: Sequence[str],
        sock: socket.socket,
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        host, port = sock.getsockname()[:2]
        scheme = "https" if tls else "http"
        shown = f"[{host}]" if ":" in host else host
        super().__init__(shlex.join(command), host=host, port=port, title="wsemail")
        self.public_url = f"{scheme}://{shown}:{port}"
        self.sock = sock
        self.tls = tls
        self.loopback = is_loopback(host)

    @property
    def url(self) -> str:
        return f"{self.public_url}/"

    def initialize_logging(self) -> None:
        """Keep wsemail's logging (one line per problem), not textual-serve's rich handler."""

    async def on_startup(self, app: web.Application) -> None:
        print(f"wsemail web: serving the terminal client at {self.url}", flush=True)

    async def _make_app(self) -> web.Application:
        app = await super()._make_app()
        aiohttp_jinja2.setup(app, loader=jinja2.FunctionLoader(_template))
        return app

    def _origin(self, request: web.Request) -> str | None:
        """The page's origin as the browser addressed us; None when the Host is not one this
        server answers to (a loopback server answers loopback names only: DNS rebinding)."""
        host = request.host
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if self.loopback and not is_loopback(name):
            return None
        return f"{'https' if self.tls else 'http'}://{host}"

    async def handle_index(self, request: web.Request) -> Any:
        origin = self._origin(request)
        if origin is None:
            raise web.HTTPMisdirectedRequest(text="wsemail web: unknown host name\n")
        size = request.query.get("fontsize", "16")
        context = {
            "font_size": int(size) if size.isdigit() and 6 <= int(size) <= 64 else 16,
            "app_websocket_url": f"{'wss' if self.tls else 'ws'}://{request.host}/ws",
            "config": {"static": {"url": f"{origin}/static/"}},
            "application": {"name": self.title},
        }
        return aiohttp_jinja2.render_template("app_index.html", request, context)

    async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
        origin = self._origin(request)
        if origin is None or request.headers.get("Origin") != origin:
            log.warning(
                "refused a session from origin %r (host %r)",
                request.headers.get("Origin"),
                request.host,
            )
            raise web.HTTPForbidden(text="wsemail web: cross-origin session refused\n")
        return await super().handle_websocket(request)

    def serve(self, debug: bool = False) -> None:
        """Until SIGINT or SIGTERM; then open sessions get a few seconds before they are
        cancelled, which tells each one's TUI to quit."""
        for name in SECRET_ENVIRONMENT:
            os.environ.pop(name, None)
        web.run_app(
            self._make_app(),
            sock=self.sock,
            ssl_context=self.tls,
            print=None,
            access_log=None,
            shutdown_timeout=SHUTDOWN_SECONDS,
        )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (IPv6 when the address says so)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    return socket.create_server((host.strip("[]"), port), family=family, reuse_port=False)


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context
