"""In charge of what a form is, wherever it is read (DESIGN.md §8): the plug-in contract
(`contract`), form documents (`document`), signed approval chains (`approvals`) and signed
wheels with their checks (`wheels`). Headless and side-free: the client installs and fills
forms (`wsemail.client.forms`), the server routes and verifies them (`wsemail.server.forms`).
"""

from __future__ import annotations

from wsemail.core.forms.approvals import Chain, Entry
from wsemail.core.forms.contract import GROUP, SCREEN_GROUP, Field, FormInvalid, FormPlugin, Step
from wsemail.core.forms.document import WF, FormDocument, FormError, PluginRef, is_form_body
from wsemail.core.forms.wheels import Installed, WheelRefused, plugin_dir

__all__ = [
    "GROUP",
    "SCREEN_GROUP",
    "WF",
    "Chain",
    "Entry",
    "Field",
    "FormDocument",
    "FormError",
    "FormInvalid",
    "FormPlugin",
    "Installed",
    "PluginRef",
    "Step",
    "WheelRefused",
    "is_form_body",
    "plugin_dir",
]
