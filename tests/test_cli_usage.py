"""The front door: usage mistakes are a short message and exit 2 (never a traceback),
`--version`, help without Python type names, a server URL without its path, and
`wsemail user add` that knows its server's domain."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Cli


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["list", "--no-such-option"], 2),
        (["send", "--to"], 2),
        (["no-such-command"], 2),
        (["list", "--limit", "many"], 2),
        (["list", "--account", "nobody-here"], 1),  # a local mistake: no such account here
    ],
)
def test_usage_errors_are_one_message_not_a_traceback(cli: Cli, args: list[str], code: int) -> None:
    result = cli(*args, check=False)
    assert result.returncode == code
    assert "Traceback" not in result.stderr
    assert "Error" in result.stderr or result.stderr.startswith("wsemail: ")


def test_version_and_help_without_python_type_names(cli: Cli) -> None:
    import wsemail

    version = cli("--version")
    assert version.stdout.strip() == f"wsemail {wsemail.__version__}"
    for args in (["--help"], ["send", "--help"], ["user", "add", "--help"]):
        shown = cli(*args).stdout
        assert "<bool>" not in shown and "<str>" not in shown and "list[" not in shown, args


def test_a_server_url_without_its_path_reaches_the_service(cli: Cli) -> None:
    base = cli.server.url.removesuffix("/wsemail")
    assert base != cli.server.url
    cli("send", "--to", "bob@localhost", "-s", "no path", "--body", "hi", "--server", base)
    listed = cli("list", "--json", "--server", base + "/", user="bob@localhost").stdout
    assert "no path" in listed


def test_user_add_takes_the_domain_the_data_dir_records(cli: Cli, tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    refused = cli(
        "user",
        "add",
        "carol@c.test",
        "--password-stdin",
        "--data-dir",
        str(data),
        input="long enough pw\n",
        check=False,
    )
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "give --domain c.test" in refused.stderr
    assert not (data / "wsemail.db").exists() or "carol" not in (
        data / "wsemail.db"
    ).read_bytes().decode("latin-1")
    added = cli(
        "user",
        "add",
        "carol@c.test",
        "--password-stdin",
        "--data-dir",
        str(data),
        "--domain",
        "c.test",
        input="long enough pw\n",
    )
    assert "added carol@c.test" in added.stdout
    # the server's own data dir records its domain: no --domain needed there
    own = cli(
        "user",
        "add",
        "dora@localhost",
        "--password-stdin",
        "--data-dir",
        str(cli.server.config.data_dir),
        input="long enough pw\n",
    )
    assert "added dora@localhost" in own.stdout
    wrong = cli(
        "user",
        "add",
        "eve@c.test",
        "--password-stdin",
        "--data-dir",
        str(cli.server.config.data_dir),
        "--domain",
        "c.test",
        input="long enough pw\n",
        check=False,
    )
    assert wrong.returncode == 1 and "data dir of localhost" in wrong.stderr


def test_the_command_table_names_what_each_module_adds() -> None:
    """`wsemail CMD` imports only CMD's module (cli.commands.MODULES): the table must say
    exactly which commands each module adds, and together they are the whole CLI."""
    import typer

    from wsemail.cli import commands as cli

    every: list[str] = []
    for module, _, names in cli.MODULES:
        app = cli.root_app()
        cli.register(app, [module])
        group = typer.main.get_command(app)
        assert isinstance(group, typer.core.TyperGroup)
        assert sorted(group.commands) == sorted(names), module
        every += names
    whole = cli.command(["--help"])
    assert isinstance(whole, typer.core.TyperGroup)
    assert sorted(whole.commands) == sorted(every)


def test_a_command_loads_its_own_module_and_not_the_rest_of_the_cli() -> None:
    import subprocess
    import sys

    probe = (
        "import sys\nimport wsemail.cli as c\nsys.argv = ['wsemail', 'send', '--help']\n"
        "try:\n    c.main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith(('wsemail.cli.', 'wsemail.server',"
        " 'dkim', 'dns', 'cryptography', 'wsemail.client.usercerts'))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    loaded = "['wsemail.cli.commands', 'wsemail.cli.mail', 'wsemail.cli.serving']"
    assert out.stdout.strip().splitlines()[-1] == loaded


def test_wsemail_serve_serves_in_a_process_without_the_command_line_parser(
    tmp_path: Path,
) -> None:
    """The same process (id, command line) serves, executed again once the options are
    parsed: typer and pydantic (its compiled core) are not in it."""
    import os
    import signal
    import subprocess

    from conftest import wsemail_binary

    command = [wsemail_binary(), "serve", "--data-dir", str(tmp_path), "--port", "0"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSEMAIL_")}
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as server:
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            assert line.startswith("wsemail: serving localhost at http://127.0.0.1:"), line
            maps = Path(f"/proc/{server.pid}/maps").read_text()
            assert "pydantic_core" not in maps and "httptools" in maps  # uvicorn's, loaded
            argv = Path(f"/proc/{server.pid}/cmdline").read_text().split("\0")
            assert argv[1:-1] == command
        finally:
            server.send_signal(signal.SIGTERM)
            assert server.wait(30) == 0
