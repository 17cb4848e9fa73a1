"""Where the CLI finds its server, user and password: flags, then WSEMAIL_SERVER /
WSEMAIL_USER / WSEMAIL_PASSWORD, then the account chosen with --account or WSEMAIL_ACCOUNT,
then the default account of the client config written by `wsemail login`, with each
account's password in the OS keyring under (server, user).

client.toml holds several named accounts::

    default = "work"
    new_mail_command = "notify-send \"$WSEMAIL_FROM\" \"$WSEMAIL_SUBJECT\""  # optional
    [accounts."work"]
    server = "https://mail.a.example/wsemail"
    user = "alice@a.example"
    trust_roots = ["/etc/wsemail/root.pem"]   # optional
    tls_name = "a.example"                    # optional
    password_command = "pass show wsemail/work"  # optional: prints the password
    directory_routes = { "b.example" = "https://mail.b.example/wsemail" }  # optional
    new_mail_command = "…"                       # optional: this account's own hook

The password comes from WSEMAIL_PASSWORD, else the account's `password_command` (run by
the shell, the first line of its output; for machines without an OS keyring, like aerc's
source-cred-cmd), else the OS keyring. `directory_routes` name other domains' servers for
encrypted mail when DNS does not (WSEMAIL_DIRECTORY_ROUTES wins). `new_mail_command` is
the TUI's new-mail hook (`wsemail.client.newmail`): an account's own wins over the one at
the top.

The older one-account form (top-level `server`, `user`, `trust_roots`) is still read, as an
account named after its user; writing always uses the form above."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

import platformdirs
import tomli_w

from wsemail.client.mail import Client
from wsemail.protocol.errors import UsageError

DEFAULT_SERVER = "http://127.0.0.1:8025/wsemail"
KEYRING_SERVICE = "wsemail"
NO_KEYRING = (
    "no OS keyring is available on this machine: give the account a password_command "
    "(wsemail login --password-command 'pass show wsemail', or password_command in "
    "client.toml: a shell command that prints the password), or set WSEMAIL_PASSWORD"
)
ACCOUNT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}")

# set by the --account option every server-talking command carries (wsemail.cli)
selected_account: str | None = None


@dataclass(frozen=True)
class Account:
    """One named account: where its server is, who one is there, whom to trust."""

    name: str
    server: str
    user: str
    trust_roots: tuple[str, ...] = ()
    tls_name: str = ""
    password_command: str = ""
    directory_routes: tuple[tuple[str, str], ...] = ()
    new_mail_command: str = ""


@dataclass(frozen=True)
class ClientConfig:
    accounts: dict[str, Account] = field(default_factory=dict)
    default: str = ""
    new_mail_command: str = ""  # for every account without its own

    def get(self, name: str) -> Account:
        found = self.accounts.get(name)
        if found is None:
            known = ", ".join(sorted(self.accounts)) or "none; run 'wsemail login'"
            raise UsageError(f"no account named {name!r} (known: {known})")
        return found

    def current(self, name: str | None = None) -> Account | None:
        """The named account (an unknown name is an error), else the default one."""
        if name:
            return self.get(name)
        return self.accounts.get(self.default)

    def find(self, server: str, user: str) -> Account | None:
        for account in self.accounts.values():
            if account.server == server and account.user == user:
                return account
        return None

    def name_for(self, server: str, user: str) -> str:
        """The account's name for (server, user): the one it has, else the address, made
        unique (alice@a.test-2) when that name is taken by another server's account."""
        same = self.find(server, user)
        if same is not None:
            return same.name
        name, n = user, 1
        while name in self.accounts:
            n += 1
            name = f"{user}-{n}"
        return name

    def with_account(self, account: Account, *, make_default: bool = False) -> ClientConfig:
        accounts = {**self.accounts, account.name: account}
        default = account.name if make_default or self.default not in accounts else self.default
        return ClientConfig(accounts, default, self.new_mail_command)

    def without(self, name: str) -> ClientConfig:
        accounts = {k: v for k, v in self.accounts.items() if k != name}
        default = self.default if self.default in accounts else next(iter(sorted(accounts)), "")
        return ClientConfig(accounts, default, self.new_mail_command)

    def hook_for(self, server: str, user: str) -> str:
        """The new-mail hook of the account (server, user): its own, else the top one."""
        account = self.find(server, user)
        return (account.new_mail_command if account else "") or self.new_mail_command


def config_path() -> Path:
    env = os.environ.get("WSEMAIL_CLIENT_CONFIG")
    if env:
        return Path(env)
    return Path(platformdirs.user_config_dir("wsemail", appauthor=False)) / "client.toml"


def _roots(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(p for p in value.split(os.pathsep) if p)
    if isinstance(value, list):
        return tuple(str(p) for p in value if isinstance(p, str) and p)
    return ()


def _account(name: str, table: dict[str, object]) -> Account | None:
    server, user = table.get("server"), table.get("user")
    if not isinstance(user, str) or not user:
        return None
    tls_name, command = table.get("tls_name"), table.get("password_command")
    routes, hook = table.get("directory_routes"), table.get("new_mail_command")
    return Account(
        name,
        server if isinstance(server, str) and server else DEFAULT_SERVER,
        user,
        _roots(table.get("trust_roots")),
        tls_name if isinstance(tls_name, str) else "",
        command if isinstance(command, str) else "",
        tuple(
            (str(d).lower(), str(u))
            for d, u in (routes.items() if isinstance(routes, dict) else ())
        ),
        hook if isinstance(hook, str) else "",
    )


def load_accounts() -> ClientConfig:
    """The accounts in client.toml (none when it does not exist); a bad file is an error."""
    path = config_path()
    if not path.exists():
        return ClientConfig()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    accounts: dict[str, Account] = {}
    tables = raw.get("accounts")
    if isinstance(tables, dict):
        for name, table in tables.items():
            found = _account(name, table) if isinstance(table, dict) else None
            if found is not None:
                accounts[name] = found
    hook = raw.get("new_mail_command")
    hook = hook if isinstance(hook, str) else ""
    old = _account("", raw)  # the one-account form of earlier versions
    if old is not None and not accounts:
        old = replace(old, name=old.user, new_mail_command="")
        accounts[old.name] = old
        return ClientConfig(accounts, old.name, hook)
    default = raw.get("default")
    if not isinstance(default, str) or default not in accounts:
        default = next(iter(sorted(accounts)), "")
    return ClientConfig(accounts, default, hook)


def save_accounts(config: ClientConfig, path: Path | None = None) -> Path:
    """Write client.toml (`path`, default: `config_path()`) with a TOML writer (tomli-w
    escapes quotes, newlines and control characters such as DEL) to a temporary file that
    is fsynced and renamed over the old one: a reader sees the old file or the new one,
    never half of one."""
    path = path or config_path()
    doc: dict[str, object] = {"default": config.default} if config.default else {}
    if config.new_mail_command:
        doc["new_mail_command"] = config.new_mail_command
    accounts: dict[str, dict[str, object]] = {}
    for name in sorted(config.accounts):
        account = config.accounts[name]
        table: dict[str, object] = {"server": account.server, "user": account.user}
        if account.trust_roots:
            table["trust_roots"] = list(account.trust_roots)
        if account.tls_name:
            table["tls_name"] = account.tls_name
        if account.password_command:
            table["password_command"] = account.password_command
        if account.directory_routes:
            table["directory_routes"] = dict(account.directory_routes)
        if account.new_mail_command:
            table["new_mail_command"] = account.new_mail_command
        accounts[name] = table
    if accounts:
        doc["accounts"] = accounts
    data = tomli_w.dumps(doc).encode("utf-8")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write {path}: {exc}") from exc
    return path


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # a platform without directory handles (Windows): the rename stands
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_account_name(name: str) -> str:
    if not ACCOUNT_NAME.fullmatch(name):
        raise UsageError(f"bad account name {name!r}: letters, digits and _ . @ + - (at most 128)")
    return name


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
        raise UsageError(NO_KEYRING) from exc
    except (KeyringError, RuntimeError) as exc:
        raise UsageError(f"the OS keyring refused the password: {exc}") from exc


def keyring_delete(server: str, user: str) -> bool:
    """Forget the password; False when there was none (or no keyring to ask)."""
    import keyring
    from keyring.errors import KeyringError

    try:
        keyring.delete_password(KEYRING_SERVICE, _keyring_key(server, user))
    except (KeyringError, RuntimeError):
        return False
    return True


@dataclass(frozen=True)
class Settings:
    """Everything a client session needs but the password."""

    server: str
    user: str
    trust_roots: tuple[Path, ...] = ()
    tls_name: str | None = None
    account: str = ""


def chosen_account() -> str | None:
    return selected_account or os.environ.get("WSEMAIL_ACCOUNT") or None


def settings(
    server: str | None = None, user: str | None = None, account: str | None = None
) -> Settings:
    """Flags, then the environment, then the chosen account, then the default account."""
    found = load_accounts().current(account or chosen_account())
    server = server or os.environ.get("WSEMAIL_SERVER") or (found.server if found else None)
    user = user or os.environ.get("WSEMAIL_USER") or (found.user if found else None)
    if not user:
        raise UsageError("no user: run 'wsemail login', or set WSEMAIL_USER")
    env_roots = os.environ.get("WSEMAIL_TRUST_ROOTS")
    roots = _roots(env_roots) if env_roots else (found.trust_roots if found else ())
    tls_name = os.environ.get("WSEMAIL_TLS_NAME") or (found.tls_name if found else "")
    return Settings(
        server or DEFAULT_SERVER,
        user,
        tuple(Path(p) for p in roots),
        tls_name or None,
        found.name if found else "",
    )


def resolve(server: str | None, user: str | None) -> tuple[str, str]:
    found = settings(server, user)
    return found.server, found.user


def tls_verify() -> str | bool:
    cafile = os.environ.get("WSEMAIL_CACERT")
    return cafile if cafile else True


def run_password_command(command: str, where: str) -> str:
    """The first line of what `command` prints (run by the shell, its stderr and prompts
    on this terminal), as the password."""
    try:
        done = subprocess.run(  # noqa: S602 -- the user's own command from their own config
            command, shell=True, stdout=subprocess.PIPE, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"password_command of {where} failed: {exc}") from exc
    if done.returncode != 0:
        raise UsageError(f"password_command of {where} exited {done.returncode}")
    password = (done.stdout.splitlines() or [""])[0]
    if not password:
        raise UsageError(f"password_command of {where} printed no password")
    return password


def password_for(found: Settings) -> str | None:
    """WSEMAIL_PASSWORD, else the account's password_command, else the OS keyring."""
    env = os.environ.get("WSEMAIL_PASSWORD")
    if env:
        return env
    account = load_accounts().accounts.get(found.account) if found.account else None
    if account is not None and account.password_command and account.user == found.user:
        return run_password_command(account.password_command, f"account {account.name!r}")
    return keyring_get(found.server, found.user)


def open_client(
    server: str | None = None, user: str | None = None, account: str | None = None
) -> Client:
    found = settings(server, user, account)
    password = password_for(found)
    if not password:
        raise UsageError(
            f"no password for {found.user}: run 'wsemail login', give the account a "
            f"password_command in {config_path()}, or set WSEMAIL_PASSWORD"
        )
    return Client(
        found.server,
        found.user,
        password,
        verify=tls_verify(),
        trust_roots=list(found.trust_roots),
        tls_name=found.tls_name,
    )


def directory_routes(account: str | None = None) -> dict[str, str]:
    """The chosen (else default) account's directory_routes in client.toml."""
    found = load_accounts().current(account or chosen_account())
    return dict(found.directory_routes) if found else {}


def trust_roots(account: str | None = None) -> list[Path]:
    """Federation roots for checking server signatures: WSEMAIL_TRUST_ROOTS (paths joined
    by os.pathsep) or the chosen (else default) account's `trust_roots` in client.toml."""
    env_roots = os.environ.get("WSEMAIL_TRUST_ROOTS")
    if env_roots:
        return [Path(p) for p in _roots(env_roots)]
    found = load_accounts().current(account or chosen_account())
    return [Path(p) for p in found.trust_roots] if found else []


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
