"""scripts/build: the single-file dist/wsemail runs with no virtualenv — a system python3 on
a PATH without the venv, nothing of the venv in the environment — as server and client, and
finds the built-in server plug-ins and the first-party forms by entry point."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import PASSWORD

pytestmark = pytest.mark.build
ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The built file (once per test session) and the folder it unpacks into."""
    out = tmp_path_factory.mktemp("build") / "wsemail"
    result = subprocess.run(
        [str(ROOT / "scripts" / "build"), str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out, tmp_path_factory.mktemp("shiv")


def _env(home: Path, shiv_root: Path, **more: str) -> dict[str, str]:
    return {
        "PATH": SYSTEM_PATH,
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "SHIV_ROOT": str(shiv_root),
        "WSEMAIL_CLIENT_CONFIG": str(home / "client.toml"),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
        **more,
    }


def _run(args: list[str], env: dict[str, str], stdin: str = "") -> str:
    result = subprocess.run(args, input=stdin, capture_output=True, text=True, env=env, timeout=90)
    assert result.returncode == 0, f"{args[1:]} exited {result.returncode}: {result.stderr}"
    return result.stdout


@pytest.fixture
def outside(built: tuple[Path, Path], tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    exe, shiv_root = built
    env = _env(tmp_path, shiv_root)
    python = subprocess.run(
        ["python3", "-c", "import sys; print(sys.prefix, *sys.version_info[:2])"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout.split()
    if python[1:] != [str(n) for n in sys.version_info[:2]]:
        pytest.fail(
            f"python3 on {SYSTEM_PATH} is {python[1:]}, the build needs {sys.version_info[:2]}"
        )
    assert Path(python[0]).resolve() != Path(sys.prefix).resolve()  # not this venv
    yield exe, env


def test_built_file_serves_sends_and_lists_outside_the_venv(
    outside: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    exe, env = outside
    assert _run([str(exe), "--version"], env).strip() == "wsemail 0.1.0"
    data = tmp_path / "server"
    server = subprocess.Popen(
        [str(exe), "serve", "--data-dir", str(data), "--port", "0"],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # the default plug-ins loaded by entry point
        assert "serving localhost at " in line, line
        url = line.split(" at ")[1].split()[0]
        for user in ("alice@localhost", "bob@localhost"):
            add = [str(exe), "user", "add", user, "--data-dir", str(data), "--password-stdin"]
            _run(add, env, stdin=PASSWORD + "\n")
        as_alice = {**env, "WSEMAIL_SERVER": url, "WSEMAIL_USER": "alice@localhost"}
        as_alice["WSEMAIL_PASSWORD"] = PASSWORD
        send = [str(exe), "send", "--to", "bob@localhost", "-s", "From one file", "--body", "hi"]
        _run(send, as_alice)
        as_bob = {**as_alice, "WSEMAIL_USER": "bob@localhost"}
        listed = _run([str(exe), "list"], as_bob)
        assert "From one file" in listed and "alice@localhost" in listed
    finally:
        server.terminate()
        server.wait(timeout=30)
        assert server.stdout is not None
        server.stdout.close()


def test_built_file_finds_plugins_and_forms_by_entry_point(
    outside: tuple[Path, dict[str, str]],
) -> None:
    exe, env = outside
    script = (
        "from importlib.metadata import entry_points\n"
        "for group in ('wsemail.server_plugins', 'wsemail.forms', 'wsemail.form_screens'):\n"
        "    for ep in entry_points(group=group):\n"
        "        ep.load()\n"
        "        print(group, ep.name)\n"
    )
    found = _run([str(exe), "-c", script], {**env, "SHIV_INTERPRETER": "1"}).split("\n")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    plugins = {line.split()[1] for line in found if line.startswith("wsemail.server_plugins ")}
    assert plugins == set(declared["wsemail.server_plugins"])
    assert {"wsemail.forms timesheet", "wsemail.forms requisition"} <= set(found)
    assert "wsemail.form_screens timesheet" in found
