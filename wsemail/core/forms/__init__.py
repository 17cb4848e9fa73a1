"""In charge of what a form is, wherever it is read (DESIGN.md §8): the plug-in contract
(`contract`), form documents (`document`), signed approval chains (`approvals`) and signed
wheels with their checks (`wheels`). Headless and side-free: the client installs and fills
forms (`wsemail.client.forms`), the server routes and verifies them (`wsemail.server.forms`).

The names below are imported from their module when first used, so importing one module of
the package (a server reading form documents) does not load the others (the wheels'
installer, the approval chains).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wsemail.core import standin

if TYPE_CHECKING:
    from wsemail.core.forms.approvals import Chain, Entry
    from wsemail.core.forms.contract import (
        GROUP,
        SCREEN_GROUP,
        Field,
        FormInvalid,
        FormPlugin,
        Step,
    )
    from wsemail.core.forms.document import WF, FormDocument, FormError, PluginRef, is_form_body
    from wsemail.core.forms.wheels import Installed, WheelRefused, plugin_dir

_HOMES = {
    "Chain": "approvals",
    "Entry": "approvals",
    "GROUP": "contract",
    "SCREEN_GROUP": "contract",
    "Field": "contract",
    "FormInvalid": "contract",
    "FormPlugin": "contract",
    "Step": "contract",
    "WF": "document",
    "FormDocument": "document",
    "FormError": "document",
    "PluginRef": "document",
    "is_form_body": "document",
    "Installed": "wheels",
    "WheelRefused": "wheels",
    "plugin_dir": "wheels",
}

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


__getattr__ = standin.names_from(
    __name__, globals(), {name: f"{__name__}.{home}" for name, home in _HOMES.items()}
)
