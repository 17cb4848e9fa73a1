"""Issue 6 acceptance through the real `wsemail` binary: two TLS domains on loopback
(a.test, b.test), users acting only through the CLI; a requisition routed across the
domains with a delegation, verified offline, handed to a webhook; a timesheet rendered by
a recipient that fetches, verifies and installs the signed wheel on demand."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from test_federation import Federation, start_domain

from wsemail.core.forms import wheels
from wsemail.pki import create_root, write_crl
from wsemail.server.accounts import set_user
from wsemail.server.config import DEFAULT_PLUGINS
from wsemail.server.pipeline import PluginSpec

from conftest import PASSWORD, wait_for, wsemail_binary

FORMS = Path(__file__).resolve().parent.parent / "forms"
ITEMS_7500 = [{"description": "laptop", "quantity": 3, "unit_price": "2500"}]
ITEMS_500 = [{"description": "chair", "quantity": 2, "unit_price": "250"}]


class Hook:
    """A tiny HTTP server on loopback that records every POST body."""

    def __init__(self) -> None:
        posts: list[dict[str, object]] = []
        self.posts = posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                posts.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/forms-done"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@dataclass
class World:
    fed: Federation
    hook: Hook
    tmp: Path

    def env(self, user: str) -> dict[str, str]:
        domain = user.rpartition("@")[2]
        home = self.tmp / "homes" / user
        home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("WSEMAIL_")}
        env.update(
            WSEMAIL_SERVER=self.fed.servers[domain].url,
            WSEMAIL_USER=user,
            WSEMAIL_PASSWORD=PASSWORD,
            WSEMAIL_CACERT=str(self.fed.ca / "root.pem"),
            WSEMAIL_TLS_NAME=domain,
            WSEMAIL_TRUST_ROOTS=str(self.fed.ca / "root.pem"),
            WSEMAIL_FORM_PUBLISHERS="admin@a.test",
            WSEMAIL_FORMS_DIR=str(home / "forms"),
            WSEMAIL_CLIENT_CONFIG=str(home / "client.toml"),
            HOME=str(home),
            XDG_DATA_HOME=str(home / "data"),
            PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
        )
        return env

    def run(self, user: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [wsemail_binary(), *args],
            capture_output=True,
            text=True,
            env=self.env(user),
            timeout=120,
        )
        if check:
            assert result.returncode == 0, f"{user}: wsemail {' '.join(args)}: {result.stderr}"
        return result

    def wait_message(self, user: str, count: int) -> str:
        """The id of the newest message once `user` holds `count` of them."""
        found: list[dict[str, object]] = []

        def arrived() -> bool:
            out = self.run(user, "list", "--json").stdout
            found[:] = [json.loads(line) for line in out.splitlines() if line.strip()]
            return len(found) >= count

        wait_for(arrived, f"message {count} for {user}", timeout=30)
        return str(found[0]["id"])

    def draft(self, name: str, form: str, data: dict[str, object], route: object) -> Path:
        path = self.tmp / f"{name}.json"
        wheel = next((self.tmp / "dist").glob(f"wsemail_{form}-*.whl"))
        path.write_text(
            json.dumps({"form": form, "data": data, "route": route, "wheel": str(wheel)})
        )
        return path


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    for name in ("requisition", "timesheet"):
        wheels.build(FORMS / name, out)
    return out


@pytest.fixture
def world(tmp_path: Path, dist: Path) -> Iterator[World]:
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    hook = Hook()
    rule = {
        "form": "requisition",
        "field": "total",
        "above": "5000",
        "role": "purchasing",
        "approvers": ["pat@b.test"],
    }
    plugins = [
        *(spec for spec in DEFAULT_PLUGINS if spec.ref != "forms"),
        PluginSpec(
            "forms",
            40,
            {
                "rules": [rule],
                "webhook": hook.url,
                "employees": {"alice@a.test": {"employee": "Kevin Lux", "employee_id": "abc123"}},
            },
        ),
    ]
    servers = {
        "a.test": start_domain(tmp_path, ca, "a.test", plugins=plugins),
        "b.test": start_domain(tmp_path, ca, "b.test"),
    }
    for name in ("pat", "dave"):
        set_user(servers["b.test"].controller.server.store, "b.test", f"{name}@b.test", PASSWORD)
    fed = Federation(ca, servers)
    fed.route_all()
    (tmp_path / "dist").mkdir()
    for wheel in dist.glob("*.whl"):
        (tmp_path / "dist" / wheel.name).write_bytes(wheel.read_bytes())
    world = World(fed, hook, tmp_path)
    for wheel in sorted((tmp_path / "dist").glob("*.whl")):  # the publisher, through the CLI
        world.run("admin@a.test", "forms", "sign", str(wheel))
        world.run("admin@a.test", "forms", "publish", str(wheel))
    yield world
    for running in servers.values():
        running.stop()
    hook.stop()


def submit_requisition(world: World, name: str, items: list[dict[str, object]]) -> None:
    wheel = next((world.tmp / "dist").glob("wsemail_requisition-*.whl"))
    world.run("carol@a.test", "forms", "install", str(wheel))  # carol fills it in herself
    draft = world.draft(
        name,
        "requisition",
        {"requester": "carol@a.test", "department": "OS", "items": items},
        [{"role": "manager", "approvers": ["bob@a.test"]}],
    )
    world.run("carol@a.test", "send", "--form", str(draft), "--to", "bob@a.test")


@pytest.mark.timeout(300)  # some twenty-five CLI runs; slow on a busy 2-core machine
def test_requisition_of_7500_crosses_domains_with_a_delegation_and_reaches_the_webhook(
    world: World,
) -> None:
    submit_requisition(world, "big", ITEMS_7500)
    first = world.wait_message("bob@a.test", 1)
    unseen = world.run("bob@a.test", "forms", "approve", first, check=False)
    assert unseen.returncode != 0 and "nothing is signed unseen" in unseen.stderr
    assert "Traceback" not in unseen.stderr and len(unseen.stderr.strip().splitlines()) == 1
    world.run("bob@a.test", "forms", "show", first, "--yes")  # seen, then signed
    out = world.run("bob@a.test", "forms", "approve", first).stdout
    assert "sent to pat@b.test" in out  # the purchasing step the a.test rule added

    at_pat = world.wait_message("pat@b.test", 1)
    world.run("pat@b.test", "forms", "show", at_pat, "--yes")
    out = world.run("pat@b.test", "forms", "delegate", at_pat, "dave@b.test").stdout
    assert "delegated to dave@b.test" in out and "sent to dave@b.test" in out

    at_dave = world.wait_message("dave@b.test", 1)
    # dave has no requisition plug-in: --yes fetches it from a.test, verifies, installs
    refused = world.run("dave@b.test", "forms", "show", at_dave, check=False)
    assert refused.returncode != 0 and "--yes" in refused.stderr
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    shown = world.run("dave@b.test", "forms", "show", at_dave, "--yes").stdout
    assert "7500.00" in shown and "waiting for step 2" in shown
    out = world.run("dave@b.test", "forms", "approve", at_dave).stdout
    assert "sent to carol@a.test (approved)" in out

    final_id = world.wait_message("carol@a.test", 1)
    message = json.loads(world.run("carol@a.test", "retrieve", "--json", final_id).stdout)
    assert message["provenance"]["status"] == "verified"  # signed by b.test on the way back
    final = world.tmp / "final.xml"
    final.write_text(message["body"])
    report = world.run(
        "alice@a.test", "forms", "verify", str(final), "--crl", str(world.fed.ca / "crl.pem")
    ).stdout.splitlines()
    assert report[1:] == [
        line
        for line in report[1:]
        if line.startswith(("step ", "status: "))  # nothing but the chain
    ]
    chain = [line.split(" at ")[0] for line in report[1:-1]]
    assert chain == [
        "step 1 manager: bob@a.test approved",
        "step 2 purchasing: pat@b.test delegated to dave@b.test",
        "step 2 purchasing: dave@b.test (for pat@b.test) approved",
    ]
    assert report[-1] == "status: approved"

    wait_for(lambda: world.hook.posts, "the webhook's POST")
    (post,) = world.hook.posts
    assert post["status"] == "approved" and post["form"] == "requisition"
    assert post["sender"] == "carol@a.test" and post["xml"] == final.read_text()
    assert len(post["chain"]) == 3  # type: ignore[arg-type]


def test_requisition_of_500_skips_purchasing(world: World) -> None:
    submit_requisition(world, "small", ITEMS_500)
    first = world.wait_message("bob@a.test", 1)
    world.run("bob@a.test", "forms", "show", first, "--yes")
    out = world.run("bob@a.test", "forms", "approve", first).stdout
    assert "sent to carol@a.test (approved)" in out
    final_id = world.wait_message("carol@a.test", 1)
    message = json.loads(world.run("carol@a.test", "retrieve", "--json", final_id).stdout)
    final = world.tmp / "final.xml"
    final.write_text(message["body"])
    report = world.run(
        "carol@a.test", "forms", "verify", str(final), "--crl", str(world.fed.ca / "crl.pem")
    ).stdout
    assert "purchasing" not in report and "step 1 manager: bob@a.test approved" in report
    assert report.strip().endswith("status: approved")
    wait_for(lambda: world.hook.posts, "the webhook's POST")
    assert [p["status"] for p in world.hook.posts] == ["approved"]


def test_timesheet_recipient_without_the_plugin_fetches_verifies_installs_and_renders(
    world: World,
) -> None:
    draft = world.draft(
        "week",
        "timesheet",
        {
            "period_ending": "2004-02-13",
            "days": [{"day": "Monday", "regular": "8", "overtime": "2"}],
        },
        [{"role": "supervisor", "approvers": ["bob@b.test"]}],
    )
    draft.write_text(json.dumps({**json.loads(draft.read_text()), "autofill": True}))
    wheel = next((world.tmp / "dist").glob("wsemail_timesheet-*.whl"))
    world.run("alice@a.test", "forms", "install", str(wheel))
    mine = json.loads(world.run("alice@a.test", "forms", "autofill").stdout)
    assert mine == {"employee": "Kevin Lux", "employee_id": "abc123"}
    nobody = world.run("carol@a.test", "forms", "autofill", check=False)
    assert nobody.returncode != 0 and "no employee record" in nobody.stderr
    assert "Traceback" not in nobody.stderr
    world.run("alice@a.test", "send", "--form", str(draft), "--to", "bob@b.test")
    got = world.wait_message("bob@b.test", 1)
    forms_dir = world.tmp / "homes" / "bob@b.test" / "forms"

    refused = world.run("bob@b.test", "forms", "show", got, check=False)
    assert refused.returncode != 0 and "not installed" in refused.stderr
    assert not forms_dir.exists()  # nothing fetched without the user's yes

    shown = world.run("bob@b.test", "forms", "show", got, "--yes").stdout
    assert "Kevin Lux" in shown and "Total hours:" in shown and "10" in shown
    registry = json.loads((forms_dir / "registry.json").read_text())
    assert registry["timesheet"]["publisher"] == "admin@a.test"
    assert "127.0.0.1" in registry["timesheet"]["location"]
    again = world.run("bob@b.test", "forms", "show", got, "--json").stdout  # installed now
    assert json.loads(again.split("\nstep")[0].split("\nstatus")[0])["employee"] == "Kevin Lux"


def test_send_form_without_to_goes_to_the_first_step_and_warns_without_a_wheel(
    world: World,
) -> None:
    wheel = next((world.tmp / "dist").glob("wsemail_requisition-*.whl"))
    world.run("carol@a.test", "forms", "install", str(wheel))  # from a file: no location
    draft = world.tmp / "no-wheel.json"
    draft.write_text(
        json.dumps(
            {
                "form": "requisition",
                "data": {"requester": "carol@a.test", "department": "OS", "items": ITEMS_500},
                "route": [{"role": "manager", "approvers": ["bob@a.test"]}],
            }
        )
    )
    sent = world.run("carol@a.test", "send", "--form", str(draft))  # no --to
    warning = sent.stderr.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("wsemail: warning: ")
    assert "no published wheel" in warning[0] and '"wheel"' in warning[0]
    world.wait_message("bob@a.test", 1)  # the route's first approver got it
    # with the published wheel named: no warning
    with_wheel = world.draft(
        "with-wheel",
        "requisition",
        {"requester": "carol@a.test", "department": "OS", "items": ITEMS_500},
        [{"role": "manager", "approvers": ["bob@a.test"]}],
    )
    assert world.run("carol@a.test", "send", "--form", str(with_wheel)).stderr == ""
    world.wait_message("bob@a.test", 2)
    # a plain message still needs --to
    plain = world.run("carol@a.test", "send", "--body", "x", check=False)
    assert plain.returncode == 1 and "--to" in plain.stderr
