"""In charge of the DNS that legacy mail needs: a domain's MX hosts in RFC 5321 order (with
the implicit MX of its A/AAAA records, and RFC 7505 null MX), host addresses, and TXT
records (DKIM keys, SPF policies). A static table overrides DNS for the names it lists
(tests, private deployments); `use_dns=False` makes the static table the whole world.

    NoRoute       permanent: NXDOMAIN, null MX, no address for any host
    RoutingError  temporary: timeout, SERVFAIL, REFUSED

dnspython's exceptions are translated here and nowhere else.
"""

from __future__ import annotations

import ipaddress
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.resolver
from dns.rdtypes.ANY.MX import MX

from wsemail.core.routing import normalize_domain
from wsemail.protocol.errors import NoRoute, RoutingError, UsageError

log = logging.getLogger("wsemail.smtp.dns")
SMTP_PORT = 25


@dataclass(frozen=True)
class MailHost:
    """One SMTP server to try: its name (for HELO/TLS) and the address to connect to."""

    name: str
    address: str
    port: int = SMTP_PORT


def _split_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or ":" in host and host[:1] != "[":
        return text.strip("[]"), SMTP_PORT
    return host.strip("[]"), int(port)


class MailDns:
    """MX, address and TXT lookups with dnspython, a static override in front."""

    def __init__(
        self,
        *,
        mx: Mapping[str, Sequence[str]] | None = None,
        txt: Mapping[str, str | Sequence[str]] | None = None,
        nameservers: list[str] | None = None,
        port: int = 53,
        use_dns: bool = True,
        timeout: float = 5.0,
        rng: random.Random | None = None,
        mx_port: int = SMTP_PORT,
    ) -> None:
        self.static_mx = {normalize_domain(d): list(hosts) for d, hosts in (mx or {}).items()}
        self.static_txt: dict[str, list[str]] = {
            name.lower().rstrip("."): [value] if isinstance(value, str) else list(value)
            for name, value in (txt or {}).items()
        }
        self.use_dns = use_dns
        self.mx_port = mx_port  # the SMTP port of MX hosts found by DNS (25; tests differ)
        self.rng = rng if rng is not None else random.Random()
        self._resolver: dns.resolver.Resolver | None = None
        if use_dns:
            try:
                self._resolver = dns.resolver.Resolver(configure=nameservers is None)
                if nameservers is not None:
                    self._resolver.port = port
                    self._resolver.nameservers = list(nameservers)
            except (dns.exception.DNSException, ValueError, OSError) as exc:
                raise UsageError(f"cannot set up DNS resolution: {exc}") from exc
            self._resolver.timeout = timeout
            self._resolver.lifetime = timeout

    # MX ---------------------------------------------------------------------------------
    def mail_hosts(self, domain: str) -> list[MailHost]:
        """Where to deliver mail for `domain`, in the order to try (blocking: run it in a
        thread). Static entries are "host:port" (an address or a name)."""
        name = normalize_domain(domain)
        if name in self.static_mx:
            hosts = [_split_hostport(h) for h in self.static_mx[name]]
            return [MailHost(h, h, p) for h, p in hosts]
        if self._resolver is None:
            raise NoRoute(f"no mail route for {name}")
        exchanges = self._mx(name)
        found: list[MailHost] = []
        last: Exception | None = None
        for exchange in exchanges:
            try:
                found += [MailHost(exchange, a, self.mx_port) for a in self.addresses(exchange)]
            except RoutingError as exc:  # try the other exchanges; transient if all fail
                last = exc
        if not found:
            if last is not None and not isinstance(last, NoRoute):
                raise RoutingError(f"no usable mail host for {name}: {last}")
            raise NoRoute(f"no mail host of {name} has an address")
        return found

    def _mx(self, name: str) -> list[str]:
        try:
            answer = self._query(name, "MX")
        except NoRoute as exc:
            if "no MX" not in str(exc):
                raise
            return [name]  # RFC 5321 §5.1: no MX, the domain itself is the implicit MX
        records = [rd for rd in answer if isinstance(rd, MX)]
        if len(records) == 1 and records[0].exchange == dns.name.root:
            raise NoRoute(f"{name} accepts no mail (null MX)")
        by_preference: dict[int, list[str]] = {}
        for rd in records:
            if rd.exchange != dns.name.root:
                host = rd.exchange.to_text(omit_final_dot=True).lower()
                by_preference.setdefault(rd.preference, []).append(host)
        ordered: list[str] = []
        for preference in sorted(by_preference):
            group = by_preference[preference]
            self.rng.shuffle(group)  # RFC 5321: spread load across equal preferences
            ordered += group
        return ordered or [name]

    def addresses(self, host: str) -> list[str]:
        """A then AAAA addresses of `host` (an address literal is its own)."""
        try:
            return [str(ipaddress.ip_address(host.strip("[]")))]
        except ValueError:
            pass
        if self._resolver is None:
            raise NoRoute(f"{host} has no address")
        found: list[str] = []
        last: Exception | None = None
        for rdtype in ("A", "AAAA"):
            try:
                found += [rd.to_text() for rd in self._query(host, rdtype)]
            except NoRoute as exc:
                last = exc
            except RoutingError as exc:
                last = exc
        if not found:
            if isinstance(last, NoRoute) or last is None:
                raise NoRoute(f"{host} has no address")
            raise last
        return found

    # TXT --------------------------------------------------------------------------------
    def txt(self, name: str) -> list[str]:
        """The TXT strings at `name` (each record's strings joined); [] when none."""
        key = name.lower().rstrip(".")
        if key in self.static_txt:
            return list(self.static_txt[key])
        if self._resolver is None:
            return []
        try:
            answer = self._query(key, "TXT")
        except NoRoute:
            return []
        return [b"".join(rd.strings).decode("utf-8", "replace") for rd in answer]

    def dkim_dnsfunc(self, name: bytes, timeout: int = 5) -> bytes | None:
        """dkimpy's `dnsfunc`: the DKIM key record at `name`, or None (RoutingError when
        DNS fails: the caller's "temperror")."""
        records = self.txt(name.decode("ascii", "replace"))
        return records[0].encode() if records else None

    def records(self, name: str, rdtype: str) -> list[tuple[tuple[str, str], object]]:
        """Raw answers in pyspf's shape, ((name, type), value): A/AAAA an address text,
        MX (preference, exchange), PTR a name, TXT the record's strings (bytes). [] for
        NXDOMAIN or no data; RoutingError when DNS fails."""
        key = name.lower().rstrip(".")
        if rdtype == "TXT" and key in self.static_txt:
            return [((key, "TXT"), [v.encode()]) for v in self.static_txt[key]]
        if rdtype == "MX" and key in self.static_mx:
            hosts = [_split_hostport(h)[0] for h in self.static_mx[key]]
            return [((key, "MX"), (10, host)) for host in hosts]
        if self._resolver is None:
            return []
        try:
            answer = self._query(key, rdtype)
        except NoRoute:
            return []
        found: list[tuple[tuple[str, str], object]] = []
        for rd in answer:
            value: object
            if rdtype == "MX":
                value = (rd.preference, rd.exchange.to_text(omit_final_dot=True))
            elif rdtype == "PTR":
                value = rd.target.to_text(omit_final_dot=True)
            elif rdtype == "TXT":
                value = list(rd.strings)
            else:
                value = rd.to_text()
            found.append(((key, rdtype), value))
        return found

    # one query, translated ---------------------------------------------------------------
    def _query(self, name: str, rdtype: str) -> dns.resolver.Answer:
        assert self._resolver is not None
        try:
            return self._resolver.resolve(f"{name}.", rdtype, search=False)
        except dns.resolver.NXDOMAIN as exc:
            raise NoRoute(f"{name} does not exist") from exc
        except dns.resolver.NoAnswer as exc:
            raise NoRoute(f"{name} has no {rdtype} record") from exc
        except dns.resolver.NoNameservers as exc:
            raise RoutingError(f"DNS for {name} failed (SERVFAIL or refused)") from exc
        except dns.exception.Timeout as exc:
            raise RoutingError(f"DNS for {name} timed out") from exc
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            raise RoutingError(f"DNS for {name} failed: {exc}") from exc
