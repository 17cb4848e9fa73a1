"""Server configuration: a TOML file in the data dir, overridden by command-line flags.

domain = "example.org"
host = "127.0.0.1"
port = 8025
[store]
url = "postgresql://wsemail@db.example.org/wsemail"  # the PostgreSQL store (default: SQLite)
[tls]
cert = "/etc/wsemail/cert.pem"
key = "/etc/wsemail/key.pem"
[limits]
max_request_bytes = 4194304
max_depth = 32
max_elements = 10000
max_concurrency = 512
read_timeout = 30
header_timeout = 10
keepalive_timeout = 20
body_min_rate = 2048
body_grace = 5
max_connections_per_peer = 256
max_inflight_per_peer = 64
fd_reserve = 128
shutdown_grace = 5
storage_reserve = 8388608
[security]
past_seconds = 300
future_seconds = 60
failures_per_user = 10
failures_per_peer = 100
failure_window = 60
[quota]
per_user_bytes = 10737418240
reserve_bytes = 1073741824
[metrics]
token = "a long random string"  # GET /metrics with it from anywhere (else loopback only)
[mailbox]
trash_days = 30             # deleted mail is kept in Trash this long (0: until deleted)
[[plugins]]
ref = "size-limit"
priority = 10
options = { max_bytes = 2097152 }
"""

from __future__ import annotations

import os
import re
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsemail.protocol.errors import UsageError
from wsemail.protocol.xmlsafe import XmlLimits
from wsemail.server.pipeline import PluginSpec

DEFAULT_PORT = 8025
CONFIG_NAME = "server.toml"

DEFAULT_PLUGINS = [
    PluginSpec("relay-policy", 10, {"allow": ["*"]}),
    PluginSpec("size-limit", 20),
    PluginSpec("aliases", 30),
    PluginSpec("forms", 40),
    PluginSpec("im", 40),
    PluginSpec("attachments", 50),
    PluginSpec("usercerts", 60),
    PluginSpec("contacts", 70),
    PluginSpec("directory", 70),
    PluginSpec("filters", 900),
    PluginSpec("local-delivery", 1000),
    PluginSpec("sqlite-queue", 1000),
    PluginSpec("admin", 100),
    PluginSpec("operate", 30),
]


DOMAIN_FILE = "domain"  # the mail domain this data dir belongs to


def default_data_dir() -> Path:
    env = os.environ.get("WSEMAIL_DATA_DIR")
    if env:
        return Path(env)
    import platformdirs  # only here: a data dir given (the usual case) does not need it

    return Path(platformdirs.user_data_dir("wsemail", appauthor=False)) / "server"


@dataclass
class ServerConfig:
    data_dir: Path = field(default_factory=default_data_dir)
    domain: str = "localhost"
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    store: str = "sqlite-store"  # the store plug-in; a store_url picks the PostgreSQL one
    # [store] url (`wsemail serve --store URL`): "postgresql://…" keeps everything in that
    # database, shared by every node and worker of the domain; "" the data dir's SQLite file
    store_url: str = field(default="", repr=False)
    worker: int = 0  # which of `wsemail serve --workers N` this process is (0: the first)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_request_bytes: int = 4 << 20
    max_depth: int = 32
    max_elements: int = 10_000
    max_concurrency: int = 512
    read_timeout: float = 30.0  # a whole request body, at most
    # slow peers (issue 16, 24.6): the request line and headers must arrive within
    # `header_timeout` s of the connection (or of the request's first byte); an idle
    # keep-alive connection is closed after `keepalive_timeout` s; a body must keep up
    # `body_min_rate` bytes/s once `body_grace` s have passed. Bodies are read before a
    # concurrency slot is taken. Per peer address: at most `max_connections_per_peer`
    # open connections and `max_inflight_per_peer` requests running; new connections are
    # refused while fewer than `fd_reserve` descriptors are left for the store and the rest
    header_timeout: float = 10.0
    keepalive_timeout: float = 20.0
    body_min_rate: float = 2048.0
    body_grace: float = 5.0
    max_connections_per_peer: int = 256
    max_inflight_per_peer: int = 64
    fd_reserve: int = 128
    # on stop, requests in flight get this long to finish; idle connections and push
    # streams are closed at once
    shutdown_grace: float = 5.0
    # bytes kept free in the data dir: on a full disk, reads and deletes go on in them
    storage_reserve: int = 8 << 20
    past_seconds: float = 300.0
    future_seconds: float = 60.0
    # failed authentications allowed per failure_window: per (user, peer address) and per
    # peer address (IPv6 by /64); token buckets, see wsemail.server.ratelimit
    failures_per_user: int = 10
    failures_per_peer: int = 100
    failure_window: float = 60.0
    plugins: list[PluginSpec] = field(default_factory=lambda: list(DEFAULT_PLUGINS))
    # federation: None identity = a development root and server certificate made on first run
    identity_dir: Path | None = None
    trust_roots: list[Path] = field(default_factory=list)
    crls: list[Path] = field(default_factory=list)
    routes: dict[str, list[str]] = field(default_factory=dict)
    dns_nameservers: list[str] | None = None
    dns_port: int = 53
    # outbound queue: first retry after ~retry_base s, doubling with jitter up to retry_max;
    # one delay notice to the sender after delay_notice, the bounce after lifetime
    retry_base: float = 5.0
    retry_max: float = 3600.0
    delay_notice: float = 4 * 3600.0
    lifetime: float = 5 * 86400.0
    batch_max: int = 100
    relay_poll: float = 1.0
    relay_lease: float = 120.0
    federation_tls: bool = True  # verify peers' TLS with the federation roots
    # [quota]: what one user may keep on this server (attachments stored + announced;
    # meant to count mailboxes too), and the free disk space no upload may take
    quota_per_user_bytes: int = 10 << 30
    quota_reserve_bytes: int = 1 << 30
    trash_days: float = 30.0  # deleted mail stays in Trash this long (0: until deleted)
    # [metrics] token: a scraper that sends `Authorization: Bearer <token>` may read
    # /metrics from any address; without it only loopback peers may
    metrics_token: str = field(default="", repr=False)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "wsemail.db"

    @property
    def xml_limits(self) -> XmlLimits:
        return XmlLimits(self.max_request_bytes, self.max_depth, self.max_elements)

    def prepare(self) -> bytes:
        """Create the data dir on first run; return the server secret (made once)."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        secret_file = self.data_dir / "secret.key"
        if not secret_file.exists():
            fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(32))
                out.flush()
                os.fsync(out.fileno())
        config_file = self.data_dir / CONFIG_NAME
        if not config_file.exists():  # a commented template for the operator; no effect
            body = (__doc__ or "").split("\n\n", 1)[1].split('"""')[0]
            lines = [f"# {line.strip()}" if line.strip() else "#" for line in body.splitlines()]
            config_file.write_text(
                "# wsemail server config. Uncomment and edit; flags of `wsemail serve` win.\n"
                + "\n".join(lines).rstrip("#\n")
                + "\n",
                encoding="utf-8",
            )
        return secret_file.read_bytes()


def node_id(config: ServerConfig) -> str:
    """This process among the nodes and workers sharing a store: the data dir's random id
    (made once) and the worker number. A restarted process is the same node again."""
    path = config.data_dir / "node-id"
    try:
        node = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        node = secrets.token_hex(8)
        try:
            with open(path, "x", encoding="ascii") as out:
                out.write(node + "\n")
        except FileExistsError:  # a sibling worker made it first
            node = path.read_text(encoding="ascii").strip()
    return f"{node}/{config.worker}"


def recorded_domain(data_dir: Path) -> str | None:
    """The mail domain a data dir belongs to, as `wsemail serve` recorded it (None before)."""
    try:
        return (data_dir / DOMAIN_FILE).read_text(encoding="utf-8").strip().lower() or None
    except FileNotFoundError:
        return None


def record_domain(config: ServerConfig) -> None:
    """Record the domain a data dir serves (once); serving it as another domain is refused."""
    recorded = recorded_domain(config.data_dir)
    if recorded is None:
        (config.data_dir / DOMAIN_FILE).write_text(config.domain.lower() + "\n", encoding="utf-8")
    elif recorded != config.domain.lower():
        raise UsageError(
            f"{config.data_dir} is the data dir of {recorded}, not {config.domain}: "
            f"serve it with --domain {recorded}, or use another --data-dir"
        )


# every key server.toml may hold: a table's keys, or None for a table of free names
# (routes: domain -> URLs; a plug-in's options go to the plug-in, which checks them)
SIMPLE: dict[str, type] = {"domain": str, "host": str, "port": int}
SECTIONS: dict[str, dict[str, type]] = {
    "limits": {
        "max_request_bytes": int,
        "max_depth": int,
        "max_elements": int,
        "max_concurrency": int,
        "read_timeout": float,
        "header_timeout": float,
        "keepalive_timeout": float,
        "body_min_rate": float,
        "body_grace": float,
        "max_connections_per_peer": int,
        "max_inflight_per_peer": int,
        "fd_reserve": int,
        "shutdown_grace": float,
        "storage_reserve": int,
    },
    "security": {
        "past_seconds": float,
        "future_seconds": float,
        "failures_per_user": int,
        "failures_per_peer": int,
        "failure_window": float,
    },
    "mailbox": {"trash_days": float},
}


KNOWN: dict[str, Any] = {
    **dict.fromkeys([*SIMPLE, "data_dir"], 0),
    "store": {"url"},  # or a plain string: the store plug-in's name
    **{name: set(keys) for name, keys in SECTIONS.items()},
    "tls": {"cert", "key"},
    "federation": {"identity", "trust_roots", "crls"},
    "routes": None,
    "dns": {"nameservers", "port"},
    "queue": {"retry_base", "retry_max", "delay_notice", "lifetime", "batch_max", "lease"},
    "quota": {"per_user_bytes", "reserve_bytes"},
    "metrics": {"token"},
    "plugins": {"ref", "priority", "options"},
}


def check_keys(raw: dict[str, Any], text: str, path: Path) -> None:
    """Refuse a key server.toml does not know (a misspelling would otherwise be ignored
    silently), naming it and its line."""
    for key, value in raw.items():
        if key not in KNOWN:
            raise _unknown(text, path, "", key)
        allowed = KNOWN[key]
        if not isinstance(allowed, set):
            continue
        tables = value if isinstance(value, list) else [value]
        for table in tables:
            if not isinstance(table, dict):
                continue
            for inner in table:
                if inner not in allowed:
                    raise _unknown(text, path, key, inner)


def _unknown(text: str, path: Path, table: str, key: str) -> UsageError:
    name = f"{table}.{key}" if table else key
    line = _line_of(text, table, key)
    where = f"{path}:{line}" if line else str(path)
    return UsageError(f"{where}: unknown key {name!r} in the server config")


def _line_of(text: str, table: str, key: str) -> int | None:
    """The line where `key` is set in `table` ("" for the top level), as far as a plain
    reading of the TOML can tell (headers, `key =`, `table.key =`, inline tables)."""
    current = ""
    bare = re.escape(key)
    pattern = re.compile(rf"""^\s*(?:{bare}|"{bare}"|'{bare}')\s*=""")
    dotted = re.compile(rf"""^\s*{re.escape(table)}\s*\.\s*{bare}\s*=""") if table else None
    inline = re.compile(rf"""[{{,]\s*{bare}\s*=""")
    for number, line in enumerate(text.splitlines(), start=1):
        header = re.match(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?", line)
        if header:
            current = header.group(1).strip()
            if not table and current == key:
                return number
            continue
        if current == table and pattern.match(line):
            return number
        if dotted is not None and current == "" and dotted.match(line):
            return number
        if table and line.lstrip().startswith(table) and inline.search(line):
            return number
    return None


def _section(raw: dict[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise UsageError(f"[{name}] must be a table")
    return value


def check_store_url(url: str) -> str:
    """A store URL as [store] url and --store take it: "" (SQLite in the data dir) or
    postgresql://… (postgres://… too)."""
    if url and not url.startswith(("postgresql://", "postgres://")):
        raise UsageError(
            f"unknown store URL scheme in {url.split('://')[0]!r}: use postgresql://USER@HOST/DB"
        )
    return url


def load_config(path: Path | None, data_dir: Path | None = None, **overrides: Any) -> ServerConfig:
    """Read `path` (or DATA_DIR/server.toml when it exists) and apply the overrides."""
    config = ServerConfig() if data_dir is None else ServerConfig(data_dir=data_dir)
    if path is None and (config.data_dir / CONFIG_NAME).exists():
        path = config.data_dir / CONFIG_NAME
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
            raw = tomllib.loads(text)
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read config {path}: {exc}") from exc
        check_keys(raw, text, Path(path))
        _apply(config, raw, Path(path).parent)
    for key, value in overrides.items():
        if value is not None:
            setattr(config, key, value)
    return config


def _apply(config: ServerConfig, raw: dict[str, Any], base: Path) -> None:
    simple, sections = SIMPLE, SECTIONS
    try:
        if "data_dir" in raw:
            config.data_dir = base / str(raw["data_dir"])
        for key, kind in simple.items():
            if key in raw:
                setattr(config, key, kind(raw[key]))
        for name, keys in sections.items():
            table = _section(raw, name)
            for key, kind in keys.items():
                if key in table:
                    setattr(config, key, kind(table[key]))
        store = raw.get("store")
        if isinstance(store, dict):
            if "url" in store:
                config.store_url = check_store_url(str(store["url"]))
        elif store is not None:
            config.store = str(store)
        quota = _section(raw, "quota")
        for key in ("per_user_bytes", "reserve_bytes"):
            if key in quota:
                value = int(quota[key])
                if value < 0:
                    raise ValueError(f"[quota] {key} must not be negative")
                setattr(config, f"quota_{key}", value)
        metrics = _section(raw, "metrics")
        if "token" in metrics:
            token = str(metrics["token"])
            if token and len(token) < 16:
                raise ValueError("[metrics] token must have at least 16 characters")
            config.metrics_token = token
        tls = _section(raw, "tls")
        if "cert" in tls:
            config.tls_cert = base / str(tls["cert"])
        if "key" in tls:
            config.tls_key = base / str(tls["key"])
        federation = _section(raw, "federation")
        if "identity" in federation:
            config.identity_dir = base / str(federation["identity"])
        if "trust_roots" in federation:
            config.trust_roots = [base / str(p) for p in federation["trust_roots"]]
        if "crls" in federation:
            config.crls = [base / str(p) for p in federation["crls"]]
        routes = _section(raw, "routes")
        config.routes = {
            str(domain).lower(): [str(u) for u in (urls if isinstance(urls, list) else [urls])]
            for domain, urls in routes.items()
        } or config.routes
        dns = _section(raw, "dns")
        if "nameservers" in dns:
            config.dns_nameservers = [str(n) for n in dns["nameservers"]]
        if "port" in dns:
            config.dns_port = int(dns["port"])
        if not 0 <= config.trash_days <= 36500:
            raise ValueError("[mailbox] trash_days must be between 0 and 36500")
        queue = _section(raw, "queue")
        for key in ("retry_base", "retry_max", "delay_notice", "lifetime"):
            if key in queue:
                setattr(config, key, float(queue[key]))
        if "batch_max" in queue:
            config.batch_max = int(queue["batch_max"])
        if "lease" in queue:  # how long a node may hold rows it relays before others take them
            config.relay_lease = float(queue["lease"])
            if not 1 <= config.relay_lease <= 86400:
                raise ValueError("[queue] lease must be between 1 and 86400 seconds")
        if "plugins" in raw:
            config.plugins = [
                PluginSpec(str(p["ref"]), int(p.get("priority", 100)), dict(p.get("options", {})))
                for p in raw["plugins"]
            ]
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"bad server config: {exc}") from exc
