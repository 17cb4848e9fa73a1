"""The checks made when a mapped address is set or removed (the CLI on the data dir, and
anything else that changes them): each refusal is a UsageError saying what is wrong, and
nothing is changed."""

from __future__ import annotations

from wsemail.protocol.errors import RemoteFault, UsageError
from wsemail.protocol.message import domain_of, normalize_address
from wsemail.server.addresses import records
from wsemail.server.addresses.records import Mapped
from wsemail.server.mapping import MAX_DEPTH
from wsemail.server.store import Tx

MAX_TARGETS = 100
MAX_REPLY = 16 << 10


def address(raw: str, domain: str) -> str:
    try:
        found = normalize_address(raw)
    except RemoteFault as exc:
        raise UsageError(exc.reason) from exc
    return found


def may_forward_to(domain: str, external: list[str]) -> bool:
    return "*" in external or domain.lower() in {d.lower() for d in external}


def check(tx: Tx, domain: str, mapped: Mapped, external: list[str]) -> Mapped:
    """`mapped` with its addresses normalised, or UsageError."""
    name = address(mapped.address, domain)
    if domain_of(name) != domain:
        raise UsageError(f"{name} is not in this server's domain {domain}")
    if tx.user(name) is not None:
        raise UsageError(f"{name} is an account's mailbox, it cannot be mapped")
    if mapped.kind not in records.KINDS:
        raise UsageError(f"kind must be one of {', '.join(records.KINDS)}")
    targets = list(dict.fromkeys(address(t, domain) for t in mapped.targets))
    if mapped.kind == "autoresponse":
        if targets:
            raise UsageError("an auto-responder has no targets: it answers every sender")
        if not mapped.body.strip() or len(mapped.body) > MAX_REPLY:
            raise UsageError(f"an auto-responder needs a reply body of at most {MAX_REPLY} bytes")
    elif not targets:
        raise UsageError(f"an {mapped.kind} needs at least one target")
    if len(targets) > MAX_TARGETS:
        raise UsageError(f"at most {MAX_TARGETS} targets")
    for target in targets:
        if target == name:
            raise UsageError(f"{name} cannot point at itself")
        target_domain = domain_of(target)
        if target_domain != domain:
            if not may_forward_to(target_domain, external):
                raise UsageError(
                    f"{target} is outside {domain}: server.toml does not allow aliases to "
                    f'{target_domain} (aliases plug-in option external = ["{target_domain}"])'
                )
            continue
        if tx.user(target) is None and records.get(tx, target) is None:
            raise UsageError(f"{target} is neither an account nor a mapped address here")
    result = Mapped(name, mapped.kind, tuple(targets), mapped.subject, mapped.body)
    _no_loop(tx, domain, result)
    return result


def _no_loop(tx: Tx, domain: str, new: Mapped) -> None:
    """Refuse a mapping through which an address reaches itself, or that is too deep."""

    def targets_of(addr: str) -> tuple[str, ...]:
        if addr == new.address:
            return new.targets
        found = records.get(tx, addr)
        return found.targets if found is not None else ()

    def walk(addr: str, path: list[str]) -> None:
        if addr in path:
            raise UsageError("that makes a loop: " + " -> ".join([*path, addr]))
        if len(path) > MAX_DEPTH:
            raise UsageError(f"aliases nest at most {MAX_DEPTH} deep: " + " -> ".join(path))
        for target in targets_of(addr):
            if domain_of(target) == domain:
                walk(target, [*path, addr])

    walk(new.address, [])
    # the ones pointing at it may get too deep through it
    for other in records.listing(tx):
        if new.address in other.targets:
            walk(other.address, [])


def check_remove(tx: Tx, name: str) -> None:
    users = [m.address for m in records.listing(tx) if name in m.targets]
    if users:
        raise UsageError(f"{name} is a target of {', '.join(users)}: change those first")
