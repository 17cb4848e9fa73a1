"""In charge of what happens to a user's mail at delivery by the user's own rules (issue
18), as the built-in `filters` plug-in (delivery processor + extension `filters`):

    plugin    the composite: at delivery the vacation responder, then the user's Sieve
              script (`wsemail.core.sieve`: fileinto, discard, redirect, addflag, keep);
              the extension sets, shows and removes both
    vacation  the vacation responder (RFC 5230 semantics: one reply per sender per N days,
              never to automatic, list or bulk mail, never to oneself)
    records   every SQL string of the feature (component `filters`)
"""

from wsemail.server.filters.plugin import Filters

__all__ = ["Filters"]
