"""In charge of checking the connecting peer against the sender domain's SPF policy
(RFC 7208) with pyspf, a maintained implementation: every mechanism (a, mx, ptr, exists,
include, ip4/ip6 with prefixes such as mx/24), macros, redirect, the limits of 10
DNS-mechanism lookups and 2 void lookups, IPv4-mapped IPv6 peers. Its DNS goes through our
`MailDns` (the server's resolver, its static table in tests), never the system's.

The result is recorded with the legacy message; "temperror" makes the gateway answer 451
(try again later); nothing else here refuses mail.
"""

from __future__ import annotations

import contextvars
import logging
from dataclasses import dataclass

import spf as pyspf

from wsemail.protocol.errors import RoutingError
from wsemail.server.smtp.mx import MailDns

log = logging.getLogger("wsemail.smtp.spf")
RESULTS = ("pass", "fail", "softfail", "neutral", "none", "permerror", "temperror")
TIMEOUT = 20.0  # seconds for the whole check (RFC 7208 §4.6.4: at least 20 s)

_dns: contextvars.ContextVar[MailDns | None] = contextvars.ContextVar("spf_dns", default=None)


def _lookup(name: str, qtype: str, strict: object = True, timeout: float = TIMEOUT) -> list[object]:
    """pyspf's DNS hook: the MailDns of the check running in this context."""
    dns = _dns.get()
    if dns is None:
        raise pyspf.TempError("no resolver for this SPF check")
    try:
        return list(dns.records(name, qtype))
    except RoutingError as exc:
        raise pyspf.TempError(f"DNS {exc}") from exc


pyspf.DNSLookup = _lookup  # one hook for the process; each check brings its own MailDns


@dataclass(frozen=True)
class SpfResult:
    result: str  # one of RESULTS
    domain: str = ""  # the domain checked: MAIL FROM's, or the HELO name for bounces
    reason: str = ""

    def __str__(self) -> str:
        return self.result + (f" ({self.domain})" if self.domain else "")


def check(dns: MailDns, ip: str, mail_from: str, helo: str) -> SpfResult:
    """The SPF result for a peer at `ip` sending as `mail_from` ("" for the null sender:
    the HELO name is checked instead). Blocking (DNS): run it in a thread."""
    domain = mail_from.rpartition("@")[2] if mail_from else helo
    if not domain:
        return SpfResult("none", "", "no sender domain")
    token = _dns.set(dns)
    try:
        query = pyspf.query(i=ip, s=mail_from, h=helo, timeout=TIMEOUT, querytime=TIMEOUT)
        result, _, explanation = query.check()
    except (ValueError, TypeError, IndexError, UnicodeError, RecursionError) as exc:
        log.info("SPF check of %r for %s failed: %r", domain, ip, exc)
        return SpfResult("permerror", domain, f"unreadable policy: {exc}"[:200])
    finally:
        _dns.reset(token)
    result = str(result).lower()
    if result not in RESULTS:
        return SpfResult("permerror", domain, f"unknown result {result!r}")
    return SpfResult(result, domain, str(explanation)[:200])
