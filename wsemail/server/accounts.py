"""Accounts of one domain: the server stores each user's salt and derived MAC key, never the
password. Used by `wsemail user …` directly on the data dir (safe while the server runs:
SQLite WAL with a busy timeout)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from wsemail.protocol.auth import SALT_BYTES, derive_key
from wsemail.protocol.errors import RemoteFault, UsageError
from wsemail.protocol.message import domain_of, normalize_address
from wsemail.server.store import BatchStore, Tx, UserRecord

if TYPE_CHECKING:
    from wsemail.server.config import ServerConfig

MIN_PASSWORD = 8


def _address(address: str, domain: str) -> str:
    try:
        address = normalize_address(address)
    except RemoteFault as exc:
        raise UsageError(exc.reason) from exc
    if domain_of(address) != domain.lower():
        raise UsageError(f"{address} is not in this server's domain {domain}")
    return address


def set_user(
    store: BatchStore,
    domain: str,
    address: str,
    password: str,
    *,
    admin: bool = False,
    create: bool = True,
) -> str:
    """Create an account (create=True) or change its password (create=False)."""
    address = _address(address, domain)
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"password must have at least {MIN_PASSWORD} characters")
    salt = os.urandom(SALT_BYTES)
    key = derive_key(password, salt)

    def work(tx: Tx) -> None:
        existing = tx.user(address)
        if create and existing is not None:
            raise UsageError(f"{address} already exists")
        if not create and existing is None:
            raise UsageError(f"no such user: {address}")
        tx.put_user(address, salt, key, admin or bool(existing and existing.admin))

    store.transact_sync(work)
    return address


def remove_user(store: BatchStore, domain: str, address: str) -> None:
    address = _address(address, domain)
    if not store.transact_sync(lambda tx: tx.remove_user(address)):
        raise UsageError(f"no such user: {address}")


def list_users(store: BatchStore) -> list[UserRecord]:
    return store.transact_sync(lambda tx: tx.users())


def set_quota(store: BatchStore, config: ServerConfig, address: str, size: str) -> dict[str, Any]:
    """Set (a size) or clear ("default") an account's own storage quota; its usage after."""
    from wsemail.core.units import parse_size
    from wsemail.server.operate import records

    address = _address(address, config.domain)
    try:
        limit = None if size.strip().lower() == "default" else parse_size(size)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    store.ensure_schema(records.COMPONENT, records.MIGRATIONS)

    def work(tx: Tx) -> records.Usage:
        if tx.user(address) is None:
            raise UsageError(f"no such user: {address}")
        records.set_limit(tx, address, limit)
        return records.usage(tx, address, config.quota_per_user_bytes)

    usage = store.transact_sync(work)
    return {
        "address": usage.address,
        "used": usage.used,
        "limit": usage.limit,
        "messages": usage.messages,
        "message_bytes": usage.message_bytes,
        "attachment_bytes": usage.attachment_bytes,
        "override": usage.override,
    }
