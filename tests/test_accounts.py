"""Several named accounts in client.toml, through the real `wsemail` binary against two real
servers: login adds them (password into a file-backed test keyring), accounts lists them,
--account / WSEMAIL_ACCOUNT pick one, logout removes one; the old one-account file is read."""

from __future__ import annotations

import os
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from keyring_file import FileKeyring

from conftest import PASSWORD, Running, inbox, start_server, wsemail_binary

TESTS = Path(__file__).parent


class Home:
    """A user's home: client.toml, a test keyring, no WSEMAIL_SERVER/USER/PASSWORD."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "config" / "wsemail" / "client.toml"
        self.keyring = FileKeyring(root / "keyring.json")
        self.backend = "keyring_file.FileKeyring"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WSEMAIL_")}
        env.update(
            HOME=str(self.root),
            XDG_CONFIG_HOME=str(self.root / "config"),
            PYTHON_KEYRING_BACKEND=self.backend,
            PYTHONPATH=os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]),
            WSEMAIL_TEST_KEYRING=str(self.keyring.path),
            **extra,
        )
        return env

    def __call__(
        self, *args: str, input: str = "", check: bool = True, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [wsemail_binary(), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env(**extra),
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"wsemail {' '.join(args)} exited {result.returncode}: {result.stderr}"
            )
        assert "Traceback" not in result.stderr
        return result

    def login(self, account: str, server: Running, user: str, *more: str) -> str:
        return self(
            "login",
            "--account",
            account,
            "--server",
            server.url,
            "--user",
            user,
            "--password-stdin",
            *more,
            input=PASSWORD + "\n",
        ).stdout

    def saved(self) -> dict[str, object]:
        return tomllib.loads(self.config.read_text()) if self.config.exists() else {}


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[Running, Running]]:
    a = start_server(tmp_path / "a")
    b = start_server(tmp_path / "b", domain="b.test")
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture
def home(tmp_path: Path) -> Home:
    (tmp_path / "home").mkdir()
    return Home(tmp_path / "home")


def test_two_accounts_on_two_servers_picked_by_flag_env_and_default(
    two: tuple[Running, Running], home: Home
) -> None:
    a, b = two
    assert "no accounts yet" in home("accounts").stdout
    assert "account 'work'" in home.login("work", a, "alice@localhost")
    home.login("home", b, "bob@b.test")
    assert home.keyring.get_password("wsemail", f"alice@localhost {a.url}") == PASSWORD
    assert home.keyring.get_password("wsemail", f"bob@b.test {b.url}") == PASSWORD
    saved = home.saved()
    assert saved["default"] == "work"  # the first one
    assert saved["accounts"] == {
        "home": {"server": b.url, "user": "bob@b.test"},
        "work": {"server": a.url, "user": "alice@localhost"},
    }
    lines = home("accounts").stdout.splitlines()
    assert lines[0].split() == ["home", "bob@b.test", b.url]
    assert lines[1].split() == ["*", "work", "alice@localhost", a.url]

    home("send", "--to", "bob@localhost", "-s", "from work", "--body", "x")  # the default
    home("send", "--account", "home", "--to", "carol@b.test", "-s", "from home", "--body", "y")
    home("send", "--to", "alice@b.test", "-s", "env home", "--body", "z", WSEMAIL_ACCOUNT="home")
    assert inbox(a, "bob@localhost") == ["from work"]
    assert inbox(b, "carol@b.test") == ["from home"]
    assert inbox(b, "alice@b.test") == ["env home"]
    # flags beat the environment, which beats the chosen account
    listed = home(
        "list",
        "--account",
        "home",
        "--user",
        "bob@localhost",
        "--server",
        a.url,
        WSEMAIL_PASSWORD=PASSWORD,
    ).stdout
    assert "from work" in listed
    listed = home(
        "list",
        "--account",
        "work",
        WSEMAIL_SERVER=b.url,
        WSEMAIL_USER="carol@b.test",
        WSEMAIL_PASSWORD=PASSWORD,
    ).stdout
    assert "from home" in listed

    home("accounts", "--default", "home")
    assert home.saved()["default"] == "home"
    assert "from home" in home("list", "--user", "carol@b.test", WSEMAIL_PASSWORD=PASSWORD).stdout


def test_logout_removes_the_account_and_its_password(
    two: tuple[Running, Running], home: Home
) -> None:
    a, b = two
    home.login("work", a, "alice@localhost")
    home.login("home", b, "bob@b.test")
    out = home("logout", "--account", "work").stdout
    assert "password removed" in out and "default is now 'home'" in out
    assert home.keyring.get_password("wsemail", f"alice@localhost {a.url}") is None
    assert home.keyring.get_password("wsemail", f"bob@b.test {b.url}") == PASSWORD
    assert home("accounts").stdout.split() == ["*", "home", "bob@b.test", b.url]
    home("list")  # the remaining (now default) account still works
    home("logout")
    assert home.saved() == {} and home.keyring.entries() == {}
    gone = home("list", check=False)
    assert gone.returncode == 1 and "wsemail login" in gone.stderr


def test_an_unknown_account_or_a_bad_name_is_a_one_line_error(
    two: tuple[Running, Running], home: Home
) -> None:
    a, _ = two
    home.login("work", a, "alice@localhost")
    before = home.config.read_text()
    for args in (
        ("list", "--account", "nope"),
        ("logout", "--account", "nope"),
        ("tui", "--account", "nope"),  # before the terminal is taken over
    ):
        result = home(*args, check=False)
        assert result.returncode == 1
        assert result.stderr.strip() == "wsemail: no account named 'nope' (known: work)"
    bad = home("send", "--account", "../x", "--to", "bob@localhost", "--body", "x", check=False)
    assert bad.returncode == 1 and "bad account name" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    assert home.config.read_text() == before
    assert inbox(a, "bob@localhost") == []  # nothing sent, and the server still answers


def test_a_refused_login_saves_nothing(two: tuple[Running, Running], home: Home) -> None:
    a, _ = two
    home.login("work", a, "alice@localhost")
    before, keys = home.config.read_text(), home.keyring.entries()
    wrong = home(
        "login",
        "--account",
        "other",
        "--server",
        a.url,
        "--user",
        "bob@localhost",
        "--password-stdin",
        input="wrong password\n",
        check=False,
    )
    assert wrong.returncode == 2
    home.backend = "keyring.backends.fail.Keyring"
    no_keyring = home(
        "login",
        "--account",
        "other",
        "--server",
        a.url,
        "--user",
        "bob@localhost",
        "--password-stdin",
        input=PASSWORD + "\n",
        check=False,
    )
    assert no_keyring.returncode == 1
    assert no_keyring.stderr.strip().startswith("wsemail: no OS keyring is available")
    assert home.config.read_text() == before and home.keyring.entries() == keys
    assert inbox(a, "alice@localhost") == []  # the server still answers


def test_the_old_one_account_file_is_still_read_and_rewritten_new(
    two: tuple[Running, Running], home: Home
) -> None:
    a, b = two
    a.client("bob@localhost").send(["alice@localhost"], "old times", "x")
    home.config.parent.mkdir(parents=True)
    home.config.write_text(f'server = "{a.url}"\nuser = "alice@localhost"\n')
    home.keyring.set_password("wsemail", f"alice@localhost {a.url}", PASSWORD)
    assert "old times" in home("list").stdout
    assert home("accounts").stdout.split() == ["*", "alice@localhost", "alice@localhost", a.url]
    home.login("home", b, "bob@b.test")
    saved = home.saved()
    assert "server" not in saved and saved["default"] == "alice@localhost"
    assert set(saved["accounts"]) == {"alice@localhost", "home"}  # type: ignore[arg-type]
    assert "old times" in home("list").stdout


def test_a_login_without_a_name_never_overwrites_another_servers_account(
    two: tuple[Running, Running], home: Home
) -> None:
    a, b = two
    home.login("bob@localhost", b, "bob@b.test")  # the name an a-login of bob would take
    home(
        "login",
        "--server",
        a.url,
        "--user",
        "bob@localhost",
        "--password-stdin",
        input=PASSWORD + "\n",
    )
    home(
        "login",
        "--server",
        a.url,
        "--user",
        "bob@localhost",
        "--password-stdin",
        input=PASSWORD + "\n",
    )  # again: the same account, updated
    assert home.saved()["accounts"] == {
        "bob@localhost": {"server": b.url, "user": "bob@b.test"},
        "bob@localhost-2": {"server": a.url, "user": "bob@localhost"},
    }
    home(
        "send",
        "--account",
        "bob@localhost-2",
        "--to",
        "alice@localhost",
        "-s",
        "via a",
        "--body",
        "x",
    )
    assert inbox(a, "alice@localhost") == ["via a"]
