"""Where the CLI finds its server, user and password: flags, then WSEMAIL_SERVER /
WSEMAIL_USER / WSEMAIL_PASSWORD, then the client config written by `wsemail login` with the
password in the OS keyring."""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

import platformdirs

from wsemail.client import Client
from wsemail.errors import UsageError

DEFAULT_SERVER = "http://127.0.0.1:8025/wsemail"
KEYRING_SERVICE = "wsemail"


def config_path() -> Path:
    env = os.environ.get("WSEMAIL_CLIENT_CONFIG")
    if env:
        return Path(env)
    return Path(platformdirs.user_config_dir("wsemail", appauthor=False)) / "client.toml"


def read_config() -> dict[str, str]:
    path = config_path()
    if not path.exists():
        return {}
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    return {k: str(v) for k, v in raw.items() if isinstance(v, str)}


def write_config(values: dict[str, str]) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f'{key} = "{value}"'
        for key, value in sorted(values.items())
        if '"' not in value and "\\" not in value
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _keyring_key(server: str, user: str) -> str:
    return f"{user} {server}"


def keyring_get(server: str, user: str) -> str | None:
    import keyring
    from keyring.errors import KeyringError

    try:
        return keyring.get_password(KEYRING_SERVICE, _keyring_key(server, user))
    except (KeyringError, RuntimeError):
        return None


def keyring_set(server: str, user: str, password: str) -> None:
    import keyring
    from keyring.errors import KeyringError, NoKeyringError

    try:
        keyring.set_password(KEYRING_SERVICE, _keyring_key(server, user), password)
    except NoKeyringError as exc:
        raise UsageError(
            "no OS keyring is available on this machine; set WSEMAIL_PASSWORD "
            "in the environment instead"
        ) from exc
    except (KeyringError, RuntimeError) as exc:
        raise UsageError(f"the OS keyring refused the password: {exc}") from exc


def resolve(server: str | None, user: str | None) -> tuple[str, str]:
    saved = read_config()
    server = server or os.environ.get("WSEMAIL_SERVER") or saved.get("server") or DEFAULT_SERVER
    user = user or os.environ.get("WSEMAIL_USER") or saved.get("user")
    if not user:
        raise UsageError("no user: run 'wsemail login', or set WSEMAIL_USER")
    return server, user


def tls_verify() -> str | bool:
    cafile = os.environ.get("WSEMAIL_CACERT")
    return cafile if cafile else True


def open_client(server: str | None = None, user: str | None = None) -> Client:
    server, user = resolve(server, user)
    password = os.environ.get("WSEMAIL_PASSWORD") or keyring_get(server, user)
    if not password:
        raise UsageError(f"no password for {user}: run 'wsemail login', or set WSEMAIL_PASSWORD")
    return Client(
        server,
        user,
        password,
        verify=tls_verify(),
        trust_roots=trust_roots(),
        tls_name=os.environ.get("WSEMAIL_TLS_NAME") or None,
    )


def trust_roots() -> list[Path]:
    """Federation roots for checking server signatures: WSEMAIL_TRUST_ROOTS (paths joined
    by os.pathsep) or `trust_roots` in client.toml."""
    raw = os.environ.get("WSEMAIL_TRUST_ROOTS") or read_config().get("trust_roots", "")
    return [Path(p) for p in raw.split(os.pathsep) if p]


def read_password(from_stdin: bool, prompt: str = "Password") -> str:
    if from_stdin:
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
    else:
        import typer

        password = typer.prompt(prompt, hide_input=True, confirmation_prompt=False)
    if not password:
        raise UsageError("empty password")
    return password
