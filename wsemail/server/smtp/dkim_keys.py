"""In charge of DKIM for a domain: its signing key (made on first use under the data dir),
signing outgoing MIME messages, verifying incoming ones, and the DNS records to publish
(DKIM key TXT, SPF, `_wsemail._tcp` SRV, MX).

dkimpy's exceptions are translated here and nowhere else.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from wsemail.protocol.errors import RoutingError, UsageError

log = logging.getLogger("wsemail.smtp.dkim")
DEFAULT_SELECTOR = "wsemail"
KEY_DIR = "dkim"
SIGNED_HEADERS = [
    b"from",
    b"to",
    b"cc",
    b"subject",
    b"date",
    b"message-id",
    b"mime-version",
    b"content-type",
    b"content-transfer-encoding",
]


def key_path(data_dir: Path, domain: str, selector: str = DEFAULT_SELECTOR) -> Path:
    return data_dir / KEY_DIR / f"{domain}.{selector}.pem"


def ensure_key(data_dir: Path, domain: str, selector: str = DEFAULT_SELECTOR) -> bytes:
    """The domain's private key (PEM); a 2048-bit RSA key is made on first use."""
    path = key_path(data_dir, domain, selector)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)  # first writer wins when two processes race
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        log.info("made a DKIM key for %s (selector %s) at %s", domain, selector, path)
    return path.read_bytes()


def public_record(private_pem: bytes) -> str:
    """The value of the `<selector>._domainkey.<domain>` TXT record."""
    try:
        key = serialization.load_pem_private_key(private_pem, password=None)
    except ValueError as exc:
        raise UsageError(f"the DKIM key is not a PEM private key: {exc}") from exc
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def sign(
    message: bytes, domain: str, private_pem: bytes, selector: str = DEFAULT_SELECTOR
) -> bytes:
    """`message` with a DKIM-Signature header (relaxed/relaxed, rsa-sha256) in front."""
    try:
        header = dkim.sign(
            message,
            selector.encode(),
            domain.encode(),
            private_pem,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=SIGNED_HEADERS,
        )
    except dkim.DKIMException as exc:
        raise UsageError(f"cannot DKIM-sign for {domain}: {exc}") from exc
    return bytes(header) + message


@dataclass(frozen=True)
class DkimResult:
    result: str  # pass | fail | none | permerror | temperror (RFC 8601 names)
    domain: str = ""
    reason: str = ""

    def __str__(self) -> str:
        text = self.result + (f" (d={self.domain})" if self.domain else "")
        return text + (f": {self.reason}" if self.reason and self.result != "pass" else "")


def verify(message: bytes, dnsfunc: Callable[..., bytes | None]) -> DkimResult:
    """Check the first DKIM signature of `message` (blocking: DNS; run it in a thread).
    The key is fetched here first so that a DNS failure (`dnsfunc` raising RoutingError) is
    "temperror" and a missing or unreadable key "permerror"; dkimpy folds both into "fail"."""
    try:
        checker = dkim.DKIM(message, minkey=1024)
        signatures = [value for name, value in checker.headers if name.lower() == b"dkim-signature"]
        if not signatures:
            return DkimResult("none")
        tags = dkim.util.parse_tag_value(signatures[0])
        domain = tags.get(b"d", b"").decode("ascii", "replace")
        name = tags.get(b"s", b"") + b"._domainkey." + tags.get(b"d", b"") + b"."
        if not tags.get(b"s") or not domain:
            return DkimResult("permerror", domain, "the signature names no selector or domain")
        record = dnsfunc(name)
        if record is None:
            return DkimResult("permerror", domain, "no key published for the signature")
        dkim.evaluate_pk(name, record)  # raises when the record is not a usable key
        ok = checker.verify(0, dnsfunc=lambda *_args, **_kw: record)
    except RoutingError as exc:
        return DkimResult("temperror", domain, f"cannot fetch the key now: {exc}"[:200])
    except (dkim.KeyFormatError, dkim.UnparsableKeyError, binascii.Error) as exc:
        return DkimResult("permerror", domain, f"the published key is not a key: {exc}"[:200])
    except dkim.DKIMException as exc:
        return DkimResult("fail", domain, str(exc)[:200])
    except (ValueError, IndexError, UnicodeError, TypeError) as exc:
        return DkimResult("permerror", domain, f"malformed signature: {exc}"[:200])
    if ok:
        return DkimResult("pass", domain)
    return DkimResult("fail", domain, "signature does not verify (body or headers changed)")


def dns_records(
    domain: str,
    private_pem: bytes,
    *,
    selector: str = DEFAULT_SELECTOR,
    host: str | None = None,
    port: int = 443,
    smtp_ip: str | None = None,
    nodes: list[tuple[str, int, int, int]] | None = None,
) -> list[str]:
    """Zone-file lines to publish for `domain` (its server at `host`, default mail.domain).
    `nodes`: the domain's several servers as (host, port, priority, weight), one SRV record
    each (senders try lower priorities first, and share one priority by weight, RFC 2782)
    and an MX per host."""
    host = host or f"mail.{domain}"
    nodes = nodes or [(host, port, 10, 10)]
    key = public_record(private_pem)
    chunks = " ".join(f'"{key[i : i + 255]}"' for i in range(0, len(key), 255))
    spf = f"v=spf1 ip4:{smtp_ip} mx -all" if smtp_ip else "v=spf1 mx -all"
    return [
        f"{selector}._domainkey.{domain}. 3600 IN TXT {chunks}",
        f'{domain}. 3600 IN TXT "{spf}"',
        *(f"_wsemail._tcp.{domain}. 3600 IN SRV {pri} {wt} {pt} {h}." for h, pt, pri, wt in nodes),
        *(f"{domain}. 3600 IN MX {pri} {h}." for h, _, pri, _ in _hosts(nodes)),
    ]


def _hosts(nodes: list[tuple[str, int, int, int]]) -> list[tuple[str, int, int, int]]:
    """One node per host (the first), for the MX records."""
    seen: dict[str, tuple[str, int, int, int]] = {}
    for node in nodes:
        seen.setdefault(node[0], node)
    return list(seen.values())


def parse_node(text: str, default_port: int = 443) -> tuple[str, int, int, int]:
    """HOST[:PORT[:PRIORITY[:WEIGHT]]] (an empty or missing field: the default port,
    priority 10, weight 10)."""
    parts = text.strip().split(":")
    if not parts[0] or len(parts) > 4:
        raise ValueError(f"{text!r}: give HOST[:PORT[:PRIORITY[:WEIGHT]]]")
    fields = [*parts[1:], *[""] * (4 - len(parts))]
    try:
        port, priority, weight = (
            int(x) if x else d for x, d in zip(fields, (default_port, 10, 10), strict=True)
        )
    except ValueError:
        raise ValueError(f"{text!r}: port, priority and weight are numbers") from None
    if not 0 < port < 65536 or not 0 <= priority < 65536 or not 0 <= weight < 65536:
        raise ValueError(f"{text!r}: port 1-65535, priority and weight 0-65535")
    return parts[0].rstrip("."), port, priority, weight
