"""Issue 6's rejections through the real `wsemail` binary against a real TLS server on
loopback. Wheels: the reader's `forms show --yes` fetches a published wheel that is
tampered, signed by an untrusted publisher, signed with the signature file of another
wheel, holds a zip entry escaping the target folder or a RECORD that does not match, and
`forms install` of a version older than the installed one; each is one line on stderr,
nothing is installed, and the server still answers. Approvals: by someone not on the
route, out of order, twice, copied onto another form or another version, and a delegation
loop; each is refused with nothing sent or stored, and the server still answers."""

from __future__ import annotations

import copy
import io
import json
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree
from test_federation import Federation, start_domain
from test_forms_workflow import World, dist  # noqa: F401  (dist: a fixture)

from wsemail.core.forms import FormDocument, wheels
from wsemail.pki import create_root, write_crl
from wsemail.server.accounts import set_user

from conftest import PASSWORD, Running

FORMS = Path(__file__).resolve().parent.parent / "forms"
ITEMS = [{"description": "chair", "quantity": 2, "unit_price": "250"}]
REQUISITION = "wsemail_requisition-1.0.0-py3-none-any.whl"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, dist: Path) -> Iterator[World]:  # noqa: F811
    """One TLS domain; admin signs and publishes the first-party wheels through the CLI;
    carol has the requisition plug-in installed (she fills forms in)."""
    tmp = tmp_path_factory.mktemp("rejections")
    ca = tmp / "ca"
    create_root(ca)
    write_crl(ca)
    running = start_domain(tmp, ca, "a.test")
    for name in ("pat", "dave"):
        set_user(running.controller.server.store, "a.test", f"{name}@a.test", PASSWORD)
    world = World(Federation(ca, {"a.test": running}), None, tmp)  # type: ignore[arg-type]
    (tmp / "dist").mkdir()
    for wheel in dist.glob("*.whl"):
        shutil.copyfile(wheel, tmp / "dist" / wheel.name)
        world.run("admin@a.test", "forms", "sign", str(tmp / "dist" / wheel.name))
        world.run("admin@a.test", "forms", "publish", str(tmp / "dist" / wheel.name))
    world.run("carol@a.test", "forms", "install", str(tmp / "dist" / REQUISITION))
    yield world
    running.stop()


def server(world: World) -> Running:
    return world.fed.servers["a.test"]


def stored(world: World) -> int:
    return server(world).count("SELECT count(*) FROM messages")


def inbox_size(world: World, user: str) -> int:
    out = world.run(user, "list", "--json").stdout
    return len([line for line in out.splitlines() if line.strip()])


def send_form(world: World, route: list[dict[str, object]], to: list[str], wheel: Path) -> str:
    """carol sends a requisition naming `wheel` (location and SHA-256) with `route`; the id
    of the copy in the first recipient's inbox."""
    before = inbox_size(world, to[0])
    draft = world.tmp / "draft.json"
    data = {"requester": "carol@a.test", "department": "OS", "items": ITEMS}
    draft.write_text(
        json.dumps({"form": "requisition", "data": data, "route": route, "wheel": str(wheel)})
    )
    world.run("carol@a.test", "send", "--form", str(draft), *(f"--to={a}" for a in to))
    return world.wait_message(to[0], before + 1)


def one_line_error(result: object, *fragments: str) -> None:
    assert getattr(result, "returncode", 0) != 0
    stderr = str(getattr(result, "stderr", ""))
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    for fragment in fragments:
        assert fragment in stderr, stderr


# wheels ---------------------------------------------------------------------------------
def rezip(data: bytes, change: dict[str, bytes]) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    files = {i.filename: src.read(i) for i in src.infolist()}
    files.update(change)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, content in files.items():
            z.writestr(name, content)
    return out.getvalue()


def with_record(data: bytes, name: str, content: bytes) -> bytes:
    """`data` plus entry `name`, listed in RECORD with its true hash and size."""
    record = "wsemail_requisition-1.0.0.dist-info/RECORD"
    listed = zipfile.ZipFile(io.BytesIO(data)).read(record).decode()
    digest = wheels._b64_digest(content)
    return rezip(
        data, {name: content, record: f"{listed}{name},{digest},{len(content)}\n".encode()}
    )


def bad_wheel(world: World, case: str) -> Path:
    """Publish (as admin, through the CLI) a requisition wheel that must be refused."""
    good = world.tmp / "dist" / REQUISITION
    folder = world.tmp / "bad" / case
    folder.mkdir(parents=True)
    wheel = folder / REQUISITION
    data = good.read_bytes()
    signer = "admin@a.test"
    if case == "tampered":  # the publisher signed the real wheel; these bytes differ
        wheel.write_bytes(rezip(data, {"wsemail_requisition/__init__.py": b"import os\n"}))
        shutil.copyfile(good.with_name(REQUISITION + ".sig"), folder / (REQUISITION + ".sig"))
    elif case == "other-signature":  # the timesheet's signature file beside this wheel
        wheel.write_bytes(data)
        other = next((world.tmp / "dist").glob("wsemail_timesheet-*.whl.sig"))
        shutil.copyfile(other, folder / (REQUISITION + ".sig"))
    else:
        if case == "untrusted":
            wheel.write_bytes(data)
            signer = "carol@a.test"  # a valid certificate, not a trusted publisher
        elif case == "escape":
            wheel.write_bytes(with_record(data, "../../escaped.py", b"print('out')\n"))
        elif case == "record":
            wheel.write_bytes(rezip(data, {"wsemail_requisition/__init__.py": b"import os\n"}))
        world.run(signer, "forms", "sign", str(wheel))
    world.run("admin@a.test", "forms", "publish", str(wheel))
    world.genuine_published = False  # type: ignore[attr-defined]
    return wheel


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("tampered", "differs from the signed one"),
        ("untrusted", "not a trusted form publisher"),
        ("other-signature", "signature is for"),
        ("escape", "escapes the target folder"),
        ("record", "RECORD mismatch"),
    ],
)
def test_a_bad_wheel_is_refused_by_the_reader_and_nothing_is_installed(
    world: World, case: str, says: str
) -> None:
    wheel = bad_wheel(world, case)
    got = send_form(
        world, [{"role": "manager", "approvers": ["bob@a.test"]}], ["bob@a.test"], wheel
    )
    forms_dir = world.tmp / "homes" / "bob@a.test" / "forms"
    one_line_error(world.run("bob@a.test", "forms", "show", got, "--yes", check=False), says)
    assert not forms_dir.exists() or not any(forms_dir.iterdir())  # nothing unpacked or kept
    assert not (world.tmp / "homes" / "bob@a.test" / "escaped.py").exists()
    assert not list(world.tmp.rglob("escaped.py"))
    assert inbox_size(world, "bob@a.test") >= 1  # the server still answers


def test_an_older_version_than_the_installed_one_is_refused(world: World) -> None:
    source = world.tmp / "requisition-1.1"
    shutil.copytree(FORMS / "requisition", source)
    for path in (source / "pyproject.toml", source / "wsemail_requisition" / "__init__.py"):
        path.write_text(path.read_text().replace('"1.0.0"', '"1.1.0"'))
    newer = wheels.build(source, world.tmp / "newer")
    world.run("admin@a.test", "forms", "sign", str(newer))
    world.run("dave@a.test", "forms", "install", str(newer))
    registry = world.tmp / "homes" / "dave@a.test" / "forms" / "registry.json"
    before = registry.read_text()
    older = world.tmp / "dist" / REQUISITION
    one_line_error(
        world.run("dave@a.test", "forms", "install", str(older), check=False),
        "not newer than the installed 1.1.0",
    )
    assert registry.read_text() == before
    folders = sorted(p.name for p in registry.parent.iterdir())
    assert folders == ["registry.json", "wsemail_requisition-1.1.0"]
    assert inbox_size(world, "dave@a.test") == 0  # the server still answers; nothing arrived


# approvals ------------------------------------------------------------------------------
def refused_act(world: World, user: str, *args: str, says: str) -> None:
    """`wsemail forms ARGS` as `user` is refused: one line, nothing sent or stored."""
    before = stored(world)
    one_line_error(world.run(user, "forms", *args, check=False), says)
    assert stored(world) == before
    assert inbox_size(world, user) >= 1  # the server still answers


def look(world: World, user: str, message: str) -> None:
    """`user` looks at the form (fetching its plug-in the first time) before signing."""
    seen: set[str] = world.__dict__.setdefault("seen", set())
    if user not in seen:
        world.run(user, "forms", "show", message, "--yes")
        seen.add(user)


def wheel(world: World) -> Path:
    """The genuine requisition wheel, published again (the bad-wheel tests above replaced
    it on the server): approvers fetch it to see the form before they sign."""
    good = world.tmp / "dist" / REQUISITION
    if not getattr(world, "genuine_published", False):
        world.run("admin@a.test", "forms", "publish", str(good))
        world.genuine_published = True  # type: ignore[attr-defined]
    return good


MANAGER = {"role": "manager", "approvers": ["bob@a.test"]}
PURCHASING = {"role": "purchasing", "approvers": ["pat@a.test"]}


def test_an_approval_by_someone_not_on_the_route_is_refused(world: World) -> None:
    got = send_form(world, [MANAGER], ["dave@a.test"], wheel(world))
    refused_act(world, "dave@a.test", "approve", got, says="not on the route")


def test_an_approval_out_of_order_is_refused(world: World) -> None:
    got = send_form(world, [MANAGER, PURCHASING], ["pat@a.test", "bob@a.test"], wheel(world))
    refused_act(world, "pat@a.test", "approve", got, says="out of order")


def test_approving_twice_is_refused(world: World) -> None:
    route = [MANAGER, {"role": "director", "approvers": ["bob@a.test", "pat@a.test"]}]
    got = send_form(world, route, ["bob@a.test"], wheel(world))
    before = inbox_size(world, "bob@a.test")
    look(world, "bob@a.test", got)
    out = world.run("bob@a.test", "forms", "approve", got).stdout
    assert "sent to bob@a.test, pat@a.test" in out
    again = world.wait_message("bob@a.test", before + 1)
    refused_act(world, "bob@a.test", "approve", again, says="approved this form twice")


def test_rejecting_a_step_already_approved_is_refused_by_the_server(world: World) -> None:
    """bob approves a form, then rejects the same message: his server refuses to stamp a
    second decision on the same step, so nothing is sent."""
    got = send_form(world, [MANAGER, PURCHASING], ["bob@a.test"], wheel(world))
    look(world, "bob@a.test", got)
    assert "sent to pat@a.test" in world.run("bob@a.test", "forms", "approve", got).stdout
    refused_act(world, "bob@a.test", "reject", got, says="already acted on step 1")


def test_a_delegation_loop_is_refused(world: World) -> None:
    got = send_form(world, [MANAGER], ["bob@a.test"], wheel(world))
    before = inbox_size(world, "dave@a.test")
    look(world, "bob@a.test", got)
    world.run("bob@a.test", "forms", "delegate", got, "dave@a.test")
    at_dave = world.wait_message("dave@a.test", before + 1)
    refused_act(world, "dave@a.test", "delegate", at_dave, "bob@a.test", says="delegation loop")


def approved(world: World, route: list[dict[str, object]]) -> FormDocument:
    """A requisition bob approved (step 1 of `route`), as pat receives it."""
    got = send_form(world, route, ["bob@a.test"], wheel(world))
    before = inbox_size(world, "pat@a.test")
    look(world, "bob@a.test", got)
    world.run("bob@a.test", "forms", "approve", got)
    at_pat = world.wait_message("pat@a.test", before + 1)
    body = json.loads(world.run("pat@a.test", "retrieve", "--json", at_pat).stdout)["body"]
    return FormDocument.parse(body)


def forge(world: World, doc: FormDocument, to: str) -> str:
    """carol sends a doctored form document as a plain message; its id at `to`."""
    before = inbox_size(world, to)
    body = world.tmp / "forged.xml"
    body.write_bytes(doc.to_bytes())
    world.run("carol@a.test", "send", "--to", to, "--body-file", str(body), "-s", "forged")
    return world.wait_message(to, before + 1)


@pytest.mark.timeout(300)  # some twenty CLI runs; slow on a busy 2-core machine
def test_an_approval_copied_onto_another_form_or_version_is_refused(world: World) -> None:
    signed = approved(world, [MANAGER, PURCHASING])
    # copied onto another form: bob's act on a form he never saw
    got = send_form(world, [MANAGER, PURCHASING], ["dave@a.test"], wheel(world))
    body = json.loads(world.run("dave@a.test", "retrieve", "--json", got).stdout)["body"]
    other = FormDocument.parse(body)
    [(act, stamp)] = signed.entries()  # bob's act with its server's stamp
    other.append_act(copy.deepcopy(act))
    assert stamp is not None
    other.append_stamp(copy.deepcopy(stamp))
    forged = world.tmp / "copied.xml"
    forged.write_bytes(other.to_bytes())
    root = ("--root", str(world.fed.ca / "root.pem"), "--crl", str(world.fed.ca / "crl.pem"))
    one_line_error(
        world.run("pat@a.test", "forms", "verify", str(forged), *root, check=False),
        "another form",
    )
    refused_act(world, "pat@a.test", "approve", forge(world, other, "pat@a.test"), says="another")
    # copied onto another version: the same form with its data, or its plug-in version, changed
    changes = {"data": "does not cover", "version": "made for another form or version"}
    for change, says in changes.items():
        doc = FormDocument.parse(signed.to_bytes())
        if change == "data":
            node = doc.data.find("{urn:wsemail:forms:requisition:1}department")
            assert node is not None
            node.text = "Facilities"
        else:
            plugin = doc.root.find("{urn:wsemail:forms}Plugin")
            assert plugin is not None
            plugin.set("version", "1.0.1")
        forged.write_bytes(etree.tostring(doc.root))
        one_line_error(
            world.run("pat@a.test", "forms", "verify", str(forged), *root, check=False), says
        )
        refused_act(world, "pat@a.test", "approve", forge(world, doc, "pat@a.test"), says=says)
    # the genuine one still verifies and pat may sign it
    forged.write_bytes(signed.to_bytes())
    out = world.run("pat@a.test", "forms", "verify", str(forged), *root).stdout
    assert "step 1 manager: bob@a.test approved" in out and "waiting for step 2" in out
