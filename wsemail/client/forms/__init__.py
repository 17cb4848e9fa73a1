"""In charge of forms on the user's side (paper §3.2, §3.3, §4.2; DESIGN.md §8): finding
installed form plug-ins (`loader`) and the routed workflow (`workflow`: attach a form to a
draft, approve, reject, delegate, fetch and install a wheel on demand). What a form *is*
lives in `wsemail.core.forms`. Never imports Textual: a plug-in's screen is found by the TUI
through the `wsemail.form_screens` entry points.
"""

from __future__ import annotations

from wsemail.client.forms.loader import available, installed_forms, load

__all__ = ["available", "installed_forms", "load"]
