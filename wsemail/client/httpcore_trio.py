"""In charge of keeping trio out of a wsemail process that does not run under it.

httpcore (httpx's transport, imported when the first `httpx.Client` is made) imports trio
whenever trio is installed, for its trio backend and locks should it ever run under trio —
about 65 ms of a cold start (trio comes with the test extras, through selenium). wsemail
runs its clients in threads and under asyncio, never under trio. `skip()` lets httpcore
import as if trio were absent (its trio backend then says trio is not installed); trio
itself stays importable by anything else, and when trio is already imported (something may
run under it) nothing changes.
"""

from __future__ import annotations

import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from importlib.abc import Loader

MODULE = "httpcore"  # its __init__ imports the trio backend and the locks that use trio


class _WithoutTrio:  # a loader (importlib.abc costs ~10 ms to import, so no base class)
    """Runs `loader` with trio hidden (an import of it raises ImportError meanwhile)."""

    def __init__(self, loader: Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        if "trio" in sys.modules:  # imported meanwhile: let httpcore see it
            self.loader.exec_module(module)
            return
        sys.modules["trio"] = None  # type: ignore[assignment]
        try:
            self.loader.exec_module(module)
        finally:
            if sys.modules.get("trio", False) is None:
                del sys.modules["trio"]


class _Finder:  # a meta path finder
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != MODULE:
            return None
        _remove()
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None and "trio" not in sys.modules:
            spec.loader = cast("Loader", _WithoutTrio(spec.loader))
        return spec


_finder = _Finder()


def _remove() -> None:
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)


def skip() -> None:
    """Hide trio from httpcore's import, unless httpcore or trio is imported already."""
    if MODULE in sys.modules or "trio" in sys.modules or _finder in sys.meta_path:
        return
    sys.meta_path.insert(0, _finder)
