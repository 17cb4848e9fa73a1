"""In charge of stand-in modules: a module that a package imports when it is imported (for
a name or two) but that loads much more, put in its place until one of its names is used.

`install` puts the stand-in in `sys.modules` before the package is imported; its
attributes load the real module through `real`, which lets the stand-in make way.
Used for httpx's command-line tool (`client/httpx_cli.py`) and uvicorn's
(`server/uvicorn_lazy.py`). `names_from` is the same for a package's own names: its
`__getattr__` imports a name's module when the name is first used (`wsemail`,
`wsemail.client`, `wsemail.core.forms`).
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable, Mapping
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


def names_from(
    package: str, namespace: dict[str, Any], homes: Mapping[str, str]
) -> Callable[[str], Any]:
    """A package's `__getattr__` for names imported when first used: `homes` maps each name
    to the module that defines it; a name found is kept in `namespace` (the package's
    globals), so the next use is a plain look-up."""

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:  # a submodule not imported yet: the import system imports it
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        namespace[name] = value
        return value

    return __getattr__
