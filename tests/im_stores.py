"""The plug-ins an IM test server loads on each store: all of them on SQLite; on PostgreSQL
those that run there so far (issue 20: the other features are being ported one by one)."""

from __future__ import annotations

from wsemail.server.config import DEFAULT_PLUGINS
from wsemail.server.pipeline import PluginSpec

ON_POSTGRESQL = {"relay-policy", "size-limit", "im", "local-delivery", "sqlite-queue", "admin"}


def ported_plugins(store_url: str, **im_options: object) -> list[PluginSpec]:
    """DEFAULT_PLUGINS (the `im` one with `im_options`), less what `store_url`'s store
    cannot load yet."""
    return [
        PluginSpec("im", spec.priority, dict(im_options)) if spec.ref == "im" else spec
        for spec in DEFAULT_PLUGINS
        if not store_url or spec.ref in ON_POSTGRESQL
    ]
