"""In charge of what a test bed run is asked to do (`Options`, the operation mix) and
what it counts per operation (`OpTally`, `Failure`)."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from wsemail.protocol.errors import UsageError

LOCAL, EXTERNAL = "local.test", "external.test"
OPS = ("send", "list", "retrieve", "delete")
PASSWORD = "testbed password"  # noqa: S105 -- throw-away accounts in a temp dir
PRIMED = 6
FEEDER = f"feeder@{EXTERNAL}"


def parse_mix(text: str) -> dict[str, float]:
    """`25,25,25,25` (send,list,retrieve,delete) or `send=40,list=20,...`; normalised."""
    weights: dict[str, float] = dict.fromkeys(OPS, 0.0)
    try:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if parts and all("=" not in p for p in parts):
            if len(parts) != len(OPS):
                raise ValueError
            weights = {op: float(p) for op, p in zip(OPS, parts, strict=True)}
        else:
            for part in parts:
                name, _, value = part.partition("=")
                if name.strip() not in weights:
                    raise ValueError
                weights[name.strip()] = float(value)
    except ValueError:
        raise UsageError(
            f"--mix {text!r}: use four weights for send,list,retrieve,delete (25,25,25,25) "
            "or name=weight pairs"
        ) from None
    total = sum(weights.values())
    if total <= 0 or any(w < 0 for w in weights.values()):
        raise UsageError("--mix needs non-negative weights with a positive sum")
    return {op: w / total for op, w in weights.items()}


@dataclass
class Options:
    clients: int = 4
    requests: int = 2000  # per client (ignored with a duration)
    mix: dict[str, float] = field(default_factory=lambda: dict.fromkeys(OPS, 0.25))
    size: int = 1024  # message body bytes
    duration: float | None = None  # seconds instead of a request count
    rate: float | None = None  # open loop: total requests/s over all clients
    feed_rate: float = 1.0  # messages/s from S_e to each client
    profile: Path | None = None
    plot: Path | None = None
    data_dir: Path | None = None
    seed: int | None = None
    signed_answers: bool = False  # clients ask for signed answers (certificate by digest)
    # the local domain on `nodes` servers over one PostgreSQL store: a postgresql:// URL of
    # an empty database, or "pg" for a throwaway server started by the test bed
    nodes: int = 1
    store: str = ""

    def check(self) -> None:
        if not 1 <= self.nodes <= 16:
            raise UsageError("--nodes must be between 1 and 16")
        if self.nodes > 1 and not self.store:
            raise UsageError("--nodes needs --store (postgresql://… or pg): the nodes share it")
        if (
            self.store
            and self.store != "pg"
            and not self.store.startswith(("postgresql://", "postgres://"))
        ):
            raise UsageError("--store is a postgresql:// URL, or pg for a throwaway server")
        if self.clients < 1 or self.clients > 256:
            raise UsageError("--clients must be between 1 and 256")
        if self.duration is None and self.requests < 1:
            raise UsageError("--requests must be at least 1")
        if self.duration is not None and self.duration <= 0:
            raise UsageError("--duration must be positive")
        if self.rate is not None and self.rate <= 0:
            raise UsageError("--rate must be positive")
        if self.size < 0 or self.size > 1 << 20:
            raise UsageError("--size must be between 0 and 1048576 bytes")
        if self.plot is not None:
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                raise UsageError("--plot needs matplotlib: pip install 'matplotlib>=3.8'") from None
        if self.profile is not None and self.profile.suffix not in (".prof", ".pstats"):
            if py_spy() is None:
                raise UsageError("--profile: py-spy is not installed (or name a .prof file)")


@dataclass
class OpTally:
    latencies: list[float] = field(default_factory=list)  # ms
    sent: int = 0  # bytes client -> server (HTTP request line, headers, body)
    received: int = 0  # bytes server -> client
    failed: int = 0
    skipped: int = 0  # retrieve/delete with nothing in the inbox: no request made
    relayed: int = 0  # retrieves of a message relayed from S_e (with its compact provenance)
    relayed_received: int = 0


@dataclass
class Failure:
    op: str
    status: str
    body: str


# -- byte-counting TCP relay between the servers --------------------------------------------


def py_spy() -> str | None:
    return shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
