"""In charge of the server side of forms (DESIGN.md §8): see `plugin`."""

from __future__ import annotations

from wsemail.server.forms.plugin import WHEEL_PATH, FormsPlugin

__all__ = ["WHEEL_PATH", "FormsPlugin"]
