"""`wsemail demo`: a federation root, two domains (a.test and b.test) on loopback ports with
users, one signed message from alice@a.test to bob@b.test, read back with its verified
signature, and one end-to-end encrypted message between them — the first thing a newcomer
runs. `--serve` keeps both servers up and writes a client.toml with an account per demo
user (server, trust roots, the other domain's directory route, a password_command), so the
ordinary CLI works on them with nothing to export; `--state FILE` writes the same as JSON."""

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
        typer.echo(encrypted_demo(url, passwords, root_pem))
        client_toml = write_client_config(directory, url, passwords, root_pem)
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
                        "directory_routes": url,
                        "client_config": str(client_toml),
                    },
                    indent=2,
                )
                + "\n"
            )
            typer.echo(f"demo: servers and users written to {state}")
        if serve:
            typer.echo(
                "demo: serving until Ctrl-C; the demo's accounts are in "
                f"{client_toml}, for example:\n"
                f"  WSEMAIL_CLIENT_CONFIG={shlex.quote(str(client_toml))} {command()} list "
                "--account bob@b.test\n"
                f"  WSEMAIL_CLIENT_CONFIG={shlex.quote(str(client_toml))} {command()} send "
                "--account alice@a.test --to bob@b.test --body hi"
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


def encrypted_demo(url: dict[str, str], passwords: dict[str, str], root_pem: Path) -> str:
    """alice@a.test and bob@b.test get certificates from their servers; alice encrypts to
    bob, whose certificate her client fetched from b.test's directory and checked; bob
    opens it. Returns the line that says so."""
    from wsemail.client.mail import Client
    from wsemail.client.usercerts import (
        ENCRYPTED_SUBJECT,
        Directory,
        new_private_key,
        open_sealed,
        request_certificate,
        send_encrypted,
    )

    with (
        Client(url["a.test"], "alice@a.test", passwords["alice@a.test"]) as alice,
        Client(url["b.test"], "bob@b.test", passwords["bob@b.test"], trust_roots=[root_pem]) as bob,
        Directory([root_pem], url) as directory,
    ):
        alice_key = request_certificate(alice, new_private_key())
        bob_key = request_certificate(bob, new_private_key())
        send_encrypted(
            alice,
            alice_key,
            directory,
            ["bob@b.test"],
            "Encrypted from a.test",
            "Only bob@b.test can read this; the servers stored ciphertext.",
        )
        deadline = time.monotonic() + 30
        while not (
            found := [h for h in bob.list_headers().headers if h.subject == ENCRYPTED_SUBJECT]
        ):
            if time.monotonic() > deadline:
                raise typer.Exit(3)
            time.sleep(0.1)
        _, message = bob.verify(bob.retrieve(found[0].id))
        opened = open_sealed(message, bob_key, directory)
    return (
        f"demo: bob@b.test opened {opened.subject!r}, end-to-end encrypted and signed by "
        f"{opened.signer} ✓ (the servers relayed and stored ciphertext only)"
    )


def write_client_config(
    directory: Path, url: dict[str, str], passwords: dict[str, str], root_pem: Path
) -> Path:
    """A client.toml with an account per demo user; each password in a 0600 file that the
    account's password_command reads (no keyring, nothing to export)."""
    from wsemail.client import session

    secrets_dir = directory / "passwords"
    secrets_dir.mkdir(mode=0o700, exist_ok=True)
    routes = tuple(sorted(url.items()))
    config = session.ClientConfig()
    for address, password in passwords.items():
        secret = secrets_dir / address
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(password + "\n")
        account = session.Account(
            address,
            url[address.rpartition("@")[2]],
            address,
            (str(root_pem),),
            password_command=f"cat '{secret}'",
            directory_routes=routes,
        )
        config = config.with_account(account, make_default=address == "bob@b.test")
    return session.save_accounts(config, directory / "client.toml")


def register(app: typer.Typer) -> None:
    app.command()(demo)
