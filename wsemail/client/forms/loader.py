"""In charge of finding form plug-ins: installed distributions (entry-point group
`wsemail.forms`) first, then the private plug-in folder's registry, whose files are
re-checked against their RECORD before anything is imported."""

from __future__ import annotations

import importlib
import logging
import sys
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from wsemail.core.forms.contract import GROUP, FormPlugin
from wsemail.core.forms.wheels import check_installed, registry
from wsemail.protocol.errors import PluginError, WsemailError

log = logging.getLogger("wsemail.forms")


def _installed_entry_points() -> list[EntryPoint]:
    """Entry points of the environment's distributions; a private plug-in folder put on
    sys.path by `load` does not count (its registry and version checks apply)."""
    found = []
    for ep in entry_points(group=GROUP):
        base = Path(str(ep.dist.locate_file(""))) if ep.dist is not None else None
        if base is not None and (base.parent / "registry.json").exists():
            continue
        found.append(ep)
    return found


def available(root: Path | None = None) -> dict[str, str]:
    """Form name → where it comes from, without importing anything."""
    found = {ep.name: ep.value for ep in _installed_entry_points()}
    for name, record in registry(root).items():
        found.setdefault(name, f"{record.target} ({record.version}, {record.path})")
    return found


def _plugin(obj: object, name: str) -> FormPlugin:
    if isinstance(obj, type) and issubclass(obj, FormPlugin):
        return obj()
    raise PluginError(f"{name!r} is not a wsemail form plug-in")


def load(name: str, version: str | None = None, root: Path | None = None) -> FormPlugin:
    """The plug-in for form `name` (and `version`, when given); PluginError if it is not
    installed, listing what is."""
    for ep in _installed_entry_points():
        if ep.name == name:
            try:
                plugin = _plugin(ep.load(), name)
            except Exception as exc:
                raise PluginError(f"cannot load form plug-in {name!r}: {exc}") from exc
            if version is None or plugin.version == version:
                return plugin
    record = registry(root).get(name)
    if record is not None and (version is None or record.version == version):
        check_installed(record)
        module_name, _, attr = record.target.partition(":")
        if record.path not in sys.path:
            sys.path.insert(0, record.path)
        try:
            plugin = _plugin(getattr(importlib.import_module(module_name), attr), name)
        except (ImportError, AttributeError) as exc:
            raise PluginError(f"cannot load form plug-in {name!r}: {exc}") from exc
        if plugin.name != name or plugin.version != record.version:
            raise PluginError(f"{record.path} does not hold {name} {record.version}")
        return plugin
    wanted = f"{name} {version}" if version else name
    installed = ", ".join(sorted(available(root))) or "none"
    raise PluginError(f"form plug-in {wanted} is not installed; installed: {installed}")


def installed_forms(root: Path | None = None) -> list[FormPlugin]:
    """Every form plug-in that loads (sorted by name), for a "new form" menu; one that
    does not (damaged, or an unverified file) is left out with a warning."""
    plugins = []
    for name in sorted(available(root)):
        try:
            plugins.append(load(name, root=root))
        except WsemailError as exc:
            log.warning("form plug-in %r left out: %s", name, exc)
    return plugins
