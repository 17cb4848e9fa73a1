"""In charge of the server side of user certificates (DESIGN.md §8): issuing, renewing and
revoking long-lived user certificates, the user CRL, the public directory of current
encryption certificates, and certificate login."""

from __future__ import annotations

from wsemail.server.usercerts.plugin import EXTENSION_ID, UserCertificates

__all__ = ["EXTENSION_ID", "UserCertificates"]
