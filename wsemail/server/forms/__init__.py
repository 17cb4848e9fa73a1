"""In charge of the server side of forms (DESIGN.md §8): see `plugin`."""

from __future__ import annotations

from wsemail.core.forms.document import WHEEL_PATH
from wsemail.server.forms.plugin import FormsPlugin

__all__ = ["WHEEL_PATH", "FormsPlugin"]
