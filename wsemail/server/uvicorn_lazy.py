"""In charge of the parts of uvicorn a serving process loads only when they are used: its
command line, and its WebSocket protocol.

`import uvicorn` (and so any `uvicorn.*` import: the package's `__init__` runs first) runs
`from uvicorn.main import Server, main, run`, and `uvicorn.main` is the `uvicorn` command:
click, and the reload and multiprocess supervisors with watchfiles (its Rust notifier and
anyio's backends) and multiprocessing, about 3 MB of a server's RSS for a command wsemail
never runs. `defer()` puts a stand-in `uvicorn.main` in place before uvicorn is imported:
its `Server` is `uvicorn.server.Server` (what the real module exports), and `main`, `run`
or any other name loads the real module, so `uvicorn.main(...)` and `uvicorn.run(...)`
still work; nothing else of uvicorn changes.

The server has no WebSocket route, yet uvicorn's `ws="auto"` imports websockets when the
server starts (about 1.8 MB) to answer an upgrade request; `websocket_protocol` is the same
protocol, imported at the first such request, so the answer stays the same (the app does
not accept it: 403).
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import types
from typing import Any

from wsemail.core import standin

NAME = "uvicorn.main"


def _real() -> types.ModuleType:
    """The real `uvicorn.main` (the stand-in makes way for it on first use)."""
    real = standin.real(NAME)
    package = sys.modules["uvicorn"]
    package.main = real.main  # type: ignore[attr-defined]  # the import set it to the module
    return real


def _main(*args: Any, **kwargs: Any) -> Any:
    """uvicorn's command (`uvicorn.main`), loaded on first call."""
    return _real().main(*args, **kwargs)


def _run(*args: Any, **kwargs: Any) -> Any:
    """`uvicorn.run`, loaded on first call."""
    return _real().run(*args, **kwargs)


def _attribute(name: str) -> Any:
    if name == "Server":  # what `uvicorn/__init__` takes from here, without the command
        return importlib.import_module("uvicorn.server").Server
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(_real(), name)


def defer() -> None:
    """Install the stand-in unless uvicorn (or its command) is already imported."""
    standin.install(
        NAME,
        "uvicorn's command line, loaded when first used",
        {"main": _main, "run": _run, "__getattr__": _attribute},
    )


def websocket_protocol(**kwargs: Any) -> asyncio.Protocol:
    """uvicorn's `ws="auto"` protocol for one upgrade request, imported at the first."""
    from uvicorn.protocols.websockets.auto import AutoWebSocketsProtocol

    if AutoWebSocketsProtocol is None:  # neither websockets nor wsproto is installed
        raise RuntimeError("no WebSocket library")
    return AutoWebSocketsProtocol(**kwargs)
