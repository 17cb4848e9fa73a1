"""In charge of the user-certificate plug-in, one composite (DESIGN.md §5, §8):

- extension `usercerts` (password MAC or certificate login, via `Extension`): Issue (also
  used to renew: a new certificate for the same or a new key), Revoke, List;
- top-level `LookupCertificate` (unauthenticated, read only): a user's newest valid
  certificate with its issuing CA and the CRLs a verifier needs (this domain's user CRL and
  the root CRLs this server holds);
- certificate login (`CertificateCall`): the certificate checks the server's one
  authentication path asks for (see `wsemail.server.usercerts.login`);
- the user CRL: regenerated after each revocation and before it goes stale, kept in the
  server's trust store and written to `<data dir>/usercerts/user-crl.pem`.

Certificates carry key usage digitalSignature + keyAgreement: one P-256 key signs mail and
receives mail encrypted with ECDH-ES.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from lxml import etree

from wsemail.pki import ServerIdentity
from wsemail.protocol import soap
from wsemail.protocol.errors import Forbidden, NotFound, RemoteFault, RequestInvalid
from wsemail.protocol.message import domain_of, normalize_address
from wsemail.protocol.soap import element, int_of, parse_int, q, text_of
from wsemail.server.pipeline import Environment, ExtensionProcessor
from wsemail.server.sql import POSTGRESQL, SQLITE
from wsemail.server.store import Tx

if TYPE_CHECKING:
    from wsemail.server.app import Server

log = logging.getLogger("wsemail.usercerts")
EXTENSION_ID = "usercerts"
MIN_LIFETIME = timedelta(days=1)
MAX_LIFETIME_DAYS = 36_525  # what IssueCertificate reads (then cut to the plug-in's maximum)
MIGRATIONS = {
    SQLITE: [
        """
    CREATE TABLE user_certs (
        serial TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        der BLOB NOT NULL,
        issued REAL NOT NULL,
        expires REAL NOT NULL,
        revoked REAL
    );
    CREATE INDEX user_certs_address ON user_certs(address, issued)
    """
    ],
    POSTGRESQL: [
        """
    CREATE TABLE user_certs (
        serial TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        der BYTEA NOT NULL,
        issued DOUBLE PRECISION NOT NULL,
        expires DOUBLE PRECISION NOT NULL,
        revoked DOUBLE PRECISION
    );
    CREATE INDEX user_certs_address ON user_certs(address, issued);
    CREATE INDEX user_certs_revoked ON user_certs(serial) WHERE revoked IS NOT NULL
    """
    ],
}


def der64(cert: x509.Certificate | x509.CertificateRevocationList) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")


def _public_key(op: etree._Element) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    try:
        raw = base64.b64decode("".join((text_of(op, "PublicKey") or "").split()), validate=True)
        key = serialization.load_der_public_key(raw)
    except (binascii.Error, ValueError) as exc:
        raise RequestInvalid("PublicKey must be a base64 DER SubjectPublicKeyInfo") from exc
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048:
        return key
    raise RequestInvalid("only P-256 and RSA (2048 bits or more) keys can be certified")


class UserCertificates(ExtensionProcessor):
    """User certificates: issue, renew, revoke, publish; certificate login."""

    name = "usercerts"
    extension_id = EXTENSION_ID

    def __init__(
        self,
        lifetime_days: int = 365,
        max_lifetime_days: int = 730,
        crl_days: int = 1,
    ) -> None:
        self.lifetime = timedelta(days=int(lifetime_days))
        self.max_lifetime = timedelta(days=int(max_lifetime_days))
        self.crl_days = int(crl_days)
        self.server: Server | None = None
        self._crl: x509.CertificateRevocationList | None = None
        self._lock = threading.Lock()

    # lifecycle ----------------------------------------------------------------------------
    def attach(self, server: Any) -> None:
        from wsemail.server.usercerts import login

        if server.federation is None:
            return
        self.server = server
        server.store.ensure_schema(self.name, MIGRATIONS)
        server.operations["LookupCertificate"] = self.lookup
        server.certificate_login = login.CertificateLogin(self, server)
        if not self._reuse_crl():
            self.publish_crl()

    def close(self) -> None:
        server = self.server
        if server is not None:
            server.operations.pop("LookupCertificate", None)
            server.certificate_login = None

    def _identity(self) -> ServerIdentity:
        if self.server is None or self.server.federation is None:
            raise Forbidden("this server issues no user certificates")
        identity: ServerIdentity = self.server.federation.identity
        return identity

    def _now(self) -> datetime:
        assert self.server is not None
        return datetime.fromtimestamp(self.server.clock(), UTC)

    # CRL ----------------------------------------------------------------------------------
    def publish_crl(self) -> x509.CertificateRevocationList:
        """Sign a fresh user CRL from the revoked rows; keep it and trust it."""
        server = self.server
        assert server is not None and server.federation is not None
        revoked = self._revoked()
        identity = self._identity()
        path = server.config.data_dir / "usercerts" / "user-crl.pem"
        path.parent.mkdir(parents=True, exist_ok=True)
        crl = identity.write_user_crl(path, revoked, days=self.crl_days, now=self._now())
        server.federation.trust.add_crl(crl, issuer=identity.issuing_cert)
        with self._lock:
            self._crl = crl
        return crl

    def _revoked(self) -> dict[int, datetime]:
        server = self.server
        assert server is not None
        rows = server.store.transact_sync(
            lambda tx: tx.conn.execute(
                "SELECT serial, revoked FROM user_certs WHERE revoked IS NOT NULL"
            ).fetchall()
        )
        return {int(s): datetime.fromtimestamp(r, UTC) for s, r in rows}

    def _reuse_crl(self) -> bool:
        """At start: keep the user CRL on disk when it is this issuer's, lists exactly the
        revoked rows and has more than half its life left (a start writes nothing that did
        not change: on a full disk it could not)."""
        server = self.server
        assert server is not None and server.federation is not None
        path = server.config.data_dir / "usercerts" / "user-crl.pem"
        identity = self._identity()
        try:
            crl = x509.load_pem_x509_crl(path.read_bytes())
            next_update = crl.next_update_utc
            if (
                next_update is None
                or next_update - self._now() < timedelta(days=self.crl_days) / 2
                or crl.last_update_utc > self._now()
                or {r.serial_number for r in crl} != set(self._revoked())
            ):
                return False
            server.federation.trust.add_crl(crl, issuer=identity.issuing_cert)
        except (OSError, ValueError, RemoteFault):
            return False
        with self._lock:
            self._crl = crl
        return True

    def current_crl(self) -> x509.CertificateRevocationList:
        """The user CRL, re-signed when less than half its life remains."""
        with self._lock:
            crl = self._crl
        next_update = None if crl is None else crl.next_update_utc
        if (
            crl is None
            or next_update is None
            or next_update - self._now() < timedelta(days=self.crl_days) / 2
        ):
            crl = self.publish_crl()
        return crl

    # the extension ------------------------------------------------------------------------
    def handle(self, payload: etree._Element, env: Environment) -> etree._Element | None:
        request = [c for c in payload if isinstance(c.tag, str)]
        if len(request) != 1:
            raise RequestInvalid("the usercerts extension takes exactly one request element")
        op = request[0]
        action = etree.QName(op).localname
        if action == "Issue":
            return self._issue(op, env)
        if action == "Revoke":
            return self._revoke(op, env)
        if action == "List":
            return self._list(env)
        raise RequestInvalid(f"unknown usercerts request {action!r}")

    def _issue(self, op: etree._Element, env: Environment) -> etree._Element:
        key = _public_key(op)
        days = int_of(op, "LifetimeDays", 1, MAX_LIFETIME_DAYS, 0)  # 0: the default
        lifetime = timedelta(days=days) if days else self.lifetime
        lifetime = max(MIN_LIFETIME, min(lifetime, self.max_lifetime))
        identity = self._identity()
        now = datetime.fromtimestamp(env.clock(), UTC)
        cert = identity.issue_user_cert(
            env.principal, key, lifetime=lifetime, now=now, encryption=True
        )
        env.tx.conn.execute(
            "INSERT INTO user_certs(serial, address, der, issued, expires) VALUES (?,?,?,?,?)",
            (
                str(cert.serial_number),
                env.principal,
                cert.public_bytes(serialization.Encoding.DER),
                now.timestamp(),
                cert.not_valid_after_utc.timestamp(),
            ),
        )
        log.info(
            "issued a user certificate to %r until %s", env.principal, cert.not_valid_after_utc
        )
        result = etree.Element(q("Issued"))
        element(result, "Certificate", der64(cert))
        element(result, "IssuerCertificate", der64(identity.issuing_cert))
        element(result, "Serial", str(cert.serial_number))
        element(result, "Expires", cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"))
        return result

    def _revoke(self, op: etree._Element, env: Environment) -> etree._Element:
        serial = (text_of(op, "Serial") or "").strip()
        if serial:  # an X.509 serial number: at most 20 octets
            serial = str(parse_int(serial, "Serial", 0, 2**160))
        sql = "UPDATE user_certs SET revoked=? WHERE address=? AND revoked IS NULL"
        args: tuple[object, ...] = (env.tx.now, env.principal)
        if serial:
            sql += " AND serial=?"
            args = (*args, serial)
        count = env.tx.conn.execute(sql, args).rowcount
        if serial and count == 0:
            raise NotFound("no such active certificate of yours")
        env.after_commit.append(self.publish_crl)
        log.info("%r revoked %d user certificate(s)", env.principal, count)
        result = etree.Element(q("Revoked"))
        element(result, "Count", str(count))
        return result

    def _list(self, env: Environment) -> etree._Element:
        rows = env.tx.conn.execute(
            "SELECT serial, expires, revoked FROM user_certs WHERE address=? ORDER BY issued DESC",
            (env.principal,),
        ).fetchall()
        result = etree.Element(q("Certificates"))
        for serial, expires, revoked in rows:
            node = element(result, "Certificate")
            node.set("serial", str(serial))
            node.set("expires", datetime.fromtimestamp(expires, UTC).isoformat())
            node.set("state", "revoked" if revoked is not None else "active")
        return result

    # the directory ------------------------------------------------------------------------
    async def lookup(
        self, server: Server, envelope: soap.ReceivedEnvelope, peer: str
    ) -> etree._Element:
        """Public: `Address`'s newest active certificate, its issuer and the CRLs."""
        try:
            address = normalize_address(text_of(envelope.operation, "Address") or "")
        except RequestInvalid as exc:
            raise RequestInvalid("LookupCertificate needs a valid Address") from exc
        if domain_of(address) != server.config.domain:
            raise Forbidden(f"{server.config.domain} publishes certificates of its own users only")
        now = server.clock()

        def work(tx: Tx) -> tuple[bytes | None, int | None]:
            row = tx.conn.execute(
                "SELECT der FROM user_certs WHERE address=? AND revoked IS NULL AND expires>? "
                "ORDER BY issued DESC LIMIT 1",
                (address, now),
            ).fetchone()
            revoked = None
            if tx.dialect == POSTGRESQL:  # another node of the domain may have revoked some
                found = tx.conn.execute(
                    "SELECT count(*) FROM user_certs WHERE revoked IS NOT NULL"
                ).fetchone()
                revoked = int(found[0])
            return None if row is None else bytes(row[0]), revoked

        der, revoked = await server.store.transact(work)
        if der is None:
            raise NotFound(f"{address} has no certificate for encrypted mail")
        identity = self._identity()
        crl = self.current_crl()
        if revoked is not None and len(crl) != revoked:  # revoked through another node
            crl = self.publish_crl()
        result = etree.Element(q("LookupCertificateResponse"))
        element(result, "Address", address)
        element(result, "Certificate", base64.b64encode(der).decode("ascii"))
        element(result, "IssuerCertificate", der64(identity.issuing_cert))
        element(result, "Crl", der64(crl))
        assert server.federation is not None
        for crl in _pem_crls(server.federation.crl_pem()):
            element(result, "Crl", der64(crl))
        return result


def _pem_crls(data: bytes) -> list[x509.CertificateRevocationList]:
    marker = b"-----BEGIN X509 CRL-----"
    found = []
    for block in data.split(marker)[1:]:
        try:
            found.append(x509.load_pem_x509_crl(marker + block))
        except ValueError:
            continue
    return found
