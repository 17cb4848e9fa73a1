"""`wsemail demo`: a federation root, two domains (a.test and b.test) on loopback ports with
users, and one signed message from alice@a.test to bob@b.test, read back with its verified
signature — the first thing a newcomer runs. `--serve --state FILE` keeps both servers up
and writes where they are, for the ordinary CLI."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import typer

DOMAINS = ("a.test", "b.test")
USERS = {"a.test": ("alice", "carol"), "b.test": ("bob", "dave")}


def command() -> str:
    """This same wsemail as a new terminal can run it, for the commands the demos print:
    `wsemail` when PATH finds it outside this environment's own bin folder (an install
    linked into ~/.local/bin or /usr/local/bin), else the absolute path of the running
    script (`.venv/bin/wsemail` is on no new terminal's PATH, activated here or not), or
    `python -m wsemail.cli`."""
    argv0 = sys.argv[0]
    if argv0.endswith(".py"):  # python -m wsemail.cli
        return f"{shlex.quote(sys.executable)} -m wsemail.cli"
    found = argv0 if os.sep in argv0 else shutil.which(argv0)
    me = Path(found or argv0).absolute()
    on_path = shutil.which("wsemail")
    if (
        on_path is not None
        and Path(on_path).resolve() == me.resolve()
        and Path(on_path).absolute().parent != Path(sys.prefix, "bin").absolute()
    ):
        return "wsemail"
    return shlex.quote(str(me))


def demo(
    serve: bool = typer.Option(False, "--serve", help="keep both servers running"),
    state: Path | None = typer.Option(None, "--state", help="write servers and users as JSON"),
    directory: Path | None = typer.Option(None, "--dir", help="where to keep the demo's data"),
) -> None:
    """Two federated domains on loopback and a signed message between them."""
    from wsemail.client.mail import Client
    from wsemail.core.routing import StaticResolver
    from wsemail.pki import create_root, issue_server, write_crl
    from wsemail.server.accounts import set_user
    from wsemail.server.config import load_config
    from wsemail.server.controller import ServerController

    temp = None
    if directory is None:
        temp = tempfile.TemporaryDirectory(prefix="wsemail-demo-")
        directory = Path(temp.name)
    ca = directory / "ca"
    create_root(ca, name="wsemail demo root")
    write_crl(ca)
    root_pem = ca / "root.pem"
    controllers: dict[str, ServerController] = {}
    passwords: dict[str, str] = {}
    try:
        for domain in DOMAINS:
            data = directory / domain
            issue_server(ca, domain, data / "federation")
            # a real config file, so `wsemail user add --data-dir` works on it while it runs
            (data / "server.toml").write_text(
                f'domain = "{domain}"\n[federation]\nidentity = "federation"\n'
                f'trust_roots = ["{root_pem}"]\ncrls = ["{ca / "crl.pem"}"]\n'
                "[queue]\nretry_base = 1\nretry_max = 5\n",
                encoding="utf-8",
            )
            config = load_config(None, data, port=0)
            controller = ServerController(config)
            for name in USERS[domain]:
                address = f"{name}@{domain}"
                passwords[address] = secrets.token_urlsafe(9)
                set_user(controller.server.store, domain, address, passwords[address])
            controllers[domain] = controller.start()
        routes = {d: [c.url] for d, c in controllers.items()}
        for controller in controllers.values():
            assert controller.server.federation is not None
            controller.server.federation.resolver = StaticResolver(routes)
        url = {d: c.url for d, c in controllers.items()}
        with Client(url["a.test"], "alice@a.test", passwords["alice@a.test"]) as alice:
            alice.send(
                ["bob@b.test"],
                "Hello from a.test",
                "This message was signed by a.test's server and checked by yours.",
            )
        typer.echo(f"demo: a.test at {url['a.test']}, b.test at {url['b.test']}")
        typer.echo("demo: alice@a.test sent bob@b.test a message; a.test's server signed it")
        with Client(
            url["b.test"], "bob@b.test", passwords["bob@b.test"], trust_roots=[root_pem]
        ) as bob:
            deadline = time.monotonic() + 30
            while not (headers := bob.list_headers().headers):
                if time.monotonic() > deadline:
                    raise typer.Exit(3)
                time.sleep(0.1)
            proof, message = bob.verify(bob.retrieve(headers[0].id))
        typer.echo(f"demo: bob@b.test's inbox: {message.subject!r} from {message.sender} — {proof}")
        if state is not None:
            state.write_text(
                json.dumps(
                    {
                        "domains": {
                            d: {"server": url[d], "data_dir": str(directory / d)} for d in DOMAINS
                        },
                        "users": {
                            a: {"server": url[a.rpartition("@")[2]], "password": p}
                            for a, p in passwords.items()
                        },
                        "trust_roots": str(root_pem),
                    },
                    indent=2,
                )
                + "\n"
            )
            typer.echo(f"demo: servers and users written to {state}")
        if serve:
            typer.echo(
                "demo: serving until Ctrl-C; for example:\n"
                f"  WSEMAIL_SERVER={url['b.test']} WSEMAIL_USER=bob@b.test "
                f"WSEMAIL_PASSWORD={passwords['bob@b.test']} "
                f"WSEMAIL_TRUST_ROOTS={shlex.quote(str(root_pem))} {command()} list"
            )
            stop = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            stop.wait()
    finally:
        for controller in controllers.values():
            controller.stop()
        if temp is not None:
            temp.cleanup()


def register(app: typer.Typer) -> None:
    app.command()(demo)
