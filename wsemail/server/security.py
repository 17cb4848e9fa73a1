"""In charge of authenticating client requests (DESIGN.md §4), and of signing the answers
to those that ask for it.

Order of checks for the password MAC: timestamp window → nonce not seen → MAC, compared in
constant time; the nonce is then inserted in the same transaction as the request's effect.
An unknown user is checked against a fake key, so the answer and its cost are the same as
for a wrong password. Failed attempts are counted per (user, peer address) and per peer
address (`wsemail.server.ratelimit`), never per user alone: bad requests from elsewhere do
not lock the real user out. Over either limit the answer is 429 until the bucket refills;
known and unknown names are counted alike.

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
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from lxml import etree

from wsemail.protocol.auth import (
    IN_RESPONSE_TO,
    SALT_BYTES,
    SIGN_RESPONSE,
    UsernameToken,
    check_window,
    compute_mac,
    decode_nonce,
    derive_key,
    mac_matches,
    timestamp,
    timestamp_parts,
)
from wsemail.protocol.dsig import Signer
from wsemail.protocol.errors import (
    AuthenticationFailed,
    RateLimited,
    ReplayDetected,
)
from wsemail.protocol.soap import q
from wsemail.server.ratelimit import RateLimiter, peer_key
from wsemail.server.store import Tx, UserRecord

FAILED = "authentication failed"


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
        # failures_per_user: per (user, peer address); failures_per_peer: per peer address
        self.per_user = RateLimiter(failures_per_user, failure_window, clock=clock)
        self.per_peer = RateLimiter(failures_per_peer, failure_window, clock=clock)
        self._password_cache: OrderedDict[tuple[str, bytes], bytes] = OrderedDict()
        # told of every failure (username, peer key) when several nodes share the counts
        # (wsemail/server/postgres/failures.py); None: this process counts alone
        self.on_failure: Callable[[str, str], None] | None = None

    # salts ------------------------------------------------------------------------------
    def fake_salt(self, username: str) -> bytes:
        """Deterministic salt for names with no account, so they cannot be enumerated."""
        return hmac.new(self.secret, b"salt|" + username.encode(), "sha256").digest()[:SALT_BYTES]

    def fake_key(self, username: str) -> bytes:
        return hmac.new(self.secret, b"key|" + username.encode(), "sha256").digest()

    # checks outside the transaction ------------------------------------------------------
    def check_rate(self, username: str, peer: str) -> None:
        """RateLimited if this peer used up its failures, for this name or for all names."""
        where = peer_key(peer)
        if self.per_peer.over(where) or self.per_user.over(f"{username}\n{where}"):
            raise RateLimited("too many failed authentications; try again later")

    def record_failure(self, username: str, peer: str) -> None:
        where = peer_key(peer)
        self.count_failure(username, where)
        if self.on_failure is not None:
            self.on_failure(username, where)

    def count_failure(self, username: str, where: str) -> None:
        """Count one failure of `username` from peer key `where` (here, or at another node)."""
        self.per_user.hit(f"{username}\n{where}")
        self.per_peer.hit(where)

    def check_fresh(self, created: str | None, expires: str | None = None) -> None:
        """Created within the window (300 s past, 60 s future by default); Expires, when
        given, after Created and not past by more than the 60 s clock-skew allowance."""
        now = datetime.fromtimestamp(self.clock(), UTC)
        check_window(created, expires, now, self.past, self.future)

    def check_timestamp(self, stamp: etree._Element | None) -> None:
        """`check_fresh` for a (verified) wsu:Timestamp: Created required, Expires checked."""
        self.check_fresh(*timestamp_parts(stamp))

    def check_token(self, token: UsernameToken) -> None:
        """A UsernameToken's Created, and the wsu:Timestamp beside it if there is one."""
        self.check_fresh(token.created)
        if token.stamp != (None, None):
            self.check_fresh(*token.stamp)

    @staticmethod
    def canonical_nonce(token: UsernameToken) -> str:
        return base64.b64encode(decode_nonce(token.nonce)).decode("ascii")

    # checks inside the transaction -------------------------------------------------------
    def verify_mac(
        self, tx: Tx, token: UsernameToken, nonce: str, operation: str, body_c14n: bytes
    ) -> UserRecord:
        """Nonce not seen → MAC. The nonce is remembered first, in one statement (an insert
        that finds it already there is the replay); a MAC that does not match raises, and
        the unit's rollback forgets the nonce again."""
        self.remember(tx, token.username, nonce)
        user = tx.user(token.username)
        key = user.key if user is not None else self.fake_key(token.username)
        expected = compute_mac(
            key, operation, token.username, token.nonce or "", token.created or "", body_c14n
        )
        if not mac_matches(expected, token.password) or user is None:
            raise AuthenticationFailed(FAILED)
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
    asks = list(header.iterchildren(q(SIGN_RESPONSE)))
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
