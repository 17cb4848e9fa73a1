"""In charge of on-demand attachments on the server (ICWS 2005 paper §4, DESIGN.md §8):
attachments stay on the sender's server and each recipient fetches them with a federated
identity certificate issued by its own server.

    plugin     the composite plug-in (sending processor + `attachments` extension)
    federated  IssueToken and FetchAttachment (the federated-identity operations)
    streams    the upload and download byte streams (one-time tickets, byte ranges)
    spool      an upload hashed and written in a worker thread, off the event loop
    storage    bytes on disk under server-generated names (tmp → fsync → rename → fsync)
    chunks     bytes as chunk rows on the PostgreSQL store (every node of the domain)
    records    the plug-in's tables: uploads, recipients, tickets, audit log
"""

from __future__ import annotations

from wsemail.server.attachments.plugin import OnDemandAttachments

__all__ = ["OnDemandAttachments"]
