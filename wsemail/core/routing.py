"""In charge of routing: turning a destination domain into the wsemail servers to try, in order.

DNS routing reads `_wsemail._tcp.<domain>` SRV records (DESIGN.md §7) and orders them as
RFC 2782 says: ascending priority, and within one priority a weighted random order, so the
queue fails over to the next target in the list. Answers are cached for their TTL, a
domain without a wsemail service for a short, bounded time. A static route table from the
config overrides DNS for the domains it names (development, tests, private deployments).

    NoRoute       permanent: NXDOMAIN, no SRV record, the "." target, a malformed domain
    RoutingError  temporary: timeout, SERVFAIL, REFUSED, no nameserver answered

dnspython's exceptions are translated here and nowhere else. Its resolver (about 2 MB of
a server's memory) is imported at the first SRV lookup: a server whose destinations all have
static routes never loads it.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

import dns.exception
import dns.name

from wsemail.protocol.errors import NoRoute, RoutingError, UsageError

if TYPE_CHECKING:
    import dns.asyncresolver

log = logging.getLogger("wsemail.routing")

SERVICE = "_wsemail._tcp"
DEFAULT_PATH = "/wsemail"
NEGATIVE_TTL = 60.0  # a NoRoute without an SOA in the answer is remembered this long
MAX_NEGATIVE_TTL = 300.0
MAX_TTL = 86400.0
MAX_CACHED_DOMAINS = 10_000

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class Target:
    """One server to try for a domain."""

    host: str
    port: int
    priority: int = 0
    weight: int = 0
    scheme: str = "https"
    path: str = DEFAULT_PATH

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"


class Resolver(Protocol):
    async def resolve(self, domain: str) -> list[Target]:
        """The targets for `domain` in the order to try them; raises NoRoute or RoutingError."""
        ...


def normalize_domain(domain: str) -> str:
    """`domain` lower-cased, as ASCII (IDNA), without the trailing dot; NoRoute if malformed."""
    if not isinstance(domain, str):
        raise NoRoute(f"invalid domain name {domain!r}")
    text = domain[:-1] if domain.endswith(".") else domain
    try:
        ascii_name = dns.name.from_unicode(text).to_text(omit_final_dot=True).lower()
    except (dns.exception.DNSException, UnicodeError, ValueError) as exc:
        raise NoRoute(f"invalid domain name {domain!r}: {exc}") from exc
    labels = ascii_name.split(".")
    if not text or len(ascii_name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise NoRoute(f"invalid domain name {domain!r}")
    return ascii_name


def parse_url(url: str, priority: int = 0) -> Target:
    """A static route such as "http://127.0.0.1:9001/wsemail" as a Target; UsageError if bad."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"invalid route URL {url!r}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"invalid route URL {url!r}: expected http(s)://host[:port][/path]")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise UsageError(f"invalid route URL {url!r}: no user, query or fragment allowed")
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return Target(
        host=parts.hostname,
        port=port,
        priority=priority,
        scheme=parts.scheme,
        path=parts.path or DEFAULT_PATH,
    )


class StaticResolver:
    """Routes from the config: {"b.test": ["http://127.0.0.1:9001/wsemail", …]}, in order."""

    def __init__(self, routes: Mapping[str, Sequence[str]]) -> None:
        self.routes: dict[str, tuple[Target, ...]] = {}
        for domain, urls in routes.items():
            try:
                name = normalize_domain(domain)
            except NoRoute as exc:
                raise UsageError(f"static route: {exc}") from exc
            if isinstance(urls, str) or not urls:
                raise UsageError(f"static route for {domain!r}: expected a non-empty URL list")
            self.routes[name] = tuple(parse_url(url, i) for i, url in enumerate(urls))

    def knows(self, domain: str) -> bool:
        try:
            return normalize_domain(domain) in self.routes
        except NoRoute:
            return False

    async def resolve(self, domain: str) -> list[Target]:
        name = normalize_domain(domain)
        if name not in self.routes:
            raise NoRoute(f"no static route for {name}")
        return list(self.routes[name])


class ChainResolver:
    """Static routes override DNS for the domains they name; the rest goes to `dns`."""

    def __init__(self, static: StaticResolver, dns: Resolver) -> None:
        self.static = static
        self.dns = dns

    async def resolve(self, domain: str) -> list[Target]:
        if self.static.knows(domain):
            return await self.static.resolve(domain)
        return await self.dns.resolve(domain)


@dataclass(frozen=True)
class _Entry:
    expires: float
    targets: tuple[Target, ...] = ()  # sorted by priority; empty: `no_route` says why
    no_route: str = ""


class SrvResolver:
    """`_wsemail._tcp.<domain>` SRV lookups with dnspython, ordered per RFC 2782, cached."""

    def __init__(
        self,
        nameservers: list[str] | None = None,
        port: int = 53,
        *,
        timeout: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.nameservers = nameservers
        self.port = port
        self.timeout = timeout
        self.clock = clock
        self.rng = rng if rng is not None else random.Random()
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._resolver: dns.asyncresolver.Resolver | None = None
        if nameservers is not None:  # named ones are checked now (the system's at first use)
            self._dns()

    def _dns(self) -> dns.asyncresolver.Resolver:
        """dnspython's resolver, made (and imported) when first needed; UsageError if the
        nameservers given or the system's configuration cannot be used."""
        if self._resolver is not None:
            return self._resolver
        import dns.asyncresolver

        try:
            resolver = dns.asyncresolver.Resolver(configure=self.nameservers is None)
            if self.nameservers is not None:
                resolver.port = self.port  # before the nameservers, which take it on
                resolver.nameservers = list(self.nameservers)
        except (dns.exception.DNSException, ValueError, OSError) as exc:
            raise UsageError(f"cannot set up DNS resolution: {exc}") from exc
        resolver.timeout = self.timeout
        resolver.lifetime = self.timeout
        resolver.cache = None  # ours below, on the injected clock
        self._resolver = resolver
        return resolver

    async def resolve(self, domain: str) -> list[Target]:
        name = normalize_domain(domain)
        entry = self._cache.get(name)
        if entry is None or entry.expires <= self.clock():
            entry = await self._lookup(name)
            self._remember(name, entry)
        if entry.no_route:
            raise NoRoute(entry.no_route)
        return rfc2782_order(entry.targets, self.rng)

    def _remember(self, name: str, entry: _Entry) -> None:
        self._cache.pop(name, None)
        if entry.expires > self.clock():
            self._cache[name] = entry
            while len(self._cache) > MAX_CACHED_DOMAINS:
                self._cache.popitem(last=False)

    async def _lookup(self, name: str) -> _Entry:
        import dns.resolver
        from dns.rdtypes.IN.SRV import SRV

        qname = f"{SERVICE}.{name}."
        try:
            resolver = self._dns()
        except UsageError as exc:
            raise RoutingError(f"DNS for {name} failed: {exc}") from exc
        try:
            answer = await resolver.resolve(qname, "SRV", search=False)
        except dns.resolver.NXDOMAIN as exc:
            return self._negative(
                name, f"{name} has no wsemail service ({qname} does not exist)", exc
            )
        except dns.resolver.NoAnswer as exc:
            return self._negative(name, f"{name} has no wsemail service (no SRV at {qname})", exc)
        except dns.resolver.YXDOMAIN as exc:
            return self._negative(name, f"{name}: {qname} is too long", exc)
        except dns.resolver.NoNameservers as exc:
            raise RoutingError(f"DNS for {name} failed (SERVFAIL or refused): {exc}") from exc
        except dns.exception.Timeout as exc:
            raise RoutingError(f"DNS for {name} timed out: {exc}") from exc
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            raise RoutingError(f"DNS for {name} failed: {exc}") from exc
        ttl = min(float(answer.chaining_result.minimum_ttl), MAX_TTL)  # CNAMEs count too
        records = [rd for rd in answer if isinstance(rd, SRV)]
        targets = [
            Target(
                host=rd.target.to_text(omit_final_dot=True),
                port=rd.port,
                priority=rd.priority,
                weight=rd.weight,
            )
            for rd in records
            if rd.target != dns.name.root
        ]
        log.debug("SRV %s: %d targets, ttl %s", name, len(targets), ttl)
        if not targets:  # RFC 2782: a sole "." target means decidedly no service
            reason = f"{name} declares no wsemail service (SRV target '.')"
            return _Entry(self.clock() + min(ttl, MAX_NEGATIVE_TTL), no_route=reason)
        targets.sort(key=lambda t: t.priority)
        return _Entry(self.clock() + ttl, targets=tuple(targets))

    def _negative(self, name: str, reason: str, exc: dns.exception.DNSException) -> _Entry:
        log.debug("no route for %r: %s", name, reason)
        return _Entry(self.clock() + _negative_ttl(exc), no_route=reason)


def _negative_ttl(exc: dns.exception.DNSException) -> float:
    """RFC 2308: the SOA's TTL and minimum bound a negative answer; none given: 60 s."""
    import dns.message
    import dns.rdatatype

    found = exc.kwargs.get("responses") or {}  # NXDOMAIN: by qname; NoAnswer: one
    responses = [*found.values(), exc.kwargs.get("response")]
    for response in responses:
        if not isinstance(response, dns.message.Message):
            continue
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
                minimum = float(rrset[0].minimum)
                return min(float(rrset.ttl), minimum, MAX_NEGATIVE_TTL)
    return NEGATIVE_TTL


def rfc2782_order(targets: Sequence[Target], rng: random.Random) -> list[Target]:
    """Ascending priority; within a priority, weighted random selection order (RFC 2782).

    Zero-weight targets go first into the running sum, so they are chosen only when the
    random number is 0 (a very small chance) unless every weight is 0; ties are shuffled so
    that equal targets share the load.
    """
    ordered: list[Target] = []
    for priority in sorted({t.priority for t in targets}):
        group = [t for t in targets if t.priority == priority]
        rng.shuffle(group)
        group.sort(key=lambda t: t.weight != 0)  # stable: zero weights first, shuffled
        while group:
            total = sum(t.weight for t in group)
            pick = rng.randint(0, total)
            running = 0
            for index, target in enumerate(group):
                running += target.weight
                if running >= pick:
                    ordered.append(group.pop(index))
                    break
    return ordered


def build_resolver(
    static: dict[str, list[str]] | None, nameservers: list[str] | None, port: int = 53
) -> Resolver:
    """The resolver a server uses: DNS SRV, overridden by the static routes if any."""
    dns_resolver = SrvResolver(nameservers, port)
    if static:
        return ChainResolver(StaticResolver(static), dns_resolver)
    return dns_resolver
