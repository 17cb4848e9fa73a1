"""In charge of client-side form plug-ins and routed workflows (paper §3.2, §3.3, §4.2;
DESIGN.md §8), headless: the plug-in contract, form documents, signed approval chains, and
signed wheels installed on demand. Never imports Textual (the shared fill/view screen is
`wsemail.tui.formscreen`, a plug-in's own layout its `screen` module, both imported
lazily).
"""

from __future__ import annotations

from wsemail.forms.approvals import Chain, Entry
from wsemail.forms.contract import GROUP, Field, FormInvalid, FormPlugin, Step
from wsemail.forms.document import WF, FormDocument, FormError, PluginRef, is_form_body
from wsemail.forms.loader import available, installed_forms, load
from wsemail.forms.wheels import Installed, WheelRefused, plugin_dir

__all__ = [
    "GROUP",
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
    "available",
    "installed_forms",
    "is_form_body",
    "load",
    "plugin_dir",
]
