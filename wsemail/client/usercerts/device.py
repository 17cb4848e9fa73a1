"""In charge of end-to-end mail on this device, for the CLI and the TUI alike: finding a
domain's server, the certificate directory with its cache, and opening encrypted messages
and attachments with the key kept here.

The directory of a domain is its server: WSEMAIL_DIRECTORY_ROUTES ("domain=url,…") or the
account's `directory_routes` in client.toml name it explicitly, otherwise `_wsemail._tcp`
SRV records do. Accepted certificates are cached
between commands in WSEMAIL_DIRECTORY_CACHE (default: `directory` beside the keys folder)
for at most an hour (less if a CRL or the certificate runs out first).
"""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path

from wsemail.client import session
from wsemail.client.attachments import Listing
from wsemail.client.mail import Client
from wsemail.client.usercerts import keystore
from wsemail.client.usercerts.attachments import EncryptedAttachment, open_listing
from wsemail.client.usercerts.directory import Directory
from wsemail.client.usercerts.sealed import is_sealed, open_or_error
from wsemail.protocol.errors import TransportError, UsageError
from wsemail.protocol.message import Message


def _routes() -> dict[str, str]:
    raw = os.environ.get("WSEMAIL_DIRECTORY_ROUTES", "")
    if not raw:
        return session.directory_routes()
    routes: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in raw.split(","))):
        domain, sep, url = item.partition("=")
        if not sep:
            raise UsageError("WSEMAIL_DIRECTORY_ROUTES is domain=url,domain=url")
        routes[domain.strip().lower()] = url.strip()
    return routes


def locate_server(domain: str) -> str:
    """The wsemail server of `domain`: WSEMAIL_DIRECTORY_ROUTES (domain=url,…), else the
    account's directory_routes in client.toml, else SRV."""
    routes = _routes()
    if domain in routes:
        return routes[domain]
    from wsemail.core.routing import build_resolver

    targets = asyncio.run(build_resolver(None, None).resolve(domain))
    if not targets:
        raise TransportError(f"no _wsemail._tcp record for {domain}")
    return targets[0].url


def open_directory() -> Directory:
    roots = session.trust_roots()
    if not roots:
        raise UsageError("encrypted mail needs the federation roots: set WSEMAIL_TRUST_ROOTS")
    verify: ssl.SSLContext | None = None
    cafile = os.environ.get("WSEMAIL_CACERT")
    if cafile:
        verify = ssl.create_default_context(cafile=cafile)
    return Directory(roots, locate_server, verify=verify, cache_dir=directory_cache())


def directory_cache() -> Path:
    """Where accepted certificates are kept between commands: WSEMAIL_DIRECTORY_CACHE, else
    beside this device's keys (so a profile's keys and what it trusted stay together)."""
    env = os.environ.get("WSEMAIL_DIRECTORY_CACHE")
    return Path(env) if env else keystore.keys_dir().parent / "directory"


def open_attachments(client: Client, listing: Listing) -> list[EncryptedAttachment] | None:
    """The encrypted attachments of a listed message opened with the key on this device,
    or None when the message is not encrypted."""
    if not is_sealed(listing.message):
        return None
    own = keystore.load(client.username) if keystore.exists(client.username) else None
    with open_directory() as directory:
        return open_listing(listing, own, directory)


def open_messages(client: Client, message: Message) -> tuple[Message, dict[str, object]]:
    """The message with its decrypted subject and body, and its encryption status."""
    if not is_sealed(message):
        return message, {"encrypted": False, "signed": False, "signer": None}
    own = keystore.load(client.username) if keystore.exists(client.username) else None
    with open_directory() as directory:
        result = open_or_error(message, own, directory)
    if isinstance(result, str):
        return message, {"encrypted": True, "error": result}
    message.subject, message.body = result.subject, result.body
    return message, result.as_dict()
