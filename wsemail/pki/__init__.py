"""In charge of the federation PKI: the root, the per-domain server certificate and issuing
CA, user certificates, CRLs, and deciding whether a peer's certificate is trusted.

Three tiers (DESIGN.md §4):

    federation root (self-signed, offline, 10 years)
    ├── server certificate of a.test   end-entity, SAN dNSName a.test, WSEMAIL_SERVER_ROLE
    └── issuing CA of a.test           cA, path length 0, name constraints a.test
        └── user certificate           SAN rfc822Name alice@a.test, WSEMAIL_USER_ROLE

`authority` runs the root's folder, `identity` is a domain server's side, `trust` verifies.
Errors come from `wsemail.protocol.errors` only: UsageError for local mistakes; UntrustedSigner,
RevocationUnavailable and SignatureInvalid for verification.
"""

from __future__ import annotations

from wsemail.pki._common import (
    WSEMAIL_SERVER_ROLE,
    WSEMAIL_USER_ROLE,
    ServerFiles,
    fingerprint,
    now_utc,
    read_cert,
    read_crl,
    thumbprint,
)
from wsemail.pki.authority import (
    IssuedRecord,
    create_root,
    issue_server,
    list_issued,
    revoke,
    write_crl,
)
from wsemail.pki.identity import ServerIdentity
from wsemail.pki.trust import SHORT_LIVED, TrustStore, certificate_address, has_key_usage

__all__ = [
    "IssuedRecord",
    "SHORT_LIVED",
    "ServerFiles",
    "ServerIdentity",
    "TrustStore",
    "certificate_address",
    "WSEMAIL_SERVER_ROLE",
    "WSEMAIL_USER_ROLE",
    "create_root",
    "fingerprint",
    "has_key_usage",
    "issue_server",
    "list_issued",
    "now_utc",
    "read_cert",
    "read_crl",
    "revoke",
    "thumbprint",
    "write_crl",
]
