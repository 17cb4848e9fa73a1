"""In charge of the directory's cache on disk, so that one command after another (each a
new `Directory`) does not ask a recipient's server again for a certificate it accepted a
moment ago. One JSON file per address (named by the SHA-256 of the address) holds what the
directory answered — certificate, issuing CA, CRLs — and until when it may be used (the
earliest of the cache lifetime, the CRLs' next update and the certificate's expiry).

Nothing read from here is trusted as such: `Directory` checks it again against the
federation roots and the stored CRLs before use, and a file that does not parse or no
longer passes is dropped and the certificate fetched afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization


@dataclass(frozen=True)
class Published:
    """What a domain's directory answered for one address (not yet trusted)."""

    address: str
    cert: x509.Certificate
    issuer: x509.Certificate
    crls: tuple[x509.CertificateRevocationList, ...]


def _pem(item: x509.Certificate | x509.CertificateRevocationList) -> str:
    return item.public_bytes(serialization.Encoding.PEM).decode("ascii")


class DiskCache:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, address: str) -> Path:
        return self.folder / (hashlib.sha256(address.encode("utf-8")).hexdigest() + ".json")

    def load(self, address: str, now: float) -> tuple[Published, float] | None:
        """What was accepted for `address` and until when, if still within that time."""
        path = self._path(address)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            entry = Published(
                address=str(data["address"]),
                cert=x509.load_pem_x509_certificate(data["cert"].encode("ascii")),
                issuer=x509.load_pem_x509_certificate(data["issuer"].encode("ascii")),
                crls=tuple(x509.load_pem_x509_crl(c.encode("ascii")) for c in data["crls"]),
            )
            until = float(data["until"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self.drop(address)
            return None
        if entry.address != address or now >= until:
            self.drop(address)
            return None
        return entry, until

    def store(self, entry: Published, until: float) -> None:
        """Keep an accepted answer (written atomically; a failure only costs a lookup)."""
        data = {
            "address": entry.address,
            "until": until,
            "cert": _pem(entry.cert),
            "issuer": _pem(entry.issuer),
            "crls": [_pem(c) for c in entry.crls],
        }
        path = self._path(entry.address)
        tmp = path.with_name(f".{secrets.token_hex(8)}.tmp")
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp.write_text(json.dumps(data), encoding="utf-8")
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)

    def drop(self, address: str | None = None) -> None:
        paths = [self._path(address)] if address else list(self.folder.glob("*.json"))
        for path in paths:
            try:
                path.unlink(missing_ok=True)
            except OSError:
                continue
