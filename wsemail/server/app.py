"""In charge of the SOAP endpoint: reading a request within its limits, parsing it with the
hardened parser, authenticating it, running the operation in one unit of work, and
answering with a response or a fault (never a traceback).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from cryptography import x509
from lxml import etree
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from wsemail.protocol import soap
from wsemail.protocol.auth import (
    KDF_N,
    KDF_P,
    KDF_R,
    MAC_TYPE,
    PASSWORD_TEXT,
    SIGN_RESPONSE,
    UsernameToken,
    decode_nonce,
    read_username_token,
    timestamp,
)
from wsemail.protocol.dsig import VerifiedEnvelope
from wsemail.protocol.errors import (
    AuthenticationFailed,
    Forbidden,
    InvalidSecurity,
    RemoteFault,
    RequestInvalid,
    RequestTimeout,
    ServerBusy,
    ServerError,
    SignatureInvalid,
    TooLarge,
    UntrustedSigner,
)
from wsemail.protocol.message import normalize_address
from wsemail.protocol.soap import WSSE, WSU, element, parse_int, q, text_of
from wsemail.protocol.xmlsafe import c14n, parse_untrusted
from wsemail.server.config import ServerConfig
from wsemail.server.connguard import Pace, Peers
from wsemail.server.federation import Federation
from wsemail.server.operations import AUTHENTICATED, QUICK
from wsemail.server.pipeline import Environment, Pipeline
from wsemail.server.security import (
    FAILED,
    AnswerBinding,
    Authenticator,
    signed_answer,
    wants_signed_answer,
)
from wsemail.server.store import BatchStore, Tx, UserRecord
from wsemail.server.wsdl import wsdl_document

log = logging.getLogger("wsemail.server")
PATH = "/wsemail"
CRL_PATH = "/wsemail/crl"  # the CRLs this server holds, for its clients' provenance checks
READING_BUDGET = 64  # request bodies (of the maximum size) buffered at once, all peers


T = TypeVar("T")
UNDERSTOOD_HEADERS = frozenset({q("Security", WSSE), q(SIGN_RESPONSE)})
CERTIFICATE_CALL = "CertificateCall"  # a client operation signed with the user certificate
# set by `Server.authenticated` when the request it authenticated asked for a signed answer
_ANSWER: ContextVar[AnswerBinding | None] = ContextVar("wsemail_answer", default=None)
# what the request being answered is, for its log line and the metrics (`RequestRecord`)
_RECORD: ContextVar[RequestRecord | None] = ContextVar("wsemail_request", default=None)
request_log = logging.getLogger("wsemail.request")
SelfAuthenticated = Callable[["Server", soap.ReceivedEnvelope, str], Awaitable[etree._Element]]


class CertificateVerifier(Protocol):
    """What certificate login needs from the user-certificate plug-in: the signature and
    chain check (`verify`, calling `claim` with the address the certificate names before
    its chain is checked) and, inside the unit of work, whether it is still active."""

    def verify(
        self, envelope: soap.ReceivedEnvelope, claim: Callable[[str], None]
    ) -> VerifiedEnvelope: ...

    def active(self, tx: Tx, address: str, cert: x509.Certificate) -> bool: ...


@dataclass
class RequestRecord:
    """One SOAP request as the operator sees it: the operation (an extension call as
    `Extension/<id>` when that extension is loaded), who it authenticated as, the outcome
    (`ok` or the fault's subcode name) and how long it took. Never a credential or a body;
    `answer` (the response payload, for observers that count what a Deliver did) is not
    logged."""

    peer: str
    operation: str = "unknown"
    user: str = ""
    outcome: str = "ok"
    status: int = 200
    seconds: float = 0.0
    answer: etree._Element | None = None

    def log_fields(self) -> dict[str, object]:
        return {
            "operation": self.operation,
            "user": self.user,
            "outcome": self.outcome,
            "status": self.status,
            "seconds": round(self.seconds, 6),
            "peer": self.peer,
        }


@dataclass
class Login:
    """A request whose credential passed every check that needs no transaction: who it
    claims to be, the operation element to run (the Body's, or the one a verified
    CertificateCall carries), the rest of the check that runs first in the unit of work,
    and the binding of a signed answer if one was asked for."""

    username: str
    request: etree._Element
    check: Callable[[Tx], UserRecord]
    answer: AnswerBinding | None = None


class Outbound(Protocol):
    """What the server asks of its outbound queue worker: to look at the queue now, and
    to retry at once what waits for a domain that was just heard from."""

    wake: asyncio.Event

    def wake_threadsafe(self) -> None: ...

    async def peer_alive(self, domain: str) -> None: ...


@dataclass
class Server:
    """Everything one running domain server holds: config, store, pipeline, authenticator."""

    config: ServerConfig
    store: BatchStore
    pipeline: Pipeline
    auth: Authenticator
    clock: Callable[[], float] = time.time
    federation: Federation | None = None
    # the outbound queue's worker (`relay.Relay`) and the Deliver operation
    # (`delivery.deliver`), wired by `controller.build_server`: they sit above this module
    relay: Outbound | None = None
    deliver: Callable[[Server, etree._Element], Awaitable[etree._Element]] | None = None
    inflight: int = 0  # requests running (bodies being read are not counted)
    reading: int = 0  # bytes of request bodies being read, all connections together
    peers: Peers | None = None  # per-peer connections and requests (`connguard`)
    # hooks for plug-ins (registered from Plugin.attach): top-level SOAP operations that do
    # their own authentication (e.g. a signed FetchAttachment), and raw ASGI routes for
    # streams (uploads, downloads, server-sent events). Core paths cannot be overridden.
    operations: dict[str, SelfAuthenticated] = field(default_factory=dict)
    routes: dict[str, ASGIApp] = field(default_factory=dict)
    # certificate login (`CertificateCall`), when the user-certificate plug-in is loaded
    certificate_login: CertificateVerifier | None = None
    # header blocks this server processes (Clark notation): a block outside this set marked
    # env:mustUnderstand is answered with the env:MustUnderstand fault; a plug-in that reads
    # its own header block adds it here (`server.understood |= {...}`) in `attach`
    understood: frozenset[str] = UNDERSTOOD_HEADERS
    # called with every answered SOAP request (metrics, activity counts); after the log line
    observers: list[Callable[[RequestRecord], None]] = field(default_factory=list)
    started: float = field(default_factory=time.time)  # when this server object was made

    def asgi(self) -> ASGIApp:
        """The ASGI application: one path, no middleware stack on the hot path."""

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                return
            route = self.routes.get(scope["path"])
            if route is not None and scope["path"] not in (PATH, CRL_PATH):
                await route(scope, receive, send)
                return
            if scope["path"] not in (PATH, CRL_PATH):
                response = Response("not found\n", status_code=404, media_type="text/plain")
            elif scope["path"] == CRL_PATH and self.federation is not None:
                response = Response(self.federation.crl_pem(), media_type="application/pkix-crl")
            elif scope["method"] not in ("GET", "POST"):
                response = Response(
                    "use POST\n",
                    status_code=405,
                    media_type="text/plain",
                    headers={"allow": "GET, POST"},
                )
            else:
                response = await self.endpoint(Request(scope, receive))
            await response(scope, receive, send)

        return app

    async def endpoint(self, request: Request) -> Response:
        if request.method == "GET":
            if "wsdl" in request.query_params or request.url.query.lower() == "wsdl":
                url = str(request.url.replace(query=""))
                return Response(wsdl_document(url), media_type="text/xml; charset=utf-8")
            return Response(
                "POST SOAP 1.2 envelopes here; the WSDL is at ?wsdl\n", media_type="text/plain"
            )
        peer = request.client.host if request.client else ""
        answer = _ANSWER.set(None)
        record = RequestRecord(peer)
        noted = _RECORD.set(record)
        began = time.perf_counter()
        try:
            # the body is read before a slot is taken: slow senders hold a connection only
            data = await self.read_body(request)
            return await self._run_slot(data, peer)
        except RequestTimeout as exc:  # the rest of the body would still trickle in
            response = self.fault(exc)
            response.headers["connection"] = "close"
            return response
        except RemoteFault as exc:
            return self.fault(exc)
        except ClientDisconnect:
            record.outcome, record.status = "disconnected", 400
            return Response(b"", status_code=400)
        finally:
            _ANSWER.reset(answer)
            _RECORD.reset(noted)
            record.seconds = time.perf_counter() - began
            self.observe(record)

    def observe(self, record: RequestRecord) -> None:
        """The request's one log line (logger `wsemail.request`, INFO; its fields also as
        `extra` for the JSON format), then the observers."""
        if request_log.isEnabledFor(logging.INFO):  # no fields built for nothing
            request_log.info(
                "%s %s by %r from %s in %.1f ms",
                record.operation,
                record.outcome,
                record.user,
                record.peer,
                record.seconds * 1000,
                extra={"request": record.log_fields()},
            )
        for observer in list(self.observers):
            try:
                observer(record)
            except Exception:  # an observer's bug must not touch the answer
                log.exception("request observer failed")

    async def _run_slot(self, data: bytes, peer: str) -> Response:
        if self.inflight >= self.config.max_concurrency:
            return self.fault(ServerBusy("server busy, try again"))
        peers = self.peers
        if peers is not None and not peers.enter(peer):
            return self.fault(ServerBusy("too many requests from your address at once"))
        self.inflight += 1
        try:
            payload = await self.dispatch(data, peer)
            binding = _ANSWER.get()
            if binding is not None and self.federation is not None:
                content = signed_answer(self.federation.signer, payload, binding, self.clock())
            else:
                content = soap.response(payload)
            return Response(content, media_type=soap.CONTENT_TYPE)
        except RemoteFault as exc:
            return self.fault(exc)
        except Exception:
            log.exception("unexpected error")
            return self.fault(ServerError("internal server error"))
        finally:
            self.inflight -= 1
            if peers is not None:
                peers.leave(peer)

    def sign_answer(self, nonce: str) -> None:
        """Answer the request being served with an envelope signed by this server's key,
        bound to `nonce` (InResponseTo): for a plug-in's operation that a peer server
        signed (e.g. a directory look-up), as a MAC request asking for it gets one."""
        _ANSWER.set(AnswerBinding(nonce, None))

    def wake_relay(self) -> None:
        if self.relay is not None:
            self.relay.wake.set()

    @staticmethod
    def fault(exc: RemoteFault) -> Response:
        record = _RECORD.get()
        if record is not None:
            record.outcome = exc.subcode.partition(":")[2] or type(exc).__name__
            record.status = exc.status
        return Response(soap.fault(exc), status_code=exc.status, media_type=soap.CONTENT_TYPE)

    async def read_body(self, request: Request) -> bytes:
        """The whole body within the limits: at most `max_request_bytes`, at most
        `read_timeout` seconds, and — after `body_grace` seconds — at least `body_min_rate`
        bytes a second on average (what has arrived buys time for what is to come). All
        bodies being read together hold at most READING_BUDGET request sizes."""
        config = self.config
        limit = config.max_request_bytes
        declared = request.headers.get("content-length")
        if declared is not None and parse_int(declared, "Content-Length", 0, 2**63) > limit:
            raise TooLarge(f"request larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        pace = Pace(config, total=config.read_timeout)
        budget = READING_BUDGET * limit
        receive = request.receive  # the ASGI messages: one timeout moved along, not one each
        try:
            async with asyncio.timeout_at(pace.deadline(0)) as window:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ClientDisconnect()
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise TooLarge(f"request larger than {limit} bytes")
                    if self.reading + len(chunk) > budget:
                        raise ServerBusy("too many requests being received; try again")
                    self.reading += len(chunk)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
                    window.reschedule(pace.deadline(size))
        except TimeoutError as exc:
            raise RequestTimeout("timed out reading the request (too slow)") from exc
        finally:
            self.reading -= sum(len(c) for c in chunks)
        return b"".join(chunks)

    async def dispatch(self, data: bytes, peer: str) -> etree._Element:
        envelope = soap.split_envelope(parse_untrusted(data, self.config.xml_limits))
        soap.check_must_understand(envelope.header, self.understood)
        name = envelope.operation_name
        if etree.QName(envelope.operation).namespace != soap.WSEMAIL:
            raise RequestInvalid("the operation must be in the urn:wsemail namespace")
        record = _RECORD.get()
        known = name in AUTHENTICATED or name in self.operations
        if record is not None and (known or name in ("GetSalt", "Deliver", CERTIFICATE_CALL)):
            record.operation = name
        if name == "GetSalt":
            return await self.get_salt(envelope.operation)
        if name == "Deliver" and self.deliver is not None:
            delivered = await self.deliver(self, envelope.root)
            if record is not None:  # verified: the origin that signed it
                record.answer = delivered
                origin = (text_of(envelope.operation, "Origin") or "").strip().lower()
                record.user = f"server:{origin}"
            return delivered
        if name in self.operations and name not in AUTHENTICATED and name != CERTIFICATE_CALL:
            return await self.operations[name](self, envelope, peer)
        if name not in AUTHENTICATED and name != CERTIFICATE_CALL:
            raise RequestInvalid(f"unknown operation {name!r}")
        login = await self.login(envelope, peer)
        request = login.request
        operation_name = etree.QName(request).localname
        operation = AUTHENTICATED[operation_name]
        if record is not None:
            record.operation = self._operation_label(request)

        def work(tx: Tx, user: UserRecord) -> tuple[etree._Element, Environment]:
            env = Environment(
                principal=user.address,
                domain=self.config.domain,
                tx=tx,
                request=request,
                pipeline=self.pipeline,
                clock=self.clock,
                is_admin=user.admin,
                wake_relay=self.wake_relay,
                trash_after=self.config.trash_days * 86400.0,
                quota_bytes=self.config.quota_per_user_bytes,
            )
            return operation(env, request), env

        result, env = await self.run_authenticated(login, peer, work, quick=operation_name in QUICK)
        for callback in env.after_commit:
            callback()
        return result

    async def authenticated(
        self,
        envelope: soap.ReceivedEnvelope,
        peer: str,
        work: Callable[[Tx, UserRecord], T],
        *,
        mac_only: bool = False,
    ) -> T:
        """Authenticate a client request and run `work` for that user in the unit of work
        that also remembers the request's nonce: `login`, then `run_authenticated`. The one
        path for the core operations (password MAC or certificate login) and for plug-ins'
        own operations."""
        login = await self.login(envelope, peer, mac_only=mac_only)
        return await self.run_authenticated(login, peer, work)

    async def login(
        self, envelope: soap.ReceivedEnvelope, peer: str, *, mac_only: bool = False
    ) -> Login:
        """Every check of a request's credential that needs no transaction (DESIGN.md §4),
        for the password MAC, a UsernameToken PasswordText from third-party toolkits (unless
        `mac_only`) and certificate login (`CertificateCall`, signed with the user's
        certificate) alike: rate limit → timestamp window → the credential's own checks
        that need no store (a certificate's signature, binding rules, chain and CRLs; the
        signed timestamp again) → destination. What is left — nonce not seen, MAC or
        certificate still active, nonce remembered — runs first in the unit of work
        (`Login.check`). A MAC request that asked for a signed answer (`<w:SignResponse/>`)
        gets one from `endpoint`."""
        if envelope.operation_name == CERTIFICATE_CALL:
            if mac_only:
                raise InvalidSecurity(f"{envelope.operation_name} needs the password MAC")
            return self._certificate_login(envelope, peer)
        token = read_username_token(envelope.header)
        try:
            username = normalize_address(token.username)
        except RemoteFault:
            username = token.username[:320]
        self.auth.check_rate(username, peer)
        name = envelope.operation_name
        with self._counting_failures(lambda: username, peer):
            if token.password_type == MAC_TYPE:
                self.auth.check_token(token)
                nonce = self.auth.canonical_nonce(token)
                body_c14n = c14n(envelope.body)

                def check(tx: Tx) -> UserRecord:
                    return self.auth.verify_mac(tx, token, nonce, name, body_c14n)

                answer = wants_signed_answer(envelope.header, token)
                return Login(username, envelope.operation, check, answer)
            if token.password_type == PASSWORD_TEXT and not mac_only:
                checked = await self.password_text(token, username, peer)
                return Login(username, envelope.operation, checked)
            if mac_only:
                raise InvalidSecurity(f"{name} needs the password MAC")
            raise InvalidSecurity("unsupported wsse:Password Type")

    def _certificate_login(self, envelope: soap.ReceivedEnvelope, peer: str) -> Login:
        """`CertificateCall`: the same rules as the MAC, the certificate checked by the
        user-certificate plug-in (`wsemail.server.usercerts.login`)."""
        verifier = self.certificate_login
        if verifier is None:
            raise InvalidSecurity("this server does not take certificate login")
        claimed = f"?{peer}"  # until the certificate names someone

        def claim(address: str) -> None:
            nonlocal claimed
            claimed = address
            self.auth.check_rate(address, peer)

        self.auth.check_rate(claimed, peer)
        header = envelope.header
        stamp = (
            None if header is None else header.find(f"{q('Security', WSSE)}/{q('Timestamp', WSU)}")
        )
        self.auth.check_timestamp(stamp)
        with self._counting_failures(lambda: claimed, peer):
            verified = verifier.verify(envelope, claim)
            if verified.operation.tag != q(CERTIFICATE_CALL):
                raise InvalidSecurity("the signed operation is not CertificateCall")
            self.auth.check_timestamp(verified.timestamp)
        address, cert, op = verified.signer, verified.cert, verified.operation
        if (text_of(op, "Server") or "").strip().lower() != self.config.domain:
            raise Forbidden("this request is addressed to another server")
        nonce = base64.b64encode(decode_nonce("".join((text_of(op, "Nonce") or "").split())))
        inner = _carried_operation(op)

        def check(tx: Tx) -> UserRecord:
            # remembered first (ReplayDetected when it is already there); a refusal below
            # rolls the unit back, and the nonce with it
            self.auth.remember(tx, address, nonce.decode("ascii"))
            if not verifier.active(tx, address, cert):
                raise UntrustedSigner("certificate revoked or not issued here")
            user = tx.user(address)
            if user is None:
                raise AuthenticationFailed(FAILED)
            return user

        return Login(address, inner, check)

    async def run_authenticated(
        self,
        login: Login,
        peer: str,
        work: Callable[[Tx, UserRecord], T],
        *,
        quick: bool = False,
    ) -> T:
        """Run `work` for the user `login` names in one unit of work that first completes
        the credential check (nonce not seen → MAC / certificate active → nonce remembered),
        so the replay row commits with the effect or not at all. `quick`: a unit of a few
        statements (`BatchStore.transact`)."""

        def unit(tx: Tx) -> T:
            return work(tx, login.check(tx))

        with self._counting_failures(lambda: login.username, peer):
            result = await self.store.transact(unit, quick=quick)
        _ANSWER.set(login.answer)
        record = _RECORD.get()
        if record is not None:
            record.user = login.username
        return result

    def _operation_label(self, request: etree._Element) -> str:
        """The operation's name; an Extension call's names the extension when it is loaded
        (a bounded set: never a name the client made up)."""
        name = etree.QName(request).localname
        if name == "Extension":
            extension_id = (text_of(request, "ExtensionId") or "").strip()
            if extension_id in self.pipeline.extensions:
                return f"Extension/{extension_id}"
        return name

    @contextmanager
    def _counting_failures(self, who: Callable[[], str], peer: str) -> Iterator[None]:
        """A wrong credential (not a stale or repeated request) counts against the rate
        limit of the name it claimed and of the peer."""
        try:
            yield
        except (AuthenticationFailed, SignatureInvalid, UntrustedSigner):
            self.auth.record_failure(who(), peer)
            log.info("authentication failed for %r from %s", who(), peer)
            raise

    async def password_text(
        self, token: UsernameToken, username: str, peer: str
    ) -> Callable[[Tx], UserRecord]:
        """UsernameToken/PasswordText: only over TLS or from loopback."""
        if self.config.tls_cert is None and not _is_loopback(peer):
            raise InvalidSecurity("PasswordText is accepted only over TLS")
        nonce = None
        if token.created is not None or token.stamp != (None, None):
            self.auth.check_token(token)
        if token.nonce is not None:
            nonce = self.auth.canonical_nonce(token)
        user = await self.store.transact(lambda tx: tx.user(username), quick=True)
        await self.auth.check_password(user, username, token.password)
        assert user is not None

        def authenticate(tx: Tx) -> UserRecord:
            current = tx.user(username)
            if current is None or current.key != user.key:  # changed meanwhile
                raise AuthenticationFailed("authentication failed")
            if nonce is not None:
                self.auth.remember(tx, username, nonce)
            return current

        return authenticate

    async def get_salt(self, op: etree._Element) -> etree._Element:
        """Unauthenticated: the salt and KDF parameters for a name (fake for unknown names)."""
        raw = (text_of(op, "Username") or "").strip()
        try:
            username = normalize_address(raw)
        except RemoteFault:
            username = raw[:320]
        user = await self.store.transact(lambda tx: tx.user(username), quick=True)
        salt = user.salt if user is not None else self.auth.fake_salt(username)
        result = etree.Element(q("GetSaltResponse"))
        element(result, "Salt", base64.b64encode(salt).decode("ascii"))
        kdf = element(result, "Kdf")
        kdf.set("algorithm", "scrypt")
        kdf.set("n", str(KDF_N))
        kdf.set("r", str(KDF_R))
        kdf.set("p", str(KDF_P))
        # the server's clock: clients judge signed answers' freshness by it, not their own
        element(result, "ServerTime", timestamp(datetime.fromtimestamp(self.clock(), UTC)))
        return result


def _carried_operation(op: etree._Element) -> etree._Element:
    """The one client operation a CertificateCall carries beside its Server and Nonce."""
    found = [
        c
        for c in op
        if isinstance(c.tag, str) and etree.QName(c).localname not in ("Server", "Nonce")
    ]
    if len(found) != 1 or etree.QName(found[0]).namespace != soap.WSEMAIL:
        raise RequestInvalid("CertificateCall carries exactly one client operation")
    if etree.QName(found[0]).localname not in AUTHENTICATED:
        raise RequestInvalid("CertificateCall carries a client operation only")
    return found[0]


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
