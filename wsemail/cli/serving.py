"""In charge of the process `wsemail serve` serves in. The command line parses the options
(typer, click and pydantic: 10 MB a server would keep to the end for nothing), then
executes the same command line again (same process id, arguments, standard streams) with
the parsed options in WSEMAIL_SERVE_OPTIONS; that run goes straight here, imports only the
server, and serves. Where the command cannot be executed again (`wsemail.cli.commands`
called from another program, or exec failing) it serves in the same process.

Nothing here imports typer: a refusal is the same line and exit code the command line
gives (`wsemail: …`).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsemail.protocol.errors import WsemailError

if TYPE_CHECKING:
    from wsemail.server.config import ServerConfig

OPTIONS = "WSEMAIL_SERVE_OPTIONS"
SUBMISSION = "smtp-submission"
PATHS = ("config", "data_dir", "tls_cert", "tls_key")
again = False  # set by `wsemail.cli.main`: this process is the `wsemail` command's own


def launch(options: dict[str, Any]) -> None:
    """Serve with `serve`'s parsed options: in a process executed again for it when this
    is the `wsemail` command's own process, else here."""
    if again:
        sys.stdout.flush()
        sys.stderr.flush()
        values = {k: str(v) if k in PATHS and v is not None else v for k, v in options.items()}
        env = {**os.environ, OPTIONS: json.dumps(values)}
        try:
            os.execve(sys.executable, sys.orig_argv, env)  # noqa: S606 -- this same command
        except OSError:
            pass  # serve here
    serve(**options)


def main() -> None:
    """The run executed again: the options from the environment (not passed on further)."""
    options = json.loads(os.environ.pop(OPTIONS))
    for key in PATHS:
        if options[key] is not None:
            options[key] = Path(options[key])
    try:
        serve(**options)
    except WsemailError as exc:
        print(f"wsemail: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(0)


def serve(
    *,
    config: Path | None,
    data_dir: Path | None,
    domain: str | None,
    host: str | None,
    port: int | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    smtp_port: int | None,
    submission_port: int | None,
    imap_port: int | None,
    imap_tls: str,
    store: str | None,
    workers: int,
    demo: bool,
    verbose: bool,
    log_format: str,
    log_level: str | None,
) -> None:
    """`wsemail serve` once its options are parsed (see `wsemail.cli.serve`)."""
    from wsemail.server.config import check_store_url, load_config
    from wsemail.server.controller import serve_forever, serve_workers
    from wsemail.server.operate import logs
    from wsemail.server.pipeline import PluginSpec

    level = (log_level or ("info" if verbose else "warning")).lower()
    try:
        logs.configure(log_format.lower(), level)
    except ValueError as exc:
        print(f"wsemail: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    cfg = load_config(
        config, data_dir, domain=domain, host=host, port=port, tls_cert=tls_cert, tls_key=tls_key
    )
    if store is not None:
        cfg.store_url = check_store_url(store)

    if smtp_port is not None:
        refs = {spec.ref for spec in cfg.plugins}
        if "smtp-inbound" not in refs:
            cfg.plugins.append(
                PluginSpec("smtp-inbound", 50, {"port": smtp_port, "host": cfg.host})
            )
        if "smtp-outbound" not in refs:
            cfg.plugins.append(PluginSpec("smtp-outbound", 60))
    if submission_port is not None:
        refs = {spec.ref for spec in cfg.plugins}
        if not refs & {SUBMISSION, "wsemail.server.smtp.plugins:SmtpSubmission"}:
            cfg.plugins.append(
                PluginSpec(SUBMISSION, 55, {"port": submission_port, "host": cfg.host})
            )
        if "smtp-outbound" not in refs:  # submitted mail may go to the Internet
            cfg.plugins.append(PluginSpec("smtp-outbound", 60))

    if imap_port is not None:
        refs = {spec.ref for spec in cfg.plugins}
        if not refs & {"imap", "wsemail.server.imap:Imap"}:
            options = {"port": imap_port, "host": cfg.host, "tls": imap_tls}
            cfg.plugins.append(PluginSpec("imap", 30, options))

    def ready(url: str) -> None:
        where = "the PostgreSQL store" if cfg.store_url else f"data in {cfg.data_dir}"
        many = f", {workers} workers" if workers > 1 else ""
        print(f"wsemail: serving {cfg.domain} at {url} ({where}{many})", flush=True)
        if demo:
            run_demo(url, cfg)

    if workers > 1:
        serve_workers(cfg, workers, on_ready=ready)
    else:
        serve_forever(cfg, on_ready=ready)


def run_demo(url: str, cfg: ServerConfig) -> None:
    """Two fresh demo accounts, one message between them, read back through the client."""
    from wsemail.cli.demo import command
    from wsemail.client.mail import Client
    from wsemail.server.accounts import set_user
    from wsemail.server.stores import open_store

    domain = cfg.domain
    store = open_store(cfg)
    suffix = secrets.token_hex(2)
    people = {name: secrets.token_urlsafe(9) for name in (f"alice{suffix}", f"bob{suffix}")}
    try:
        for name, password in people.items():
            set_user(store, domain, f"{name}@{domain}", password)
    finally:
        store.close()
    (alice, alice_pw), (bob, bob_pw) = people.items()
    with Client(url, f"{alice}@{domain}", alice_pw) as client:
        sent = client.send(
            [f"{bob}@{domain}"], "Hello from wsemail", "Signed, sealed, delivered over SOAP."
        )
    with Client(url, f"{bob}@{domain}", bob_pw) as client:
        header = client.list_headers().headers[0]
        message = client.retrieve(header.id)
    print(
        f"demo: {alice}@{domain} sent {sent.message_id}; {bob}@{domain} read "
        f"{message.subject!r} from {message.sender}",
        flush=True,
    )
    me = command()
    print(
        "demo: try it yourself in another terminal:\n"
        f"  export WSEMAIL_SERVER={url} WSEMAIL_USER={bob}@{domain} "
        f"WSEMAIL_PASSWORD={bob_pw}\n  {me} list && {me} retrieve {header.id}",
        flush=True,
    )
