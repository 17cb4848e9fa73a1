"""In charge of mapped addresses (issue 18): addresses of this domain that are not
mailboxes, as the built-in `aliases` plug-in (role `mapped-address`).

    plugin   `Aliases`: aliases (sales@ to several users, here or, where server.toml
             allows, elsewhere), role addresses (the same, and what forms routing rules
             may name as approvers), auto-responders (answer every sender)
    rules    the checks made when one is set: no self-reference, no loop, not deeper
             than `mapping.MAX_DEPTH`, outside domains only where allowed
    records  every SQL string of the feature (component `addresses`)

Expansion at delivery (each mailbox once, loops capped, forwarding) is the server's
`wsemail.server.mapping`, for every mapped-address plug-in alike.
"""

from wsemail.server.addresses.plugin import Aliases

__all__ = ["Aliases"]
