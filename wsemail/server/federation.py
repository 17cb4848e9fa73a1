"""In charge of a server's place in the federation: its identity (server certificate and
key, loaded once), the roots and CRLs it trusts, how it resolves other domains, and how it
decides who signed something.

With no `[federation]` section the embedded default makes a development root and a server
certificate for its domain under the data dir on first run, and keeps that root's CRL
fresh; a real deployment names the files `wsemail ca issue-server` wrote.
"""

from __future__ import annotations

import logging
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509

from wsemail.core.provenance import server_domain
from wsemail.core.routing import Resolver, build_resolver
from wsemail.pki import ServerIdentity, TrustStore, create_root, issue_server, write_crl
from wsemail.protocol.dsig import Signer
from wsemail.protocol.errors import UntrustedSigner
from wsemail.server.config import ServerConfig

log = logging.getLogger("wsemail.federation")
DEV_CA = "federation-ca"
DEV_IDENTITY = "federation"


def ensure_dev_pki(config: ServerConfig) -> None:
    """Embedded default: a development root, server identity and CRL under the data dir."""
    ca_dir = config.data_dir / DEV_CA
    identity = config.data_dir / DEV_IDENTITY
    if not (ca_dir / "root.pem").exists():
        create_root(ca_dir, name=f"wsemail development root for {config.domain}")
    if not (identity / "server.pem").exists():
        issue_server(ca_dir, config.domain, identity)
    crl = ca_dir / "crl.pem"
    if not crl.exists() or _expires_soon(crl):
        write_crl(ca_dir)
    config.identity_dir = identity
    config.trust_roots = config.trust_roots or [identity / "root.pem"]
    config.crls = config.crls or [crl]


def _expires_soon(crl_file: Path) -> bool:
    crl = x509.load_pem_x509_crl(crl_file.read_bytes())
    next_update = crl.next_update_utc
    return next_update is None or next_update - datetime.now(UTC) < timedelta(days=2)


class Federation:
    def __init__(self, config: ServerConfig) -> None:
        if config.identity_dir is None:
            ensure_dev_pki(config)
        assert config.identity_dir is not None
        self.domain = config.domain
        self.identity = ServerIdentity.load(config.identity_dir)
        if self.identity.domain != config.domain:
            raise UntrustedSigner(
                f"the server certificate is for {self.identity.domain}, not {config.domain}"
            )
        self.signer = Signer(self.identity.key, self.identity.cert)
        self.root_files = list(config.trust_roots) or [config.identity_dir / "root.pem"]
        self.crl_files = list(config.crls)
        self.trust = TrustStore.load(self.root_files, self.crl_files)
        self._crl_mtimes = self._mtimes()
        self.resolver: Resolver = build_resolver(
            config.routes, config.dns_nameservers, config.dns_port
        )
        self.verify_tls = config.federation_tls

    def _mtimes(self) -> dict[Path, float]:
        return {p: p.stat().st_mtime for p in self.crl_files if p.exists()}

    def refresh_crls(self) -> None:
        """Re-read CRL files that changed (published by `wsemail ca crl`)."""
        mtimes = self._mtimes()
        if mtimes != self._crl_mtimes:
            for path in self.crl_files:
                if path.exists() and mtimes.get(path) != self._crl_mtimes.get(path):
                    self.trust.add_crl(x509.load_pem_x509_crl(path.read_bytes()))
                    log.info("refreshed CRL %s", path)
            self._crl_mtimes = mtimes

    def crl_pem(self) -> bytes:
        return b"".join(p.read_bytes() for p in self.crl_files if p.exists())

    def server_signer(self, cert: x509.Certificate) -> str:
        """The domain a server certificate speaks for, after chain, role and CRL checks."""
        self.refresh_crls()
        return server_domain(self.trust, cert)

    def tls_context(self) -> ssl.SSLContext | bool:
        """TLS to peer servers: trust only the federation roots, never the web PKI."""
        if not self.verify_tls:
            return False
        context = ssl.create_default_context(cadata="".join(p.read_text() for p in self.root_files))
        return context
