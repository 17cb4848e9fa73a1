"""In charge of checking the connecting peer against the sender domain's SPF policy
(RFC 7208): the ip4, ip6, a, mx, include and all mechanisms and the redirect modifier.
Macros, exists and ptr are not evaluated (the result is then "permerror", recorded only:
SPF never decides alone whether legacy mail is stored)."""

from __future__ import annotations

import ipaddress

from wsemail.protocol.errors import NoRoute, RoutingError
from wsemail.server.smtp.mx import MailDns, MailHost

MAX_DEPTH = 10
QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}


def check(dns: MailDns, ip: str, domain: str, depth: int = 0) -> str:
    """pass | fail | softfail | neutral | none | permerror | temperror (blocking: DNS)."""
    if depth > MAX_DEPTH or not domain:
        return "permerror" if domain else "none"
    try:
        peer = ipaddress.ip_address(ip)
        records = [t for t in dns.txt(domain) if t.lower().split(" ", 1)[0] == "v=spf1"]
    except ValueError:
        return "permerror"
    except RoutingError:
        return "temperror"
    if not records:
        return "none"
    if len(records) > 1:
        return "permerror"
    redirect = ""
    for term in records[0].split()[1:]:
        qualifier = "+"
        if term[0] in QUALIFIERS:
            qualifier, term = term[0], term[1:]
        if "%" in term:
            return "permerror"
        if term.lower().startswith("redirect="):
            redirect = term.partition("=")[2]
            continue
        mechanism, _, arg = term.partition(":")
        mechanism = mechanism.lower()
        try:
            if mechanism == "all":
                matched = True
            elif mechanism in ("ip4", "ip6"):
                matched = peer in ipaddress.ip_network(arg, strict=False)
            elif mechanism == "a":
                matched = ip in _addresses(dns, arg or domain)
            elif mechanism == "mx":
                matched = ip in [h.address for h in _mail_hosts(dns, arg or domain)]
            elif mechanism == "include":
                inner = check(dns, ip, arg, depth + 1)
                if inner in ("temperror", "permerror"):
                    return inner
                if inner == "none":
                    return "permerror"
                matched = inner == "pass"
            elif "=" in term:
                continue  # an unknown modifier
            else:
                return "permerror"
        except ValueError:
            return "permerror"
        except RoutingError:
            return "temperror"
        if matched:
            return QUALIFIERS[qualifier]
    if redirect:
        inner = check(dns, ip, redirect, depth + 1)
        return "permerror" if inner == "none" else inner
    return "neutral"


def _addresses(dns: MailDns, host: str) -> list[str]:
    try:
        return dns.addresses(host)
    except NoRoute:
        return []


def _mail_hosts(dns: MailDns, domain: str) -> list[MailHost]:
    try:
        return dns.mail_hosts(domain)
    except NoRoute:
        return []
