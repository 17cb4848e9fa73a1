"""The form in which a stored copy goes back to its reader (Retrieve, GetThread): a copy
relayed from another domain travels with its compact provenance only (the content read
from the signed form RS verified, the signing certificate named by digest and kept in
`certificates` for the reader to fetch once)."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization

from wsemail.core import provenance
from wsemail.protocol.dsig import cert_digest
from wsemail.protocol.message import Message
from wsemail.server.store import Tx


def for_reader(tx: Tx, message: Message) -> Message:
    if message.signed_xml is None:
        return message
    found = provenance.compact(message.signed_xml, message)
    if found is None:
        return message
    compacted, cert = found
    digest = cert_digest(cert)
    if tx.certificate(digest) is None:  # stored before certificates were kept
        tx.put_certificate(digest, cert.public_bytes(serialization.Encoding.DER))
    return compacted
