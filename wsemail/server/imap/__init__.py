"""In charge of IMAP for existing mail programs (issue 19): an IMAP4rev1 (RFC 3501) server
over the wsemail mailbox, with LITERAL+, UIDPLUS, MOVE, IDLE, SPECIAL-USE.

    plugin     the `imap` server plug-in: options, the listener's life, IDLE wake-ups
    service    the listener (own thread and loop, TLS), what sessions share
    session    one connection: reading, dispatching, logging in (`Session`)
    state      what a session's parts share: answers, units of work, the folder view
    folders    the authenticated state's commands (SELECT, LIST, STATUS, APPEND, …)
    messages   the selected state's commands (FETCH, STORE, COPY/MOVE, EXPUNGE, SEARCH, IDLE)
    parser     reading commands strictly (lines, literals, nesting)
    fetch      FETCH items; search: SEARCH criteria; sequence: sequence sets
    render     a wsemail message as RFC 5322/MIME, ENVELOPE, BODYSTRUCTURE, sections
    utf7       modified UTF-7 folder names
    records    every SQL string of the feature (UIDs, UIDVALIDITY: its own tables)
"""

from wsemail.server.imap.plugin import Imap

__all__ = ["Imap"]
