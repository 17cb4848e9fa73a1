"""The house stays as docs/ARCHITECTURE.md draws it: no import circles, and every import
points down the layers (protocol < pki < core < client | server < bench, cli, tui).

Every import counts, also those inside functions and under `if TYPE_CHECKING:`: a lazy or
type-only import is still a dependency a reader has to follow.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator
from pathlib import Path

import wsemail

# room -> the rooms it may import (its own included)
ALLOWED: dict[str, set[str]] = {
    "protocol": {"protocol"},
    "pki": {"protocol", "pki"},
    "core": {"protocol", "pki", "core"},
    "client": {"protocol", "pki", "core", "client"},
    "server": {"protocol", "pki", "core", "server"},
    "bench": {"", "protocol", "pki", "core", "client", "server", "bench"},
    "tui": {"", "protocol", "pki", "core", "client", "tui"},
    "cli": {"", "protocol", "pki", "core", "client", "server", "bench", "tui", "cli"},
    "console": {"", "protocol", "client", "tui", "cli", "console"},  # the console script
    "": {"", "protocol", "core", "client"},  # wsemail/__init__.py: the public surface
}


def modules(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package below `root`."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(path: Path, name: str, known: dict[str, Path], package: str) -> Iterator[str]:
    """The package's modules that module `name` imports, resolved to files (a name taken
    from a package is the submodule when there is one, else the package itself)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == package:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] != package:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield sub if sub in known else base


def graph(root: Path, package: str) -> dict[str, set[str]]:
    known = modules(root, package)
    return {
        name: {t for t in imports(path, name, known, package) if t in known and t != name}
        for name, path in known.items()
    }


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return sorted(found)


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def wrong_way(edges: dict[str, set[str]]) -> list[str]:
    return [
        f"{source} -> {target}"
        for source, targets in sorted(edges.items())
        for target in sorted(targets)
        if room(target) not in ALLOWED[room(source)]
    ]


PACKAGE_ROOT = Path(wsemail.__file__).parent


def test_every_module_belongs_to_a_known_room() -> None:
    rooms = {room(m) for m in graph(PACKAGE_ROOT, "wsemail")}
    assert rooms <= set(ALLOWED), rooms - set(ALLOWED)


def test_the_package_has_no_import_circle() -> None:
    assert circles(graph(PACKAGE_ROOT, "wsemail")) == []


def test_every_import_points_down_the_layers() -> None:
    assert wrong_way(graph(PACKAGE_ROOT, "wsemail")) == []


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


def test_the_checks_fail_on_a_circle_and_on_a_wrong_direction(tmp_path: Path) -> None:
    """The same checks on a small package built to break them: they must say so."""
    _write(
        tmp_path,
        {
            "__init__.py": "",
            "protocol/__init__.py": "",
            "protocol/soap.py": "from wsemail.server import app\n",
            "server/__init__.py": "",
            "server/app.py": "from wsemail.server.relay import Relay\n",
            "server/relay.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from wsemail.server.app import Server\n"
            ),
            "client/__init__.py": "",
            "client/mail.py": "def f():\n    from wsemail.tui import app\n",
            "tui/__init__.py": "",
            "tui/app.py": "from . import widgets\n",
            "tui/widgets.py": "from .app import X\n",
        },
    )
    edges = graph(tmp_path, "wsemail")
    assert circles(edges) == [
        ["wsemail.server.app", "wsemail.server.relay"],
        ["wsemail.tui.app", "wsemail.tui.widgets"],
    ]
    assert wrong_way(edges) == [
        "wsemail.client.mail -> wsemail.tui.app",
        "wsemail.protocol.soap -> wsemail.server.app",
    ]
