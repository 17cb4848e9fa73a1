"""The shape of the package: a curated public surface, a headless core without Textual."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import wsemail


def test_public_names_are_sorted_and_exist() -> None:
    assert wsemail.__all__ == sorted(wsemail.__all__)
    for name in wsemail.__all__:
        assert hasattr(wsemail, name), name


def test_headless_core_never_imports_textual() -> None:
    code = (
        "import sys, wsemail, wsemail.cli, wsemail.server.app, wsemail.server.controller;"
        "sys.exit(1 if 'textual' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_wsdl_is_served_and_names_every_operation(server) -> None:  # type: ignore[no-untyped-def]
    import httpx
    from lxml import etree

    response = httpx.get(server.url + "?wsdl")
    assert response.status_code == 200
    root = etree.fromstring(response.content)
    wsdl = "http://schemas.xmlsoap.org/wsdl/"
    operations = {o.get("name") for o in root.iter(f"{{{wsdl}}}operation")}
    assert operations == {
        "GetSalt",
        "Send",
        "ListHeaders",
        "Retrieve",
        "Delete",
        "GetCertificate",
        "Extension",
        "ListFolders",
        "CreateFolder",
        "RenameFolder",
        "DeleteFolder",
        "Move",
        "SetFlags",
        "Search",
        "SaveDraft",
        "GetDraft",
        "ListDrafts",
        "DeleteDraft",
        "SendDraft",
        "ImportMessages",
        "ListThreads",
        "GetThread",
    }
    address = root.find(".//{http://schemas.xmlsoap.org/wsdl/soap12/}address")
    assert address is not None and address.get("location") == server.url


def test_every_fault_subcode_maps_back_to_one_class() -> None:
    from wsemail.protocol.errors import RemoteFault, fault_classes

    seen: dict[str, type[RemoteFault]] = {}
    pending: list[type[RemoteFault]] = [RemoteFault]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.subcode in seen and cls is not RemoteFault and seen[cls.subcode] is not RemoteFault:
            parent = seen[cls.subcode]
            assert issubclass(cls, parent) and cls.status == parent.status, cls
        seen.setdefault(cls.subcode, cls)
    assert fault_classes()["wsemail:InvalidRequest"].__name__ == "RequestInvalid"


# What a cold start of the terminal client must not load (issues 17 and 23): the CLI and
# what only it needs, the server, the screens opened later (compose, message, chat, party
# line, filters, help, forms), and signatures, certificates and provenance (cryptography,
# signxml), which only a check of a signed answer or message loads. No timing here:
# tests/bench_tui_inbox.py measures; this keeps the imports that made it slow out.
NOT_AT_TUI_START = (
    "typer",
    "click",
    "dkim",
    "dns",
    "pygments",  # httpx's command-line tool (wsemail/client/httpx_cli.py)
    "wsemail.cli",
    "wsemail.server",
    "wsemail.bench",
    "cryptography",
    "signxml",
    "wsemail.pki",
    "wsemail.protocol.dsig",
    "wsemail.core.provenance",
    "wsemail.core.forms",
    "wsemail.core.sieve",
    "wsemail.client.forms",
    "wsemail.client.usercerts",
    "wsemail.tui.screens.compose",
    "wsemail.tui.screens.message",
    "wsemail.tui.screens.chat",
    "wsemail.tui.screens.channel",
    "wsemail.tui.screens.filters",
    "wsemail.tui.screens.help",
    "wsemail.tui.screens.prompt",
    "wsemail.tui.screens.confirm",
    "wsemail.tui.screens.admin",
    "wsemail.client.completion",
    # what the inbox needs only after its first page: the IM push stream and new-mail hooks,
    # the storage used, drafts and replies
    "wsemail.client.im",
    "wsemail.client.newmail",
    "wsemail.client.partyline",
    "wsemail.client.attachments",
    "wsemail.client.admin",
    "wsemail.client.drafts",
    "wsemail.client.replies",
    "wsemail.protocol.drafts",
    "wsemail.tui.push",
    "wsemail.tui.drafts",
    "wsemail.tui.screens.login",  # the sign-in form: with everything known, only if refused
    "trio",  # httpcore's trio backend (wsemail/client/httpcore_trio.py), when installed
    "wsemail.tui.formscreen",
    "wsemail.tui.delivery",
    "textual.widgets._text_area",
)


def loaded_after(code: str, env: dict[str, str] | None = None) -> list[str]:
    """Which of NOT_AT_TUI_START a fresh interpreter has loaded after running `code`."""
    probe = (
        f"import sys\ntry:\n    {code}\nexcept SystemExit:\n    pass\n"
        f"print(','.join(m for m in {NOT_AT_TUI_START!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0, out.stderr
    return [m for m in out.stdout.strip().split(",") if m]


def test_tui_app_starts_without_the_cli_the_server_or_later_screens() -> None:
    assert loaded_after("import wsemail.tui.app") == []


def test_a_client_loads_neither_trio_nor_a_ca_bundle_for_an_http_server() -> None:
    """The first httpx client (the sign-in's) imports httpcore without its trio backend, and
    reads no CA bundle for an http:// server; trio stays importable afterwards."""
    code = (
        "import wsemail.tui.app, wsemail.client.mail as m\n"
        "    c = m.Client('http://127.0.0.1:9/wsemail', 'a@b.test', 'x')\n"
        "    assert not c.http._transport._pool._ssl_context._loaded\n"  # httpx's insides
        "    c.close()"
    )
    assert loaded_after(code) == []
    if importlib.util.find_spec("trio") is None:
        return
    out = subprocess.run(
        [sys.executable, "-c", "import wsemail.client.mail as m, httpx, trio; httpx.Client()"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr


def test_wsemail_tui_command_skips_the_cli(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The console script's fast path: `wsemail tui --account NAME` loads the app, not the
    CLI (here it stops at the unknown account, with the CLI's one-line message)."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("WSEMAIL_")}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path))
    code = "sys.argv = ['wsemail', 'tui', '--account', 'nobody']; import wsemail.console; "
    code += "wsemail.console.main()"
    assert loaded_after(code, env) == []
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "import wsemail.console as c; c.main()",
            "tui",
            "--account",
            "nobody",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert run.returncode == 1
    assert run.stderr.strip().startswith("wsemail: no account named 'nobody'"), run.stderr
    assert "Traceback" not in run.stderr


def test_console_fast_path_takes_only_the_tui_options() -> None:
    from wsemail.console import tui_options

    assert tui_options(["tui"]) == {}
    assert tui_options(["tui", "--server", "http://h/wsemail", "--user=a@b.test"]) == {
        "--server": "http://h/wsemail",
        "--user": "a@b.test",
    }
    assert tui_options(["tui", "--account", "work"]) == {"--account": "work"}
    assert tui_options(["tui", "--web", "--server", "https://h/wsemail"]) == {
        "--web": "",
        "--server": "https://h/wsemail",
    }
    for other in (
        [],
        ["list"],
        ["--version"],
        ["tui", "--help"],
        ["tui", "--user"],
        ["tui", "--user", "--server", "x"],
        ["tui", "--user", "a", "--user", "b"],
        ["tui", "extra"],
        ["tui", "--web=1"],
        ["tui", "--web", "--web"],
    ):
        assert tui_options(other) is None, other


# What `wsemail serve` must not load before a request needs it (issue 23, the server's
# memory): the command line's parser and uvicorn's (typer, click, pydantic, the reload
# supervisors), the client, the terminal UI, and the parts of plug-ins that run only for
# some requests: the relay's HTTP client (at its first transaction), dnspython's resolver
# (at the first SRV look-up), prometheus_client (at the first scrape of /metrics), the
# Sieve filters (a script set or run), the MIME reader (ImportMessages, the SMTP and IMAP
# plug-ins), the forms' wheels and approval chains, WebSockets (an upgrade request).
NOT_AT_SERVE_START = (
    "typer",
    "click",
    "pydantic",
    "textual",
    "rich",
    "watchfiles",
    "multiprocessing",
    "uvicorn.supervisors",
    "websockets",
    "wsemail.client.mail",
    "wsemail.tui",
    "httpx",
    "httpcore",
    "anyio._backends._asyncio",
    "dns.resolver",
    "dns.asyncresolver",
    "prometheus_client",
    "sievelib",
    "wsemail.core.sieve",
    "email.policy",
    "html2text",
    "wsemail.server.smtp.mime",
    "wsemail.server.imap",
    "platformdirs",
    "wsemail.core.forms.wheels",
    "wsemail.core.forms.approvals",
    "ctypes",
    "xml.sax.saxutils",
)

_SERVE_AND_LIST_MODULES = """
import atexit, sys
atexit.register(lambda: open(sys.argv[1], "w").write("\\n".join(sorted(sys.modules))))
import wsemail.cli
wsemail.cli.main()
"""


def test_wsemail_serve_starts_without_what_only_some_requests_need(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The process `wsemail serve` serves in (executed again with its parsed options), with
    every default plug-in, started, a message sent from one local user to another and read,
    and stopped: the modules it had loaded by then leave out NOT_AT_SERVE_START."""
    import json
    import os
    import signal

    from wsemail.client.mail import Client
    from wsemail.server.accounts import set_user
    from wsemail.server.store import SqliteStore

    from conftest import PASSWORD

    store = SqliteStore(tmp_path / "wsemail.db")
    try:
        for user in ("alice", "bob"):
            set_user(store, "localhost", f"{user}@localhost", PASSWORD)
    finally:
        store.close()

    options = {
        "config": None,
        "data_dir": str(tmp_path),
        "domain": None,
        "host": None,
        "port": 0,
        "tls_cert": None,
        "tls_key": None,
        "smtp_port": None,
        "submission_port": None,
        "imap_port": None,
        "imap_tls": "auto",
        "store": None,
        "workers": 1,
        "demo": False,
        "verbose": False,
        "log_format": "text",
        "log_level": None,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSEMAIL_")}
    env["WSEMAIL_SERVE_OPTIONS"] = json.dumps(options)
    listed = tmp_path / "modules.txt"
    command = [sys.executable, "-c", _SERVE_AND_LIST_MODULES, str(listed)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as server:
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            assert line.startswith("wsemail: serving localhost at http://127.0.0.1:"), line
            url = line.split(" at ", 1)[1].split()[0]
            with Client(url, "alice@localhost", PASSWORD) as alice:
                alice.send(["bob@localhost"], "hello", "ordinary mail")
            with Client(url, "bob@localhost", PASSWORD) as bob:
                [header] = bob.list_headers().headers
                assert bob.retrieve(header.id).subject == "hello"
        finally:
            server.send_signal(signal.SIGTERM)
            assert server.wait(30) == 0
    loaded = set(listed.read_text().split())
    assert "wsemail.server.controller" in loaded  # it did serve from this process
    assert [m for m in NOT_AT_SERVE_START if m in loaded] == []


def test_uvicorn_command_still_loads_when_called_in_a_server_process() -> None:
    """The server keeps uvicorn's command line out (`server/uvicorn_lazy.py`), yet
    `uvicorn.Server` is uvicorn's own and `uvicorn.main` still runs the command."""
    code = (
        "import sys, wsemail.server, uvicorn, uvicorn.server\n"
        "assert 'click' not in sys.modules and uvicorn.Server is uvicorn.server.Server\n"
        "try:\n    uvicorn.main(['--version'])\nexcept SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "assert 'click' in sys.modules and uvicorn.main.name == 'main', uvicorn.main\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Running uvicorn "), out.stdout
