"""In charge of personal contacts kept on the server (issue 18): each user's address book
(add, edit, remove, list, import and export in bulk) and the addresses they sent mail to,
offered for adding.

    plugin   the composite plug-in (sending processor + `contacts` extension)
    records  the plug-in's tables: contacts, their addresses, addresses sent to
"""

from __future__ import annotations

from wsemail.server.contacts.plugin import PersonalContacts

__all__ = ["PersonalContacts"]
