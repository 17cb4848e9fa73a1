"""The federation PKI with real crypto: root → server certificate / issuing CA → user."""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from wsemail.cli.ca import app as ca_app
from wsemail.pki import (
    WSEMAIL_SERVER_ROLE,
    WSEMAIL_USER_ROLE,
    ServerFiles,
    ServerIdentity,
    TrustStore,
    create_root,
    issue_server,
    list_issued,
    read_cert,
    read_crl,
    revoke,
    write_crl,
)
from wsemail.pki._common import read_key
from wsemail.pki.authority import ROOT_KEY
from wsemail.protocol.errors import (
    RevocationUnavailable,
    SignatureInvalid,
    UntrustedSigner,
    UsageError,
)

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Federation:
    ca_dir: Path
    root: x509.Certificate
    a: ServerIdentity
    b: ServerIdentity
    clock: Clock
    trust: TrustStore

    def crl(self, *, days: int = 7, now: datetime = T0) -> x509.CertificateRevocationList:
        return read_crl(write_crl(self.ca_dir, days=days, now=now))


@pytest.fixture
def fed(tmp_path: Path) -> Federation:
    ca_dir = tmp_path / "ca"
    create_root(ca_dir, now=T0)
    issue_server(ca_dir, "a.test", tmp_path / "a", now=T0)
    issue_server(ca_dir, "b.test", tmp_path / "b", now=T0)
    clock = Clock(T0 + timedelta(hours=1))
    crl = read_crl(write_crl(ca_dir, now=T0))
    root = read_cert(ca_dir / "root.pem")
    trust = TrustStore([root], [crl], clock=clock)
    return Federation(
        ca_dir,
        root,
        ServerIdentity.load(tmp_path / "a"),
        ServerIdentity.load(tmp_path / "b"),
        clock,
        trust,
    )


def user_key() -> ec.EllipticCurvePublicKey:
    return ec.generate_private_key(ec.SECP256R1()).public_key()


def forge(
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    san: x509.GeneralName,
    eku: list[x509.ObjectIdentifier],
    ca: bool = False,
) -> x509.Certificate:
    """A certificate made with the raw cryptography API, bypassing wsemail's own checks."""
    key = user_key()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forged")]))
        .issuer_name(issuer.subject)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0)
        .not_valid_after(T0 + timedelta(hours=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .sign(issuer_key, hashes.SHA256())
    )


def root_key(fed: Federation) -> ec.EllipticCurvePrivateKey:
    key = read_key(fed.ca_dir / ROOT_KEY)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


SERVER_EKU = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
USER_EKU = [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.EMAIL_PROTECTION]


# --- server certificates ---------------------------------------------------------------


def test_server_cert_verifies_for_its_domain(fed: Federation) -> None:
    fed.trust.verify_server(fed.a.cert, "a.test")
    fed.trust.verify_server(fed.b.cert, "B.Test.")


def test_server_cert_refused_for_another_domain(fed: Federation) -> None:
    with pytest.raises(UntrustedSigner):
        fed.trust.verify_server(fed.a.cert, "b.test")


def test_issuing_ca_refused_as_server_leaf(fed: Federation) -> None:
    with pytest.raises(UntrustedSigner):
        fed.trust.verify_server(fed.a.issuing_cert, "a.test")
    # even with everything a server certificate has, cA=TRUE is refused as a leaf
    ca_leaf = forge(
        fed.root,
        root_key(fed),
        san=x509.DNSName("a.test"),
        eku=[*SERVER_EKU, WSEMAIL_SERVER_ROLE],
        ca=True,
    )
    with pytest.raises(UntrustedSigner) as refused:
        fed.trust.verify_server(ca_leaf, "a.test")
    assert "cA must not be asserted" in (refused.value.detail or "")


def test_server_cert_without_server_role_refused(fed: Federation) -> None:
    plain = forge(fed.root, root_key(fed), san=x509.DNSName("a.test"), eku=SERVER_EKU)
    with pytest.raises(UntrustedSigner, match="not a wsemail server"):
        fed.trust.verify_server(plain, "a.test")


def test_server_cert_from_issuing_ca_refused(fed: Federation) -> None:
    """A domain's issuing CA cannot mint a server certificate, not even for its own domain."""
    minted = forge(
        fed.a.issuing_cert,
        fed.a.issuing_key,  # type: ignore[arg-type]
        san=x509.DNSName("a.test"),
        eku=[*SERVER_EKU, WSEMAIL_SERVER_ROLE],
    )
    with pytest.raises(UntrustedSigner):
        fed.trust.verify_server(minted, "a.test")


def test_user_cert_refused_as_server_cert(fed: Federation) -> None:
    user = fed.a.issue_user_cert("alice@a.test", user_key(), lifetime=timedelta(hours=1), now=T0)
    with pytest.raises(UntrustedSigner):
        fed.trust.verify_server(user, "a.test")


def test_cert_from_untrusted_root_refused(fed: Federation, tmp_path: Path) -> None:
    other = tmp_path / "other-ca"
    create_root(other, now=T0)  # same name as the real root, different key
    issue_server(other, "a.test", tmp_path / "evil", now=T0)
    evil = ServerIdentity.load(tmp_path / "evil")
    with pytest.raises(UntrustedSigner):
        fed.trust.verify_server(evil.cert, "a.test")
    alice = evil.issue_user_cert("alice@a.test", user_key(), lifetime=timedelta(hours=1), now=T0)
    with pytest.raises(UntrustedSigner):
        fed.trust.verify_user(alice, evil.issuing_cert, "alice@a.test")


def test_expired_server_cert_refused(fed: Federation) -> None:
    fed.clock.now = T0 + timedelta(days=366)
    fed.trust.add_crl(fed.crl(now=fed.clock.now))
    with pytest.raises(UntrustedSigner):
        fed.trust.verify_server(fed.a.cert, "a.test")


# --- revocation ------------------------------------------------------------------------


def test_revoked_server_cert_is_untrusted(fed: Federation) -> None:
    revoke(fed.ca_dir, fed.a.cert.serial_number, now=T0)
    fed.trust.add_crl(fed.crl(now=T0 + timedelta(minutes=1)))
    with pytest.raises(UntrustedSigner, match="revoked"):
        fed.trust.verify_server(fed.a.cert, "a.test")
    fed.trust.verify_server(fed.b.cert, "b.test")


def test_revoked_issuing_ca_refuses_its_users(fed: Federation) -> None:
    alice = fed.a.issue_user_cert("alice@a.test", user_key(), lifetime=timedelta(hours=1), now=T0)
    revoke(fed.ca_dir, fed.a.issuing_cert.serial_number, now=T0)
    fed.trust.add_crl(fed.crl(now=T0 + timedelta(minutes=1)))
    with pytest.raises(UntrustedSigner, match="revoked"):
        fed.trust.verify_user(alice, fed.a.issuing_cert, "alice@a.test")
    fed.trust.verify_server(fed.a.cert, "a.test")  # the server certificate itself still stands


def test_no_crl_is_revocation_unavailable(fed: Federation) -> None:
    trust = TrustStore([fed.root], clock=fed.clock)
    with pytest.raises(RevocationUnavailable):
        trust.verify_server(fed.a.cert, "a.test")
    alice = fed.a.issue_user_cert("alice@a.test", user_key(), lifetime=timedelta(hours=1), now=T0)
    with pytest.raises(RevocationUnavailable):
        trust.verify_user(alice, fed.a.issuing_cert, "alice@a.test")


def test_stale_crl_is_revocation_unavailable_until_refreshed(fed: Federation) -> None:
    fed.clock.now = T0 + timedelta(days=8)  # the CRL said: next update within 7 days
    with pytest.raises(RevocationUnavailable):
        fed.trust.verify_server(fed.a.cert, "a.test")
    fed.trust.add_crl(fed.crl(now=fed.clock.now))
    fed.trust.verify_server(fed.a.cert, "a.test")


def test_add_crl_never_rolls_back_to_an_older_crl(fed: Federation) -> None:
    old = fed.crl(now=T0)
    revoke(fed.ca_dir, fed.a.cert.serial_number, now=T0)
    fed.trust.add_crl(fed.crl(now=T0 + timedelta(minutes=1)))
    fed.trust.add_crl(old)
    with pytest.raises(UntrustedSigner, match="revoked"):
        fed.trust.verify_server(fed.a.cert, "a.test")


def test_add_crl_refuses_crl_signed_by_another_key(fed: Federation, tmp_path: Path) -> None:
    other = tmp_path / "other-ca"
    create_root(other, now=T0)  # same issuer name, other key
    forged = read_crl(write_crl(other, now=T0 + timedelta(minutes=5)))
    with pytest.raises(SignatureInvalid):
        fed.trust.add_crl(forged)
    stranger = tmp_path / "stranger"
    create_root(stranger, name="someone else", now=T0)
    with pytest.raises(UntrustedSigner):
        fed.trust.add_crl(read_crl(write_crl(stranger, now=T0)))


def test_add_crl_refuses_issuer_that_is_not_a_trusted_ca(fed: Federation) -> None:
    crl = fed.a.user_crl({}, now=T0)
    with pytest.raises(UntrustedSigner):
        fed.trust.add_crl(crl)  # an issuing CA's CRL needs the issuing CA's certificate
    with pytest.raises(UntrustedSigner):
        fed.trust.add_crl(crl, fed.a.cert)  # not a CA
    fed.trust.add_crl(crl, fed.a.issuing_cert)


# --- user certificates -----------------------------------------------------------------


def test_user_cert_verifies_for_its_address(fed: Federation) -> None:
    alice = fed.a.issue_user_cert("alice@A.test", user_key(), lifetime=timedelta(hours=1), now=T0)
    fed.trust.verify_user(alice, fed.a.issuing_cert, "alice@a.test")
    assert alice.not_valid_after_utc == T0 + timedelta(hours=1)


def test_user_cert_refused_for_another_address(fed: Federation) -> None:
    alice = fed.a.issue_user_cert("alice@a.test", user_key(), lifetime=timedelta(hours=1), now=T0)
    with pytest.raises(UntrustedSigner):
        fed.trust.verify_user(alice, fed.a.issuing_cert, "bob@a.test")
    with pytest.raises(UntrustedSigner):
        fed.trust.verify_user(alice, fed.b.issuing_cert, "alice@a.test")


def test_user_cert_outside_name_constraints_refused(fed: Federation) -> None:
    mallory = forge(
        fed.a.issuing_cert,
        fed.a.issuing_key,  # type: ignore[arg-type]
        san=x509.RFC822Name("mallory@b.test"),
        eku=[*USER_EKU, WSEMAIL_USER_ROLE],
    )
    with pytest.raises(UntrustedSigner) as refused:
        fed.trust.verify_user(mallory, fed.a.issuing_cert, "mallory@b.test")
    assert "name constraints" in (refused.value.detail or "")


def test_issue_user_cert_refuses_other_domains(fed: Federation) -> None:
    with pytest.raises(UsageError, match="not in this server's domain"):
        fed.a.issue_user_cert("mallory@b.test", user_key(), lifetime=timedelta(hours=1))
    with pytest.raises(UsageError):
        fed.a.issue_user_cert("not an address", user_key(), lifetime=timedelta(hours=1))


def test_user_cert_without_user_role_refused(fed: Federation) -> None:
    plain = forge(
        fed.a.issuing_cert,
        fed.a.issuing_key,  # type: ignore[arg-type]
        san=x509.RFC822Name("alice@a.test"),
        eku=USER_EKU,
    )
    with pytest.raises(UntrustedSigner, match="not a wsemail user"):
        fed.trust.verify_user(plain, fed.a.issuing_cert, "alice@a.test")


def test_server_cert_refused_as_user_cert(fed: Federation) -> None:
    with pytest.raises(UntrustedSigner):
        fed.trust.verify_user(fed.a.cert, fed.a.issuing_cert, "alice@a.test")


def test_expired_user_cert_refused(fed: Federation) -> None:
    alice = fed.a.issue_user_cert(
        "alice@a.test", user_key(), lifetime=timedelta(minutes=10), now=T0
    )
    fed.clock.now = T0 + timedelta(minutes=11)
    with pytest.raises(UntrustedSigner):
        fed.trust.verify_user(alice, fed.a.issuing_cert, "alice@a.test")


def test_long_lived_user_cert_needs_its_issuers_crl(fed: Federation) -> None:
    signer = fed.a.issue_user_cert("alice@a.test", user_key(), lifetime=timedelta(days=90), now=T0)
    with pytest.raises(RevocationUnavailable):
        fed.trust.verify_user(signer, fed.a.issuing_cert, "alice@a.test")
    fed.trust.add_crl(fed.a.user_crl({}, now=T0), fed.a.issuing_cert)
    fed.trust.verify_user(signer, fed.a.issuing_cert, "alice@a.test")
    fed.clock.now = T0 + timedelta(days=2)  # user CRL (1 day) stale; root CRL still current
    with pytest.raises(RevocationUnavailable):
        fed.trust.verify_user(signer, fed.a.issuing_cert, "alice@a.test")


def test_revoked_user_cert_refused(fed: Federation, tmp_path: Path) -> None:
    short = fed.a.issue_user_cert("alice@a.test", user_key(), lifetime=timedelta(hours=1), now=T0)
    long = fed.a.issue_user_cert("alice@a.test", user_key(), lifetime=timedelta(days=30), now=T0)
    revoked = {short.serial_number: T0, long.serial_number: T0}
    crl = fed.a.write_user_crl(tmp_path / "users.crl", revoked, now=T0 + timedelta(minutes=1))
    assert read_crl(tmp_path / "users.crl") == crl
    fed.trust.add_crl(crl, fed.a.issuing_cert)
    for cert in (short, long):
        with pytest.raises(UntrustedSigner, match="revoked"):
            fed.trust.verify_user(cert, fed.a.issuing_cert, "alice@a.test")


# --- files and the authority -----------------------------------------------------------


def test_keys_are_written_owner_only(fed: Federation, tmp_path: Path) -> None:
    files = ServerFiles.in_folder(tmp_path / "a")
    for key in (fed.ca_dir / ROOT_KEY, files.server_key, files.issuing_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert stat.S_IMODE(files.server_cert.stat().st_mode) == 0o644


def test_server_identity_loads_what_issue_server_wrote(fed: Federation) -> None:
    assert fed.a.domain == "a.test"
    assert fed.a.root_cert == fed.root
    assert fed.a.cert_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert len(fed.a.thumbprint) == 44  # base64 of 32 bytes
    assert "key=" not in repr(fed.a)  # private keys stay out of logs


def test_create_root_refuses_to_overwrite(fed: Federation) -> None:
    before = (fed.ca_dir / "root.pem").read_bytes()
    with pytest.raises(UsageError, match="refusing to overwrite"):
        create_root(fed.ca_dir)
    assert (fed.ca_dir / "root.pem").read_bytes() == before


def test_issue_server_refuses_to_overwrite_and_bad_domains(fed: Federation, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="refusing to overwrite"):
        issue_server(fed.ca_dir, "a.test", tmp_path / "a")
    with pytest.raises(UsageError, match="not a valid mail domain"):
        issue_server(fed.ca_dir, "a test", tmp_path / "x")
    with pytest.raises(UsageError, match="ca init"):
        issue_server(tmp_path / "nowhere", "c.test", tmp_path / "c")


def test_index_records_and_revocation(fed: Federation) -> None:
    records = list_issued(fed.ca_dir)
    assert [(r.kind, r.domain) for r in records] == [
        ("root", None),
        ("server", "a.test"),
        ("issuing", "a.test"),
        ("server", "b.test"),
        ("issuing", "b.test"),
    ]
    with pytest.raises(UsageError, match="no certificate"):
        revoke(fed.ca_dir, 12345)
    with pytest.raises(UsageError):
        revoke(fed.ca_dir, records[0].serial)
    revoke(fed.ca_dir, records[1].serial, now=T0)
    revoke(fed.ca_dir, records[1].serial)  # again: keeps the first date
    assert list_issued(fed.ca_dir)[1].revoked_at == T0
    crl = fed.crl(days=3, now=T0)
    assert crl.next_update_utc == T0 + timedelta(days=3)
    assert [r.serial_number for r in crl] == [records[1].serial]
    assert crl.is_signature_valid(fed.root.public_key())  # type: ignore[arg-type]


def test_trust_store_load_from_files(fed: Federation) -> None:
    trust = TrustStore.load([fed.ca_dir / "root.pem"], [fed.ca_dir / "crl.pem"], clock=fed.clock)
    trust.verify_server(fed.a.cert, "a.test")
    with pytest.raises(UsageError):
        TrustStore.load([fed.ca_dir / "missing.pem"])


# --- the `wsemail ca` commands ---------------------------------------------------------


def test_cli_init_issue_list_revoke_crl(tmp_path: Path) -> None:
    runner = CliRunner()
    ca = ["--ca-dir", str(tmp_path / "ca")]
    result = runner.invoke(ca_app, ["init", *ca])
    assert result.exit_code == 0, result.output
    assert "root.pem" in result.output and "SHA-256 fingerprint:" in result.output

    again = runner.invoke(ca_app, ["init", *ca])
    assert again.exit_code == 1
    assert isinstance(again.exception, UsageError)

    out = tmp_path / "a.test"
    result = runner.invoke(ca_app, ["issue-server", "a.test", *ca, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "server.pem" in result.output and "issuing.pem" in result.output
    assert ServerIdentity.load(out).domain == "a.test"

    result = runner.invoke(ca_app, ["list", *ca, "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    server = next(r for r in listed if r["kind"] == "server")
    assert server["domain"] == "a.test" and server["revoked_at"] is None

    result = runner.invoke(ca_app, ["revoke", hex(server["serial"]), *ca])
    assert result.exit_code == 0, result.output
    assert "revoked" in result.output and "crl.pem" in result.output
    crl = read_crl(tmp_path / "ca" / "crl.pem")
    assert crl.get_revoked_certificate_by_serial_number(server["serial"]) is not None

    result = runner.invoke(ca_app, ["list", *ca])
    assert result.exit_code == 0
    assert f"{server['serial']:#x}" in result.output and "revoked" in result.output

    result = runner.invoke(ca_app, ["crl", *ca, "--days", "2"])
    assert result.exit_code == 0 and "next update" in result.output

    bad = runner.invoke(ca_app, ["revoke", "zz", *ca])
    assert bad.exit_code == 1 and isinstance(bad.exception, UsageError)
    unknown = runner.invoke(ca_app, ["revoke", "42", *ca])
    assert unknown.exit_code == 1 and isinstance(unknown.exception, UsageError)
