"""In charge of authenticating client requests (DESIGN.md §4), and of signing the answers
to those that ask for it.

Order of checks for the password MAC: timestamp window → nonce not seen → MAC, compared in
constant time; the nonce is then inserted in the same transaction as the request's effect.
An unknown user is checked against a fake key, so the answer and its cost are the same as
for a wrong password. Failed attempts are counted per user and per peer address and answered
with 429 for the rest of a short window.

A MAC-authenticated request with a `<w:SignResponse/>` header gets a signed answer: the
server key signs Body and Timestamp (the hop-signature form, `Signer.signed_envelope`),
the Body's response element carries InResponseTo = the request's nonce, and the server
certificate is named by digest when the request says the client already holds it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from lxml import etree

from wsemail.protocol.auth import (
    IN_RESPONSE_TO,
    SALT_BYTES,
    SIGN_RESPONSE,
    UsernameToken,
    compute_mac,
    decode_nonce,
    derive_key,
    mac_matches,
    parse_timestamp,
    timestamp,
)
from wsemail.protocol.dsig import Signer
from wsemail.protocol.errors import (
    AuthenticationFailed,
    MessageExpired,
    RateLimited,
    ReplayDetected,
)
from wsemail.protocol.soap import q
from wsemail.server.store import Tx, UserRecord

FAILED = "authentication failed"


class FailureLimiter:
    """Counts failed authentications per key in a sliding window. Thread-safe: the SMTP
    submission listener checks passwords from its own thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def over(self, key: str, limit: int, window: float) -> bool:
        with self._lock:
            times = self._failures.get(key)
            if not times:
                return False
            cutoff = self.clock() - window
            while times and times[0] < cutoff:
                times.popleft()
            if not times:
                del self._failures[key]
                return False
            return len(times) >= limit

    def record(self, key: str) -> None:
        with self._lock:
            self._failures.setdefault(key, deque()).append(self.clock())
            if len(self._failures) > 100_000:  # bounded memory under a spray of names
                self._failures.pop(next(iter(self._failures)))


class Authenticator:
    def __init__(
        self,
        secret: bytes,
        *,
        clock: Callable[[], float] = time.time,
        past_seconds: float = 300,
        future_seconds: float = 60,
        failures_per_user: int = 10,
        failures_per_peer: int = 100,
        failure_window: float = 60,
    ) -> None:
        self.secret = secret
        self.clock = clock
        self.past = past_seconds
        self.future = future_seconds
        self.keep_nonce = past_seconds + future_seconds + 60
        self.per_user = failures_per_user
        self.per_peer = failures_per_peer
        self.window = failure_window
        self.limiter = FailureLimiter()
        self._password_cache: OrderedDict[tuple[str, bytes], bytes] = OrderedDict()

    # salts ------------------------------------------------------------------------------
    def fake_salt(self, username: str) -> bytes:
        """Deterministic salt for names with no account, so they cannot be enumerated."""
        return hmac.new(self.secret, b"salt|" + username.encode(), "sha256").digest()[:SALT_BYTES]

    def fake_key(self, username: str) -> bytes:
        return hmac.new(self.secret, b"key|" + username.encode(), "sha256").digest()

    # checks outside the transaction ------------------------------------------------------
    def check_rate(self, username: str, peer: str) -> None:
        if self.limiter.over("u:" + username, self.per_user, self.window) or self.limiter.over(
            "p:" + peer, self.per_peer, self.window
        ):
            raise RateLimited("too many failed authentications; try again later")

    def record_failure(self, username: str, peer: str) -> None:
        self.limiter.record("u:" + username)
        self.limiter.record("p:" + peer)

    def check_fresh(self, created: str | None) -> None:
        if created is None:
            raise MessageExpired("missing Created timestamp")
        when = parse_timestamp(created)
        now = datetime.fromtimestamp(self.clock(), UTC)
        age = (now - when).total_seconds()
        if age > self.past:
            raise MessageExpired("request timestamp is too old")
        if age < -self.future:
            raise MessageExpired("request timestamp is in the future")

    @staticmethod
    def canonical_nonce(token: UsernameToken) -> str:
        return base64.b64encode(decode_nonce(token.nonce)).decode("ascii")

    # checks inside the transaction -------------------------------------------------------
    def verify_mac(
        self, tx: Tx, token: UsernameToken, nonce: str, operation: str, body_c14n: bytes
    ) -> UserRecord:
        """Nonce not seen → MAC; then remember the nonce in this transaction."""
        if tx.nonce_seen(token.username, nonce):
            raise ReplayDetected("this request was already received")
        user = tx.user(token.username)
        key = user.key if user is not None else self.fake_key(token.username)
        expected = compute_mac(
            key, operation, token.username, token.nonce or "", token.created or "", body_c14n
        )
        if not mac_matches(expected, token.password) or user is None:
            raise AuthenticationFailed(FAILED)
        self.remember(tx, token.username, nonce)
        return user

    def remember(self, tx: Tx, username: str, nonce: str) -> None:
        if not tx.remember_nonce(username, nonce, self.keep_nonce):
            raise ReplayDetected("this request was already received")

    # UsernameToken with PasswordText (third-party toolkits) ---------------------------------
    async def check_password(self, user: UserRecord | None, username: str, password: str) -> None:
        """Derive once per (user, password) and remember it briefly; never store the text."""
        fingerprint = hmac.new(self.secret, password.encode(), "sha256").digest()
        cache_key = (username, fingerprint)
        derived = self._password_cache.get(cache_key)
        salt = user.salt if user is not None else self.fake_salt(username)
        if derived is None:
            derived = await asyncio.to_thread(derive_key, password, salt)
            self._password_cache[cache_key] = derived
            if len(self._password_cache) > 1024:
                self._password_cache.popitem(last=False)
        stored = user.key if user is not None else hashlib.sha256(self.secret).digest()
        if not hmac.compare_digest(derived, stored) or user is None:
            raise AuthenticationFailed(FAILED)


# signed answers -------------------------------------------------------------------------
@dataclass(frozen=True)
class AnswerBinding:
    """What a signed answer is bound to: the request's nonce, and the digest of the server
    certificate the client already holds (None: embed it)."""

    nonce: str
    known: bytes | None


def wants_signed_answer(
    header: etree._Element | None, token: UsernameToken
) -> AnswerBinding | None:
    """The binding for a MAC-authenticated request that asked for a signed answer."""
    if header is None or not token.is_mac or not token.nonce:
        return None
    asks = header.findall(q(SIGN_RESPONSE))
    if len(asks) != 1:
        return None
    try:
        known = base64.b64decode(asks[0].get("ServerCertificate") or "", validate=True)
    except (binascii.Error, ValueError):
        known = b""
    return AnswerBinding(token.nonce, known or None)


def signed_answer(
    signer: Signer, payload: etree._Element, binding: AnswerBinding, now: float, ttl: float = 300
) -> bytes:
    """The answer envelope for `payload`, signed and bound to its request."""
    payload.set(IN_RESPONSE_TO, binding.nonce)
    return signer.signed_envelope(
        payload,
        timestamp(datetime.fromtimestamp(now, UTC)),
        timestamp(datetime.fromtimestamp(now + ttl, UTC)),
        embed=binding.known != signer.cert_digest,
    )
