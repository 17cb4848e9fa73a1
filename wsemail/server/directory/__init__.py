"""In charge of the address directory (issue 18): users who chose to be listed, under a
display name, searched by prefix of name or address, by this domain's users and — signed
server to server — by other domains' users, within limits that keep it from being dumped.

    plugin     the composite plug-in (`directory` extension, `Directory`, `DirectoryQuery`)
    search     one search: the query's rules, pages, the result cap, signed cursors
    federated  asking another domain's server, and answering one
    records    the plug-in's table: who is listed, under which name
"""

from __future__ import annotations

from wsemail.server.directory.plugin import AddressDirectory

__all__ = ["AddressDirectory"]
