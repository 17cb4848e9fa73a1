"""In charge of the forms plug-in's `Countersign` operation: this server's stamp on a form
act or a wheel signature one of its own users made (`wsemail.core.forms.stamps`), which
fixes the time that counts for it.

The request is a top-level operation `Countersign(Address, Server, Nonce,
IssuerCertificate, Signed)`, XMLDSIG-signed by the user's federated identity certificate
over Body and Timestamp (as `Autofill`); `Signed` is the signed element, base64. Checked
before any transaction: the request (`verify_identity_request`: chain, CRLs, freshness,
addressed here), a user of this domain under this server's issuing CA, then the element
(`stamps.claim_for`: its signature by a certificate of that same user valid and unrevoked
now, its `At` within the window). In the transaction: the nonce, and for an act, one
decision per (form, step, signer): an act of the same signer on the same step with another
decision (approve, reject, or delegate to someone else) is refused (Forbidden); the same
decision again is stamped again (a client's retry after a lost Send).
"""

from __future__ import annotations

import base64
import binascii
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from lxml import etree

from wsemail.core.forms import stamps
from wsemail.core.forms.document import FormError
from wsemail.protocol import soap
from wsemail.protocol.errors import Forbidden, ReplayDetected, RequestInvalid
from wsemail.protocol.soap import element, q, text_of
from wsemail.server.attachments.federated import verify_own_user_request
from wsemail.server.sql import POSTGRESQL, SQLITE
from wsemail.server.store import Tx

if TYPE_CHECKING:
    from wsemail.server.app import Server

log = logging.getLogger("wsemail.forms")
OPERATION = "Countersign"
COMPONENT = "forms-stamps"
MIGRATIONS = {
    SQLITE: [
        """
    CREATE TABLE forms_acts(
        form_id TEXT NOT NULL,
        step INTEGER NOT NULL,
        signer TEXT NOT NULL,
        decision TEXT NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY(form_id, step, signer)
    )
    """
    ],
    POSTGRESQL: [
        """
    CREATE TABLE forms_acts(
        form_id TEXT NOT NULL,
        step BIGINT NOT NULL,
        signer TEXT NOT NULL,
        decision TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY(form_id, step, signer)
    )
    """
    ],
}


def _once(tx: Tx, claim: stamps.Claim) -> None:
    inserted = tx.conn.execute(
        "INSERT INTO forms_acts(form_id, step, signer, decision, at) VALUES (?,?,?,?,?) "
        "ON CONFLICT DO NOTHING",
        (claim.form_id, claim.step, claim.signer, claim.decision, tx.now),
    ).rowcount
    if inserted:
        return
    row = tx.conn.execute(
        "SELECT decision FROM forms_acts WHERE form_id=? AND step=? AND signer=?",
        (claim.form_id, claim.step, claim.signer),
    ).fetchone()
    if row is None or row[0] != claim.decision:
        raise Forbidden(f"{claim.signer} already acted on step {claim.step} of {claim.form_id}")


async def countersign(server: Server, envelope: soap.ReceivedEnvelope, peer: str) -> etree._Element:
    """Verify a signed Countersign and answer with this server's stamp."""
    request = verify_own_user_request(server, envelope, OPERATION)
    op, address, nonce = request.operation, request.address, request.nonce
    federation, domain = server.federation, server.config.domain
    assert federation is not None  # verify_own_user_request refused otherwise
    try:
        data = base64.b64decode("".join((text_of(op, "Signed") or "").split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestInvalid("Signed is the signed element, base64") from exc
    now = datetime.fromtimestamp(server.clock(), UTC).replace(microsecond=0)
    try:
        claim = stamps.claim_for(data, address, federation.trust.verify_user, now)
    except FormError as exc:
        raise RequestInvalid(str(exc)) from exc
    keep = server.auth.keep_nonce

    def work(tx: Tx) -> None:
        if not tx.remember_nonce(f"user:{address}", nonce, keep):
            raise ReplayDetected("this request was already received")
        if claim.kind == "act":
            _once(tx, claim)

    await server.store.transact(work)
    stamp = stamps.make(claim, domain, federation.signer, now)
    log.info("stamped %s of %r (%s) from %s", claim.kind, address, claim.form_id or "-", peer)
    result = etree.Element(q("CountersignResponse"))
    element(result, "Stamp", base64.b64encode(etree.tostring(stamp)).decode("ascii"))
    return result
