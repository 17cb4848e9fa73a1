"""In charge of message submission for legacy mail programs (RFC 6409): an aiosmtpd
listener where a local user logs in with SMTP AUTH (PLAIN or LOGIN) and hands over a MIME
message, which then takes exactly the path of a SOAP `Send` from that user.

Security rules (DESIGN.md §4, applied to SMTP):
- AUTH only after STARTTLS with the server's TLS certificate; `insecure_auth` lifts this
  for tests and only on a loopback listener, and only for loopback peers.
- The password is checked against the stored scrypt derivation by the server's
  `Authenticator` (`check_rate` → `check_password` → `record_failure`): the same answer
  (535) and the same cost for an unknown user and a wrong password, the same per-user and
  per-peer failure limit as the SOAP endpoint (454 while it holds).
- MAIL needs AUTH (530); MAIL FROM and the header From must be the authenticated address.
- RCPT: any address; an unknown user of this domain is refused at once (550). Blind
  copies (an envelope recipient named in neither To nor Cc) are refused: the wsemail
  message has no Bcc, and naming them in To would disclose them.
- DATA: the MIME message becomes a `Send` request (the inbound gateway's conversion,
  `mime.from_mime`) run by `Server.run_authenticated` like any Send: sending processors
  (relay policy, size limit, attachments), the sender's `sent` copy, local delivery, the
  queue for other domains (signed relay to wsemail domains, SMTP fallback to the rest).
  MIME attachments become on-demand attachments of the sender when that plug-in is
  loaded (written before the unit of work, removed again if it fails); without it a
  message with attachments is refused. A refused message leaves no row and no file.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session
from lxml import etree

from wsemail.protocol.errors import (
    AuthenticationFailed,
    InsufficientStorage,
    MessageTooLarge,
    QuotaExceeded,
    RateLimited,
    Rejected,
    RemoteFault,
    SecurityFault,
    StoreError,
    TooLarge,
    UnknownRecipient,
)
from wsemail.protocol.message import MAX_RECIPIENTS, Draft, domain_of
from wsemail.protocol.message import normalize_address as normalize
from wsemail.protocol.soap import q
from wsemail.server.app import Login
from wsemail.server.attachments import records
from wsemail.server.attachments.plugin import MAX_PER_MESSAGE
from wsemail.server.operations import send
from wsemail.server.pipeline import Environment
from wsemail.server.smtp.inbound import (
    discard_parts,
    loaded_attachments,
    unknown_local_user,
    write_parts,
)
from wsemail.server.smtp.mime import Incoming, from_mime
from wsemail.server.store import Tx, UserRecord

if TYPE_CHECKING:
    from wsemail.server.app import Server

log = logging.getLogger("wsemail.smtp.submission")


class _QuietLoginData(logging.Filter):
    """aiosmtpd 1.4 itself sets the deprecated `Session.login_data` after every successful
    AUTH and logs a warning about it each time: not news for an operator."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in record.getMessage()


logging.getLogger("mail.log").addFilter(_QuietLoginData())

AUTH_FAILED = "535 5.7.8 Authentication credentials invalid"
AUTH_LIMITED = "454 4.7.0 Too many failed authentications, try again later"
AUTH_NEEDS_TLS = "538 5.7.11 Encryption required for requested authentication mechanism"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _peer(session: Session) -> str:
    peer = session.peer
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer or "unknown")


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None


@dataclass(frozen=True)
class Account:
    """Who logged in on a session, and the stored key they logged in against (a password
    changed since ends the session's right to send, as for PasswordText requests)."""

    address: str
    key: bytes = field(repr=False)


@dataclass
class Counts:
    """What the listener did, for tests and the admin's status answer."""

    submitted: int = 0
    auth_failed: int = 0
    refused: int = 0


class Submission:
    """The aiosmtpd handler of the submission port (hooks `auth_*` and `handle_*`)."""

    def __init__(self, server: Server, *, insecure_auth: bool = False) -> None:
        self.server = server
        self.domain = server.config.domain
        self.insecure_auth = insecure_auth
        self.counts = Counts()

    # AUTH -------------------------------------------------------------------------------
    async def auth_PLAIN(self, smtp: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        """RFC 4616: [authzid] NUL authcid NUL password (an authzid must be the authcid)."""
        blob: object
        if len(args) == 1:
            blob = await smtp.challenge_auth("")
            if blob is MISSING:  # aborted or not base64: already answered
                return AuthResult(success=False, handled=True)
        else:
            blob = _b64(args[1])
            if blob is None:
                return AuthResult(
                    success=False, handled=False, message="501 5.5.2 Can't decode base64"
                )
        assert isinstance(blob, bytes)
        fields = blob.split(b"\0")
        if len(fields) != 3:
            return AuthResult(
                success=False, handled=False, message="501 5.5.2 Can't split auth value"
            )
        authzid, login, password = fields
        if authzid and authzid != login:
            return await self._failed(smtp, login)
        return await self._login(smtp, login, password)

    async def auth_LOGIN(self, smtp: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        login: object
        if len(args) == 1:
            login = await smtp.challenge_auth(smtp.AuthLoginUsernameChallenge)
            if login is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            login = _b64(args[1])
            if login is None:
                return AuthResult(
                    success=False, handled=False, message="501 5.5.2 Can't decode base64"
                )
        password = await smtp.challenge_auth(smtp.AuthLoginPasswordChallenge)
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        assert isinstance(login, bytes) and isinstance(password, bytes)
        return await self._login(smtp, login, password)

    def _username(self, login: bytes) -> str:
        text = login.decode("utf-8", "replace")
        try:
            return normalize(text)
        except RemoteFault:
            return text[:320]

    async def _login(self, smtp: SMTP, login: bytes, password: bytes) -> AuthResult:
        """The password against the stored derivation, like a PasswordText UsernameToken."""
        session = smtp.session
        assert session is not None
        peer = _peer(session)
        if session.ssl is None and not (self.insecure_auth and is_loopback(peer)):
            return AuthResult(success=False, handled=False, message=AUTH_NEEDS_TLS)
        username = self._username(login)
        auth = self.server.auth
        try:
            auth.check_rate(username, peer)
        except RateLimited:
            log.info("AUTH rate limit for %r from %s", username, peer)
            return AuthResult(success=False, handled=False, message=AUTH_LIMITED)
        try:
            text = password.decode("utf-8")
        except UnicodeDecodeError:
            text = ""  # still checked, so the answer and its cost stay the same
        try:
            user = await self.server.store.transact(lambda tx: tx.user(username))
            await auth.check_password(user, username, text)
        except AuthenticationFailed:
            return await self._failed(smtp, login)
        except StoreError:
            log.exception("cannot read the account of %r", username)
            return AuthResult(
                success=False, handled=False, message="454 4.3.0 Temporary local problem"
            )
        assert user is not None
        log.info("%r authenticated from %s", user.address, peer)
        return AuthResult(success=True, auth_data=Account(user.address, user.key))

    async def _failed(self, smtp: SMTP, login: bytes) -> AuthResult:
        assert smtp.session is not None
        username, peer = self._username(login), _peer(smtp.session)
        self.server.auth.record_failure(username, peer)
        self.counts.auth_failed += 1
        log.info("AUTH failed for %r from %s", username, peer)
        return AuthResult(success=False, handled=False, message=AUTH_FAILED)

    # envelope ---------------------------------------------------------------------------
    async def handle_MAIL(  # noqa: N802
        self,
        smtp: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if not session.authenticated:
            return "530 5.7.0 Authentication required"
        try:
            address = normalize(address)
        except RemoteFault:
            return "553 5.1.7 bad sender address"
        account = session.auth_data
        assert isinstance(account, Account)
        if address != account.address:
            log.info("refused MAIL FROM %r for %r", address, account.address)
            self.counts.refused += 1
            return f"553 5.7.1 you may send only as {account.address}"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802
        self,
        smtp: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        try:
            address = normalize(address)
        except RemoteFault:
            return "553 5.1.3 bad recipient address"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 too many recipients"
        if domain_of(address) == self.domain:
            refused = await unknown_local_user(self.server, address)
            if refused:
                return refused
        if address not in envelope.rcpt_tos:
            envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    # DATA -------------------------------------------------------------------------------
    async def handle_DATA(  # noqa: N802
        self, smtp: SMTP, session: Session, envelope: Envelope
    ) -> str:
        account = session.auth_data
        assert isinstance(account, Account)
        user, peer = account.address, _peer(session)
        data = envelope.original_content or b""
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        try:
            incoming = from_mime(data)
            draft = self.draft(incoming, user, list(envelope.rcpt_tos))
        except RemoteFault as exc:
            log.info("refused submission by %r from %s: %s", user, peer, exc.reason)
            self.counts.refused += 1
            return _reply(exc)
        try:
            message_id = await self.submit(incoming, draft, account, peer)
        except RemoteFault as exc:
            log.info("refused submission by %r from %s: %s", user, peer, exc.reason)
            self.counts.refused += 1
            return _reply(exc)
        except StoreError:
            log.exception("cannot store the submission by %r", user)
            return "451 4.3.0 temporary local problem, try again later"
        self.counts.submitted += 1
        log.info("submitted by %r via %s: %s", user, peer, message_id)
        return f"250 2.0.0 OK {message_id}"[:500]

    def draft(self, incoming: Incoming, user: str, recipients: list[str]) -> Draft:
        """The Send request's message: the headers' To and Cc as far as the envelope names
        them (the envelope alone when the headers name nobody); envelope recipients the
        headers do not name are blind copies (Bcc); In-Reply-To and References as the mail
        program set them."""
        if incoming.sender is not None and incoming.sender != user:
            raise Rejected(f"the From header must be your address {user}")
        named = [*incoming.to, *incoming.cc]
        to = [r for r in incoming.to if r in recipients] if named else recipients
        cc = [r for r in incoming.cc if r in recipients and r not in to]
        return Draft(
            to,
            incoming.subject,
            incoming.body,
            cc,
            incoming.message_id,
            bcc=[r for r in recipients if r not in named] if named else [],
            in_reply_to=incoming.in_reply_to,
            references=incoming.references,
        )

    async def submit(self, incoming: Incoming, draft: Draft, account: Account, peer: str) -> str:
        """Attachments written first, then one `Send` unit of work; the Message-ID sent."""
        user = account.address
        parts = [p for p in incoming.parts if p.keep]
        plugin = loaded_attachments(self.server) if parts else None
        if parts and plugin is None:
            raise Rejected("this server takes no attachments by SMTP submission")
        stored: list[tuple[str, str]] = []
        if plugin is not None:
            if len(parts) > MAX_PER_MESSAGE:
                raise Rejected(f"at most {MAX_PER_MESSAGE} attachments per message")
            if any(p.size > plugin.max_bytes for p in parts):
                raise MessageTooLarge(f"attachments are limited to {plugin.max_bytes} bytes each")
            stored = await write_parts(self.server.store, plugin, user, parts, quota=True)
            draft.attachments = [guid for guid, _ in stored]
        request = etree.Element(q("Send"))
        draft.to_xml(request)
        url = plugin.own_url() if plugin is not None else ""

        def check(tx: Tx) -> UserRecord:
            current = tx.user(user)
            if current is None or current.key != account.key:  # removed or changed since
                raise AuthenticationFailed("authentication failed")
            return current

        def work(tx: Tx, account: UserRecord) -> tuple[etree._Element, Environment]:
            for guid, sha256 in stored:
                records.mark_stored(tx, guid, sha256, url)
            env = Environment(
                principal=account.address,
                domain=self.domain,
                tx=tx,
                request=request,
                pipeline=self.server.pipeline,
                clock=self.server.clock,
                is_admin=account.admin,
                wake_relay=self.wake_relay,
            )
            return send(env, request), env

        try:
            result, env = await self.server.run_authenticated(
                Login(user, request, check), peer, work
            )
        except BaseException:
            if plugin is not None and stored:
                await discard_parts(self.server.store, plugin, [g for g, _ in stored])
            raise
        for callback in env.after_commit:
            callback()
        return result.findtext(q("MessageId")) or ""

    def wake_relay(self) -> None:
        """Wake the relay on the serving loop (this listener runs on its own thread)."""
        if self.server.relay is not None:
            self.server.relay.wake_threadsafe()


def _reply(exc: RemoteFault) -> str:
    """The SMTP answer for a refused submission (RFC 3463 enhanced codes)."""
    reason = " ".join(exc.reason.split())[:400]
    if isinstance(exc, QuotaExceeded):
        return f"552 5.2.2 {reason}"
    if isinstance(exc, InsufficientStorage):
        return f"452 4.3.1 {reason}"
    if isinstance(exc, MessageTooLarge | TooLarge):
        return f"552 5.3.4 {reason}"
    if isinstance(exc, UnknownRecipient):
        return f"550 5.1.1 {reason}"
    if isinstance(exc, Rejected):  # relay policy, From header, blind copies, …
        return f"550 5.7.1 {reason}"
    if isinstance(exc, SecurityFault):  # the account was removed or its password changed
        return f"554 5.7.0 {reason}; log in again"
    if exc.code == "Receiver":
        return f"451 4.3.0 {reason}"
    return f"554 5.6.0 {reason}"
