"""`wsemail web`: the terminal client in a real headless browser (Debian's chromium driven by
Selenium through Debian's chromedriver), against a real `wsemail serve` process; and the
refusals (a public address without TLS, a page or WebSocket from another origin)."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from wsemail.client.mail import Client

from certs import make_tls_files
from conftest import PASSWORD, wait_for, wsemail_binary

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# the bytes the page's WebSocket receives, kept for the test to read (the terminal draws on
# a canvas, so the DOM holds no text)
CAPTURE = """
window.__screen = [];
const Original = window.WebSocket;
window.WebSocket = class extends Original {
  constructor(url, protocols) {
    super(url, protocols);
    this.addEventListener("message", (e) => {
      if (typeof e.data !== "string") window.__screen.push(new TextDecoder().decode(e.data));
    });
  }
};
"""
ESCAPES = re.compile(
    r"\x1b\[[0-9;?<>=$]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][0-9A-Za-z]|\x1b[=>78]"
)


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSEMAIL_")}
    env.update(
        HOME=str(home),
        XDG_DATA_HOME=str(home / "xdg"),
        WSEMAIL_CLIENT_CONFIG=str(home / "client.toml"),
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
    )
    return env


def _started(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [wsemail_binary(), *args], env=env, text=True, stdout=subprocess.PIPE, stderr=None
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert " at " in line, line
    return proc, line.split(" at ")[1].split()[0]


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture
def mail_server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A real `wsemail serve` on loopback with alice and bob."""
    env = _env(tmp_path / "home")
    data = tmp_path / "server"
    proc, url = _started(["serve", "--data-dir", str(data), "--port", "0"], env)
    try:
        for user in ("alice@localhost", "bob@localhost"):
            subprocess.run(
                [
                    wsemail_binary(),
                    "user",
                    "add",
                    user,
                    "--data-dir",
                    str(data),
                    "--password-stdin",
                ],
                input=PASSWORD + "\n",
                env=env,
                text=True,
                capture_output=True,
                check=True,
                timeout=60,
            )
        yield url, env
    finally:
        _stop(proc)


@pytest.fixture
def web(mail_server: tuple[str, dict[str, str]]) -> Iterator[tuple[str, str, Path]]:
    """`wsemail web` on a free loopback port, whose own environment holds a password that no
    browser session may inherit."""
    url, env = mail_server
    env = {**env, "WSEMAIL_USER": "alice@localhost", "WSEMAIL_PASSWORD": PASSWORD}
    proc, page = _started(["web", "--port", "0", "--server", url], env)
    try:
        yield url, page, Path(env["WSEMAIL_CLIENT_CONFIG"])
    finally:
        _stop(proc)


class Page:
    """The browser page and what its terminal has drawn since the last thing looked for."""

    def __init__(self, driver: Any) -> None:
        from selenium.webdriver.common.by import By

        self.driver = driver
        self.seen = ""
        self.By = By

    def wait(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            drawn = self.driver.execute_script("return window.__screen.splice(0)")
            self.seen += ESCAPES.sub("", "".join(drawn))
            found = self.seen.find(text)
            if found >= 0:
                self.seen = self.seen[found + len(text) :]
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the page never showed {text!r}: {self.seen[-500:]!r}")
            time.sleep(0.05)

    def type(self, *keys: str) -> None:
        terminal = self.driver.find_element(self.By.CSS_SELECTOR, ".xterm-helper-textarea")
        terminal.send_keys(*keys)


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.fail("chromium or chromedriver is not installed: run scripts/install-system-deps")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in CI
        "--disable-dev-shm-usage",
        "--enable-unsafe-swiftshader",  # software WebGL for xterm.js
        "--window-size=1200,800",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CAPTURE})
        yield driver
    finally:
        driver.quit()


def test_web_client_signs_in_reads_and_sends_in_a_headless_browser(
    web: tuple[str, str, Path], browser: Any
) -> None:
    from selenium.webdriver.common.keys import Keys

    url, page_url, client_toml = web
    with Client(url, "bob@localhost", PASSWORD) as bob:
        bob.send(["alice@localhost"], "Lunch?", "At noon, at the usual place.")
    browser.get(page_url)
    page = Page(browser)
    # the form asks: nothing of the environment of `wsemail web` signed anyone in
    page.wait("Sign in to your wsemail server")
    page.type("alice@localhost")
    page.wait("alice@localhost")
    page.type(Keys.ENTER)  # no password yet: the form says so and moves to the password
    page.wait("server, address and password are all needed")
    page.type(PASSWORD, Keys.ENTER)
    page.wait("Lunch?")  # the inbox
    page.type(Keys.ENTER)
    page.wait("At noon, at the usual place.")  # the message
    page.type("r")
    page.wait("Re: Lunch?")  # the reply, its body focused
    page.type("Noon works for me.")
    page.wait("Noon works for me.")
    page.type(Keys.CONTROL, "s")
    page.wait("Sent to bob@localhost")

    with Client(url, "bob@localhost", PASSWORD) as bob:
        wait_for(
            lambda: any(h.subject == "Re: Lunch?" for h in bob.list_headers().headers),
            "the reply in bob's inbox",
        )
        header = next(h for h in bob.list_headers().headers if h.subject == "Re: Lunch?")
        message = bob.retrieve(header.id)
    assert message.sender == "alice@localhost"
    assert "Noon works for me." in message.body
    assert not client_toml.exists()  # a browser sign-in saves no account on the web host
    with Client(url, "alice@localhost", PASSWORD) as alice:
        assert [h.seen for h in alice.list_headers().headers if h.subject == "Lunch?"] == [True]


def test_web_refuses_a_public_address_without_tls(tmp_path: Path) -> None:
    result = subprocess.run(
        [wsemail_binary(), "web", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "wsemail: refusing to serve the client on 0.0.0.0 without TLS "
        "(give --tls-cert and --tls-key, or --insecure)"
    ]
    assert result.stdout == ""


def test_web_refuses_other_origins_and_host_names(web: tuple[str, str, Path]) -> None:
    _, page_url, _ = web
    port = page_url.rstrip("/").rsplit(":", 1)[1]
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    # another site's page opening a session (cross-site WebSocket hijacking)
    other = httpx.get(f"{page_url}ws", headers={**upgrade, "Origin": "http://evil.test"})
    assert other.status_code == 403 and "cross-origin" in other.text
    # no Origin at all (not a browser page of ours)
    assert httpx.get(f"{page_url}ws", headers=upgrade).status_code == 403
    # DNS rebinding: a name that is not loopback pointing at the loopback server
    rebound = httpx.get(page_url, headers={"Host": f"evil.test:{port}"})
    assert rebound.status_code == 421
    rebound_ws = httpx.get(
        f"{page_url}ws",
        headers={**upgrade, "Host": f"evil.test:{port}", "Origin": f"http://evil.test:{port}"},
    )
    assert rebound_ws.status_code == 403
    # still serving its own page, with no font fetched from elsewhere
    page = httpx.get(page_url)
    assert page.status_code == 200 and f"ws://127.0.0.1:{port}/ws" in page.text
    assert "googleapis" not in page.text


def test_web_over_tls_serves_the_page_and_a_wss_session(tmp_path: Path) -> None:
    ca, cert, key = make_tls_files(tmp_path)
    args = ["web", "--port", "0", "--tls-cert", str(cert), "--tls-key", str(key)]
    proc, page_url = _started(args, _env(tmp_path))
    try:
        assert page_url.startswith("https://127.0.0.1:")
        trust = ssl.create_default_context(cafile=str(ca))
        page = httpx.get(page_url, verify=trust)
        host = page_url.removeprefix("https://").rstrip("/")
        assert page.status_code == 200 and f"wss://{host}/ws" in page.text
        refused = httpx.get(
            f"{page_url}ws",
            verify=trust,
            headers={"Connection": "Upgrade", "Upgrade": "websocket", "Origin": f"http://{host}"},
        )
        assert refused.status_code == 403  # http:// is not this page's origin
    finally:
        _stop(proc)


def test_web_reports_a_missing_key_and_an_unreadable_certificate(tmp_path: Path) -> None:
    env = _env(tmp_path)
    for args, code, start in (
        (["--tls-cert", "c.pem"], 2, "wsemail: --tls-cert and --tls-key go together"),
        (
            ["--tls-cert", "no.pem", "--tls-key", "no.key"],
            1,
            "wsemail: cannot load the TLS certificate or key",
        ),
    ):
        result = subprocess.run(
            [wsemail_binary(), "web", "--port", "0", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            cwd=tmp_path,
        )
        assert result.returncode == code, result.stderr
        assert result.stderr.startswith(start) and len(result.stderr.splitlines()) == 1


def _children(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def test_web_runs_one_tui_per_connection_and_ends_it_with_the_connection(tmp_path: Path) -> None:
    import asyncio

    import aiohttp

    proc, page_url = _started(["web", "--port", "0"], _env(tmp_path))
    origin = page_url.rstrip("/")

    async def session(http: aiohttp.ClientSession) -> aiohttp.ClientWebSocketResponse:
        ws = await http.ws_connect(f"{page_url}ws?width=80&height=24", origin=origin)
        await ws.send_json(["resize", {"width": 80, "height": 24}])
        drawn = b""
        while b"Sign in to your wsemail server" not in drawn:  # its own sign-in form
            message = await asyncio.wait_for(ws.receive(), 30)
            assert message.type == aiohttp.WSMsgType.BINARY, message
            drawn += message.data
        return ws

    async def drive() -> None:
        async with aiohttp.ClientSession() as http:
            first = await session(http)
            one = _children(proc.pid)
            second = await session(http)
            both = _children(proc.pid)
            assert len(one) == 1 and len(both) == 2 and one < both
            await first.close()  # the tab closes: its TUI ends, the other goes on
            await asyncio.to_thread(wait_for, lambda: _children(proc.pid) == both - one, "exit")
            reader = asyncio.create_task(second.receive())  # answers the server's close
            proc.terminate()  # stopping `wsemail web` ends the sessions still open
            assert await asyncio.to_thread(proc.wait, 30) == 0
            await reader
            await asyncio.to_thread(
                wait_for,
                lambda: not any(Path(f"/proc/{p}").exists() for p in both),
                "the TUI processes to end",
            )

    try:
        asyncio.run(drive())
    finally:
        _stop(proc)
