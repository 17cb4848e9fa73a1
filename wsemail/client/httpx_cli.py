"""In charge of keeping httpx's command-line tool out of a wsemail process.

`import httpx` runs `from ._main import main`, which loads click, pygments and rich's
progress bars and syntax highlighting whenever they are installed (they are: the CLI and
the TUI need them) — about 100 ms of a cold start for a tool wsemail never runs. `defer()`
puts a stand-in `httpx._main` in place before httpx is imported: its `main` loads the real
module when called, so `httpx.main` still works; nothing else of httpx changes.
"""

from __future__ import annotations

from typing import Any

from wsemail.core import standin

NAME = "httpx._main"


def _main(*args: Any, **kwargs: Any) -> Any:
    """httpx's `main`, loaded on first call."""
    return standin.real(NAME).main(*args, **kwargs)


def defer() -> None:
    """Install the stand-in unless httpx (or its tool) is already imported."""
    standin.install(NAME, "httpx's command-line tool, loaded when first run", {"main": _main})
