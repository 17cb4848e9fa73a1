"""In charge of DMARC (RFC 7489) for legacy mail: the policy published at `_dmarc.<From
domain>` (or at its organisational domain, found with the Public Suffix List), and whether
an SPF or DKIM pass is aligned with the header From domain (relaxed: same organisational
domain; strict: the same name).

    pass       an aligned SPF or DKIM pass
    fail       a policy exists and neither is aligned (the policy's `p` is recorded)
    none       no policy, or no single From domain
    temperror  DNS failed: the gateway answers 451 and the sender tries again
    permerror  the policy record is unreadable

The result is recorded with the message and shown to the reader like its provenance.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from publicsuffixlist import PublicSuffixList

from wsemail.protocol.errors import RoutingError
from wsemail.server.smtp.mx import MailDns

POLICIES = ("none", "quarantine", "reject")


@dataclass(frozen=True)
class DmarcResult:
    result: str  # pass | fail | none | temperror | permerror
    domain: str = ""  # the header From domain
    policy: str = ""  # the policy that applies (p, or sp for a subdomain), if any
    reason: str = ""

    def __str__(self) -> str:
        text = self.result + (f" ({self.domain}" if self.domain else "")
        text += (f", p={self.policy})" if self.policy else ")") if self.domain else ""
        return text


@functools.cache
def _suffixes() -> PublicSuffixList:
    return PublicSuffixList()  # the list shipped with the package; nothing is fetched


def organisational_domain(domain: str) -> str:
    """The registrable domain (`mail.example.co.uk` -> `example.co.uk`); the name itself when
    the list knows no suffix for it."""
    domain = domain.lower().rstrip(".")
    return _suffixes().privatesuffix(domain) or domain


def aligned(a: str, b: str, mode: str) -> bool:
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    if mode == "s":
        return a == b
    return organisational_domain(a) == organisational_domain(b)


def parse(record: str) -> dict[str, str] | None:
    """The tags of a DMARC record; None if it is not one (no v=DMARC1 first, no valid p)."""
    tags: dict[str, str] = {}
    for part in record.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags.setdefault(name.strip().lower(), value.strip())
    first = record.split(";", 1)[0].replace(" ", "")
    if first.upper() != "V=DMARC1" or tags.get("p", "").lower() not in POLICIES:
        return None
    return {k: v.lower() for k, v in tags.items()}


def policy_record(dns: MailDns, domain: str) -> tuple[dict[str, str] | None, bool, str]:
    """(tags, found at the organisational domain, problem) for `domain`. RoutingError when
    DNS fails."""
    names = [domain]
    org = organisational_domain(domain)
    if org != domain:
        names.append(org)
    for index, name in enumerate(names):
        records = [r for r in dns.txt(f"_dmarc.{name}") if r.lower().startswith("v=dmarc1")]
        if not records:
            continue
        if len(records) > 1:
            return None, index > 0, f"{len(records)} DMARC records at _dmarc.{name}"
        tags = parse(records[0])
        if tags is None:
            return None, index > 0, f"unreadable DMARC record at _dmarc.{name}"
        return tags, index > 0, ""
    return None, False, ""


def evaluate(
    dns: MailDns,
    from_domain: str | None,
    *,
    spf_result: str,
    spf_domain: str,
    dkim_result: str,
    dkim_domain: str,
) -> DmarcResult:
    """DMARC for the header From domain given the SPF and DKIM results (blocking: DNS)."""
    if not from_domain:
        return DmarcResult("none", "", "", "no single From domain")
    from_domain = from_domain.lower()
    try:
        tags, inherited, problem = policy_record(dns, from_domain)
    except RoutingError as exc:
        return DmarcResult("temperror", from_domain, "", str(exc)[:200])
    if problem:
        return DmarcResult("permerror", from_domain, "", problem)
    if tags is None:
        return DmarcResult("none", from_domain, "", "no DMARC policy")
    policy = tags.get("sp", tags["p"]) if inherited else tags["p"]
    policy = policy if policy in POLICIES else tags["p"]
    spf_ok = spf_result == "pass" and aligned(spf_domain, from_domain, tags.get("aspf", "r"))
    dkim_ok = dkim_result == "pass" and aligned(dkim_domain, from_domain, tags.get("adkim", "r"))
    if spf_ok or dkim_ok:
        why = " and ".join(n for n, ok in (("SPF", spf_ok), ("DKIM", dkim_ok)) if ok)
        return DmarcResult("pass", from_domain, policy, f"aligned {why}")
    return DmarcResult("fail", from_domain, policy, "no aligned SPF or DKIM pass")
