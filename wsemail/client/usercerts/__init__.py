"""In charge of a user's own certificate and end-to-end mail (DESIGN.md §8): the key pair
kept encrypted on this device (`keystore`), W3C XML Encryption 1.1 (`xmlenc`), finding and
trusting other users' certificates (`directory`), sealing and opening messages (`sealed`),
encrypted on-demand attachments (`filecrypt` the chunked file format, `attachments` the
upload and fetch), and talking to the home server about certificates, including
certificate login (`client`).
"""

from __future__ import annotations

from wsemail.client.usercerts.attachments import (
    EncryptedAttachment,
    fetch_encrypted,
    open_listing,
    upload_encrypted,
)
from wsemail.client.usercerts.client import (
    CertificateClient,
    CertInfo,
    list_certificates,
    request_certificate,
    revoke,
    send_encrypted,
)
from wsemail.client.usercerts.dircache import Published
from wsemail.client.usercerts.directory import Directory, NoCertificate, accept
from wsemail.client.usercerts.filecrypt import SealedFile
from wsemail.client.usercerts.keystore import UserKey, new_private_key
from wsemail.client.usercerts.sealed import ENCRYPTED_SUBJECT, Opened, is_sealed, open_sealed, seal

__all__ = [
    "ENCRYPTED_SUBJECT",
    "CertInfo",
    "CertificateClient",
    "Directory",
    "EncryptedAttachment",
    "NoCertificate",
    "Opened",
    "Published",
    "SealedFile",
    "UserKey",
    "accept",
    "fetch_encrypted",
    "is_sealed",
    "list_certificates",
    "new_private_key",
    "open_listing",
    "open_sealed",
    "request_certificate",
    "revoke",
    "seal",
    "send_encrypted",
    "upload_encrypted",
]
