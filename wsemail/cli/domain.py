"""`wsemail domain dns`: the DNS records a domain publishes so that wsemail servers and
legacy mail servers find it and trust its mail (DKIM key, SPF, `_wsemail._tcp` SRV, MX).
Reads (or, on first use, makes) the domain's DKIM key under the server's data dir."""

from __future__ import annotations

from pathlib import Path

import typer

from wsemail.server.config import load_config
from wsemail.server.smtp import dkim_keys

app = typer.Typer(help="What a domain publishes in DNS.", no_args_is_help=True)


@app.callback()
def domain() -> None:
    """What a domain publishes in DNS."""


@app.command()
def dns(
    config: Path | None = typer.Option(None, "--config", help="server config (TOML)"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="the server's data dir"),
    domain: str | None = typer.Option(None, "--domain", help="mail domain served"),
    host: str | None = typer.Option(None, "--host", help="the server's DNS name (mail.DOMAIN)"),
    port: int = typer.Option(443, "--port", help="the wsemail port published in SRV"),
    smtp_ip: str | None = typer.Option(None, "--smtp-ip", help="IPv4 the server sends from"),
    selector: str = typer.Option(dkim_keys.DEFAULT_SELECTOR, "--selector", help="DKIM selector"),
    node: list[str] = typer.Option(
        [],
        "--node",
        help="one of several servers of the domain, HOST[:PORT[:PRIORITY[:WEIGHT]]] "
        "(repeat; priority and weight default to 10)",
    ),
) -> None:
    """Print zone-file lines: DKIM TXT, SPF TXT, _wsemail._tcp SRV and MX."""
    try:
        nodes = [dkim_keys.parse_node(n, port) for n in node]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--node") from exc
    cfg = load_config(config, data_dir, domain=domain)
    key = dkim_keys.ensure_key(cfg.data_dir, cfg.domain, selector)
    for line in dkim_keys.dns_records(
        cfg.domain, key, selector=selector, host=host, port=port, smtp_ip=smtp_ip, nodes=nodes
    ):
        typer.echo(line)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="domain")
