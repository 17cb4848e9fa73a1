"""`wsemail forms …`: build, sign and publish form plug-ins; show, approve, reject and
delegate received forms; verify an approval chain offline."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from lxml import etree

from wsemail.client import session
from wsemail.protocol.errors import UsageError

if TYPE_CHECKING:
    from wsemail.client.mail import Client
    from wsemail.core.forms import FormPlugin, PluginRef

app = typer.Typer(help="client form plug-ins and routed workflows", no_args_is_help=True)
ServerOpt = typer.Option(None, "--server", help="server URL (or WSEMAIL_SERVER)")
UserOpt = typer.Option(None, "--user", help="your address (or WSEMAIL_USER)")


def _publishers() -> list[str]:
    from wsemail.client.forms import workflow

    return workflow.trusted_publishers()


@app.command()
def build(source: Path, out: Path = typer.Option(Path("dist"), "--out")) -> None:
    """Build the wheel of a form distribution."""
    from wsemail.core.forms import wheels

    typer.echo(wheels.build(source, out))


@app.command()
def sign(
    wheel: Path,
    replace: bool = typer.Option(
        False, "--replace", help="sign over an existing WHEEL.sig (someone else's too)"
    ),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Sign a wheel (name, version, SHA-256) with a certificate from your server, which
    stamps the signature. An existing WHEEL.sig is never overwritten without --replace."""
    from wsemail.client.attachments import Attachments
    from wsemail.client.forms import workflow
    from wsemail.core.forms import wheels

    existing = wheel.with_name(wheel.name + ".sig")
    if existing.exists() and not replace:
        by = wheels.claimed_publisher(existing)
        raise UsageError(f"{existing} exists (signed by {by}); pass --replace to sign over it")
    if existing.exists():
        typer.echo(f"replacing the signature by {wheels.claimed_publisher(existing)}", err=True)
    with session.open_client(server, user) as client:
        token = Attachments(client).token()
        path = wheels.sign(
            wheel,
            token.key,
            token.cert,
            token.issuer,
            countersign=lambda signed: workflow.countersign(client, token, signed),
        )
    typer.echo(path)


@app.command()
def publish(wheel: Path, server: str | None = ServerOpt, user: str | None = UserOpt) -> None:
    """Publish a signed wheel (WHEEL and WHEEL.sig) on your server (administrators)."""
    from wsemail.protocol.soap import element, q

    sig = wheel.with_name(wheel.name + ".sig")
    if not wheel.is_file() or not sig.is_file():
        raise UsageError(f"need {wheel} and {sig} (run 'wsemail forms sign' first)")
    op = etree.Element(q("Publish"))
    element(op, "File", wheel.name)
    element(op, "Wheel", base64.b64encode(wheel.read_bytes()).decode())
    element(op, "Signature", base64.b64encode(sig.read_bytes()).decode())
    with session.open_client(server, user) as client:
        client.extension("forms", op)
    typer.echo(f"published {wheel.name}")


@app.command()
def install(wheel: Path, server: str | None = ServerOpt, user: str | None = UserOpt) -> None:
    """Verify a signed wheel (WHEEL and WHEEL.sig) against your trusted publishers
    (WSEMAIL_FORM_PUBLISHERS) and the federation roots, and install it for yourself."""
    from wsemail.client.forms import workflow
    from wsemail.core.forms import wheels

    sig = wheel.with_name(wheel.name + ".sig")
    try:
        data, signature = wheel.read_bytes(), sig.read_bytes()
    except OSError as exc:
        raise UsageError(f"need {wheel} and {sig}: {exc.strerror}") from exc
    with session.open_client(server, user) as client:
        roots, crls = workflow.trust_material(client)
    record = wheels.install(
        wheel.name, data, signature, roots=roots, crls=crls, publishers=_publishers()
    )
    typer.echo(f"installed {record.name} {record.version} (published by {record.publisher})")


@app.command()
def autofill(server: str | None = ServerOpt, user: str | None = UserOpt) -> None:
    """Print your employee record from your server (the timesheet's "Autofill…") as JSON,
    asked for with your federated identity certificate."""
    import json

    with session.open_client(server, user) as client:
        typer.echo(json.dumps(_autofilled(client), sort_keys=True))


def _autofilled(client: Client) -> dict[str, str]:
    from wsemail.client.forms import workflow

    return workflow.autofill(client)


def _plugin_for(client: Client, ref: PluginRef, sender: str, yes: bool) -> FormPlugin:
    from wsemail.client.forms import load, workflow
    from wsemail.protocol.errors import PluginError

    try:
        return load(ref.name, ref.version)
    except PluginError:
        if not yes:
            raise UsageError(
                f"form plug-in {ref.name} {ref.version} is not installed; "
                "rerun with --yes to fetch, verify and install it"
            ) from None
        tls_name = workflow.configured_tls_name()
        workflow.fetch_plugin(client, ref, _publishers(), sender=sender, tls_name=tls_name)
        return load(ref.name, ref.version)


@app.command()
def show(
    message_id: str,
    yes: bool = typer.Option(False, "--yes", help="fetch and install a missing plug-in"),
    as_json: bool = typer.Option(False, "--json"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Render a received form and where its approval chain stands."""
    from wsemail.client.forms import workflow
    from wsemail.core.forms import approvals

    with session.open_client(server, user) as client:
        received = workflow.receive(client, message_id)
        plugin = _plugin_for(client, received.doc.plugin, received.doc.sender, yes)
        data = plugin.from_xml(received.doc.data)
        roots, crls = workflow.trust_material(client)
        chain = approvals.verify(received.doc, roots, crls)
    typer.echo(plugin.to_json(data) if as_json else plugin.render_text(data))
    for entry in chain.entries:
        typer.echo(str(entry))
    typer.echo(f"status: {chain.status}")


def _act(kind: str, message_id: str, delegate: str, server: str | None, user: str | None) -> None:
    from wsemail.client.forms import workflow

    with session.open_client(server, user) as client:
        entry, chain, to = workflow.act(client, message_id, kind, delegate=delegate)
    typer.echo(f"{entry}; sent to {', '.join(to)} ({chain.status})")


@app.command()
def approve(message_id: str, server: str | None = ServerOpt, user: str | None = UserOpt) -> None:
    """Sign off the form and send it to the next step."""
    _act("approve", message_id, "", server, user)


@app.command()
def reject(message_id: str, server: str | None = ServerOpt, user: str | None = UserOpt) -> None:
    """Reject the form (signed) and send it back to its sender."""
    _act("reject", message_id, "", server, user)


@app.command()
def delegate(
    message_id: str, address: str, server: str | None = ServerOpt, user: str | None = UserOpt
) -> None:
    """Let ADDRESS sign this step instead of you (signed; loops are refused)."""
    _act("delegate", message_id, address, server, user)


@app.command()
def verify(
    file: Path,
    roots: list[Path] = typer.Option(
        [], "--root", help="federation root (else WSEMAIL_TRUST_ROOTS)"
    ),
    crls: list[Path] = typer.Option([], "--crl", help="CRL of a root or issuing CA"),
) -> None:
    """Check a form's whole approval chain offline; list who approved what, when, as what."""
    from wsemail.core.forms import FormDocument, approvals
    from wsemail.pki import read_cert, read_crl

    root_files = roots or session.trust_roots()
    if not root_files:
        raise UsageError("give --root (or set WSEMAIL_TRUST_ROOTS)")
    try:
        doc = FormDocument.parse(file.read_bytes())
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc}") from exc
    chain = approvals.verify(doc, [read_cert(p) for p in root_files], [read_crl(p) for p in crls])
    typer.echo(f"{doc.form_id} ({doc.plugin.name} {doc.plugin.version}) from {doc.sender}")
    for entry in chain.entries:
        typer.echo(str(entry))
    typer.echo(f"status: {chain.status}")


def send_form(path: Path, to: list[str], subject: str, server: str | None, user: str | None) -> str:
    """`wsemail send --form FILE.json`: validate with the plug-in, then send (to `to`, or
    without it to the route's first step's approvers); warns when recipients may not be
    able to fetch the plug-in."""
    from wsemail.client.forms import load, workflow
    from wsemail.protocol.message import Draft

    raw = workflow.read_json(path)
    plugin = load(str(raw.get("form", "")))
    with session.open_client(server, user) as client:
        draft = workflow.attach_form(
            Draft(to=list(to), subject=subject),
            plugin,
            raw,
            sender=client.username,
            server=client.server,
            autofilled=lambda: _autofilled(client),
        )
        warning = workflow.unreachable_plugin(plugin, raw, client.server)
        if warning:
            typer.echo(f"wsemail: warning: {warning}", err=True)
        return client.send(draft.to, draft.subject, draft.body, cc=draft.cc).id


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="forms")
