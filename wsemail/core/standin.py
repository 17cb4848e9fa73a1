"""In charge of stand-in modules: a module that a package imports when it is imported (for
a name or two) but that loads much more, put in its place until one of its names is used.

`install` puts the stand-in in `sys.modules` before the package is imported; its
attributes load the real module through `real`, which lets the stand-in make way.
Used for httpx's command-line tool (`client/httpx_cli.py`) and uvicorn's
(`server/uvicorn_lazy.py`).
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Mapping
from typing import Any


def install(name: str, doc: str, attributes: Mapping[str, Any]) -> None:
    """Put a stand-in `name` with `attributes` in place, unless its package (or the module
    itself) is already imported: then it is too late, and the real one is there."""
    if name.partition(".")[0] in sys.modules or name in sys.modules:
        return
    stand_in = types.ModuleType(name, doc)
    for key, value in attributes.items():
        setattr(stand_in, key, value)
    stand_in.deferred = True  # type: ignore[attr-defined]
    sys.modules[name] = stand_in


def real(name: str) -> types.ModuleType:
    """The real module `name` (imported now if the stand-in was still in its place)."""
    if getattr(sys.modules.get(name), "deferred", False):
        del sys.modules[name]
    return importlib.import_module(name)
