"""In charge of the federation root's folder: the self-signed root, the two certificates it
issues to each domain's server (server certificate and issuing CA), the index of what was
issued, revocation, and the root-signed CRL.

The folder (``ca_dir``) holds ``root.pem``, ``root.key`` (0600), ``index.json`` and
``crl.pem``. The root is meant to live offline: nothing here needs a network.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from wsemail.pki._common import (
    CLOCK_SKEW,
    WSEMAIL_SERVER_ROLE,
    PrivateKey,
    PublicKey,
    ServerFiles,
    check_domain,
    common_name,
    key_identifiers,
    new_key,
    not_after,
    now_utc,
    read_cert,
    read_key,
    write_cert,
    write_key,
    write_public,
)
from wsemail.protocol.errors import UsageError

ROOT_CERT = "root.pem"
ROOT_KEY = "root.key"
INDEX = "index.json"
CRL = "crl.pem"

Kind = Literal["root", "server", "issuing"]

_KU_CA = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
_KU_SERVER = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=True,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


@dataclass(frozen=True)
class IssuedRecord:
    """One line of the CA's index."""

    serial: int
    subject: str
    domain: str | None
    kind: Kind
    not_after: datetime
    revoked_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["not_after"] = self.not_after.isoformat()
        data["revoked_at"] = self.revoked_at.isoformat() if self.revoked_at else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IssuedRecord:
        revoked = data.get("revoked_at")
        return cls(
            serial=int(data["serial"]),
            subject=str(data["subject"]),
            domain=data.get("domain"),
            kind=data["kind"],
            not_after=datetime.fromisoformat(data["not_after"]),
            revoked_at=datetime.fromisoformat(revoked) if revoked else None,
        )


@dataclass
class _Index:
    records: list[IssuedRecord]
    crl_number: int = 0

    @classmethod
    def read(cls, ca_dir: Path) -> _Index:
        path = ca_dir / INDEX
        if not path.exists():
            return cls([])
        try:
            data = json.loads(path.read_text("utf-8"))
            return cls(
                [IssuedRecord.from_json(r) for r in data["certificates"]],
                int(data.get("crl_number", 0)),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"the CA index {path} is unreadable or corrupt") from exc

    def write(self, ca_dir: Path) -> None:
        data = {"crl_number": self.crl_number, "certificates": [r.to_json() for r in self.records]}
        write_public(ca_dir / INDEX, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def _record(cert: x509.Certificate, domain: str | None, kind: Kind) -> IssuedRecord:
    return IssuedRecord(
        serial=cert.serial_number,
        subject=cert.subject.rfc4514_string(),
        domain=domain,
        kind=kind,
        not_after=cert.not_valid_after_utc,
    )


def _load_root(ca_dir: Path) -> tuple[x509.Certificate, PrivateKey]:
    if not (ca_dir / ROOT_CERT).exists():
        raise UsageError(f"no federation root in {ca_dir}: run `wsemail ca init` first")
    return read_cert(ca_dir / ROOT_CERT), read_key(ca_dir / ROOT_KEY)


def _check_days(days: int) -> timedelta:
    if days < 1:
        raise UsageError(f"days must be at least 1, not {days}")
    return timedelta(days=days)


def create_root(
    ca_dir: Path,
    *,
    name: str = "wsemail federation root",
    days: int = 3650,
    now: datetime | None = None,
) -> Path:
    """Create the self-signed federation root in `ca_dir`; the path of root.pem.

    Refuses (UsageError) when the folder already holds a root: a new root would orphan every
    certificate the federation trusts.
    """
    if (ca_dir / ROOT_CERT).exists() or (ca_dir / ROOT_KEY).exists():
        raise UsageError(f"{ca_dir} already holds a federation root; refusing to overwrite it")
    if not name.strip():
        raise UsageError("the root needs a name")
    now = now or now_utc()
    key = new_key()
    subject = common_name(name.strip())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + _check_days(days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_KU_CA, critical=True)
    )
    cert = key_identifiers(builder, key.public_key(), None).sign(key, hashes.SHA256())
    ca_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_key(ca_dir / ROOT_KEY, key)
    write_cert(ca_dir / ROOT_CERT, cert)
    _Index([_record(cert, None, "root")]).write(ca_dir)
    return ca_dir / ROOT_CERT


def issue_server(
    ca_dir: Path, domain: str, out_dir: Path, *, days: int = 365, now: datetime | None = None
) -> ServerFiles:
    """Issue a domain's server certificate and issuing CA and write them with their keys.

    Refuses (UsageError) to overwrite files already in `out_dir`.
    """
    domain = check_domain(domain)
    lifetime = _check_days(days)
    root, root_key = _load_root(ca_dir)
    files = ServerFiles.in_folder(out_dir)
    present = [p.name for p in files.all() if p.exists()]
    if present:
        raise UsageError(f"{out_dir} already holds {', '.join(present)}; refusing to overwrite")
    now = now or now_utc()
    end = not_after(now, lifetime, root)

    def base(subject: str, public_key: PublicKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(common_name(subject))
            .issuer_name(root.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(end)
        )

    server_key = new_key()
    server = key_identifiers(
        base(domain, server_key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_KU_SERVER, critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [
                    ExtendedKeyUsageOID.SERVER_AUTH,
                    ExtendedKeyUsageOID.CLIENT_AUTH,
                    WSEMAIL_SERVER_ROLE,
                ]
            ),
            critical=False,
        ),
        server_key.public_key(),
        root,
    ).sign(root_key, hashes.SHA256())

    issuing_key = new_key()
    issuing = key_identifiers(
        base(f"{domain} issuing CA", issuing_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_KU_CA, critical=True)
        .add_extension(
            x509.NameConstraints(
                permitted_subtrees=[x509.RFC822Name(domain), x509.DNSName(domain)],
                excluded_subtrees=None,
            ),
            critical=True,
        ),
        issuing_key.public_key(),
        root,
    ).sign(root_key, hashes.SHA256())

    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_key(files.server_key, server_key)
    write_key(files.issuing_key, issuing_key)
    write_cert(files.server_cert, server)
    write_cert(files.issuing_cert, issuing)
    write_cert(files.root_cert, root)
    index = _Index.read(ca_dir)
    index.records += [_record(server, domain, "server"), _record(issuing, domain, "issuing")]
    index.write(ca_dir)
    return files


def list_issued(ca_dir: Path) -> list[IssuedRecord]:
    """Everything the root issued (itself included), oldest first."""
    _load_root(ca_dir)
    return _Index.read(ca_dir).records


def revoke(ca_dir: Path, serial: int, *, now: datetime | None = None) -> None:
    """Mark a server or issuing certificate revoked; the next `write_crl` lists it.

    Revoking twice keeps the first date. UsageError for an unknown serial or the root.
    """
    _load_root(ca_dir)
    index = _Index.read(ca_dir)
    for i, record in enumerate(index.records):
        if record.serial != serial:
            continue
        if record.kind == "root":
            raise UsageError("the root cannot revoke itself: retire it out of band")
        if record.revoked_at is None:
            index.records[i] = IssuedRecord(**{**asdict(record), "revoked_at": now or now_utc()})
            index.write(ca_dir)
        return
    raise UsageError(f"no certificate with serial {serial:#x} in {ca_dir / INDEX}")


def write_crl(ca_dir: Path, *, days: int = 7, now: datetime | None = None) -> Path:
    """Write ``crl.pem``: the root-signed list of revoked certificates, next update now+days."""
    root, root_key = _load_root(ca_dir)
    lifetime = _check_days(days)
    now = now or now_utc()
    index = _Index.read(ca_dir)
    index.crl_number += 1
    ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(root.subject)
        .last_update(now)
        .next_update(now + lifetime)
        .add_extension(x509.CRLNumber(index.crl_number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    for record in index.records:
        if record.revoked_at is not None:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(record.serial)
                .revocation_date(record.revoked_at)
                .build()
            )
    crl = builder.sign(root_key, hashes.SHA256())
    write_public(ca_dir / CRL, crl.public_bytes(serialization.Encoding.PEM))
    index.write(ca_dir)
    return ca_dir / CRL
