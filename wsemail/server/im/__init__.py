"""In charge of instant messaging on the mail identity (paper §4.1, DESIGN.md §8): messages
flagged `Instant` are pushed to the recipient's live sessions, else kept in the mailbox as
"meant as an instant message", or dropped with a notice to the sender.

    plugin   the composite plug-in (sending + delivery processor + `im` extension)
    hub      live push sessions (server-sent events), pushes released after commit, the
             sessions' unacknowledged pushes
    newmail  new-mail events for sessions that follow new mail (`wsemail watch`, the TUI)
    notices  telling a sender that an instant message was dropped
    policy   who may send an instant message to whom (allow / block lists, other domains)
    direct   `DirectInstant`: a user-signed message straight to the recipient's server
    channel  the party line: TLS 1.3 listeners, admission of invited users, relay of lines
    nodes    several nodes on one PostgreSQL store: shared presence, pushes, acks and new
             mail told to the other nodes (NOTIFY / LISTEN)
    records  the plug-in's tables: stream tickets, access lists, history, missed messages,
             pushes waiting for an acknowledgement, new-mail events
"""

from __future__ import annotations

from wsemail.server.im.plugin import InstantMessaging

__all__ = ["InstantMessaging"]
