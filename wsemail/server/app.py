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
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TypeVar

from lxml import etree
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from wsemail import soap
from wsemail.auth import (
    KDF_N,
    KDF_P,
    KDF_R,
    MAC_TYPE,
    PASSWORD_TEXT,
    UsernameToken,
    read_username_token,
)
from wsemail.errors import (
    AuthenticationFailed,
    InvalidSecurity,
    RemoteFault,
    RequestInvalid,
    RequestTimeout,
    ServerBusy,
    ServerError,
    TooLarge,
)
from wsemail.message import normalize_address
from wsemail.server.config import ServerConfig
from wsemail.server.delivery import deliver
from wsemail.server.federation import Federation
from wsemail.server.operations import AUTHENTICATED
from wsemail.server.pipeline import Environment, Pipeline, resolve_class
from wsemail.server.relay import Relay
from wsemail.server.security import (
    AnswerBinding,
    Authenticator,
    signed_answer,
    wants_signed_answer,
)
from wsemail.server.store import SqliteStore, Tx, UserRecord
from wsemail.server.wsdl import wsdl_document
from wsemail.soap import element, q, text_of
from wsemail.xmlsafe import c14n, parse_untrusted

log = logging.getLogger("wsemail.server")
PATH = "/wsemail"
CRL_PATH = "/wsemail/crl"  # the CRLs this server holds, for its clients' provenance checks


T = TypeVar("T")
# set by `Server.authenticated` when the request it authenticated asked for a signed answer
_ANSWER: ContextVar[AnswerBinding | None] = ContextVar("wsemail_answer", default=None)
SelfAuthenticated = Callable[["Server", soap.ReceivedEnvelope, str], Awaitable[etree._Element]]


@dataclass
class Server:
    """Everything one running domain server holds: config, store, pipeline, authenticator."""

    config: ServerConfig
    store: SqliteStore
    pipeline: Pipeline
    auth: Authenticator
    clock: Callable[[], float] = time.time
    federation: Federation | None = None
    relay: Relay | None = None
    inflight: int = 0
    # hooks for plug-ins (registered from Plugin.attach): top-level SOAP operations that do
    # their own authentication (e.g. a signed FetchAttachment), and raw ASGI routes for
    # streams (uploads, downloads, server-sent events). Core paths cannot be overridden.
    operations: dict[str, SelfAuthenticated] = field(default_factory=dict)
    routes: dict[str, ASGIApp] = field(default_factory=dict)

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
        if self.inflight >= self.config.max_concurrency:
            return self.fault(ServerBusy("server busy, try again"))
        self.inflight += 1
        answer = _ANSWER.set(None)
        try:
            data = await self.read_body(request)
            payload = await self.dispatch(data, request.client.host if request.client else "")
            binding = _ANSWER.get()
            if binding is not None and self.federation is not None:
                content = signed_answer(self.federation.signer, payload, binding, self.clock())
            else:
                content = soap.response(payload)
            return Response(content, media_type=soap.CONTENT_TYPE)
        except RemoteFault as exc:
            return self.fault(exc)
        except ClientDisconnect:
            return Response(b"", status_code=400)
        except Exception:
            log.exception("unexpected error")
            return self.fault(ServerError("internal server error"))
        finally:
            _ANSWER.reset(answer)
            self.inflight -= 1

    def wake_relay(self) -> None:
        if self.relay is not None:
            self.relay.wake.set()

    @staticmethod
    def fault(exc: RemoteFault) -> Response:
        return Response(soap.fault(exc), status_code=exc.status, media_type=soap.CONTENT_TYPE)

    async def read_body(self, request: Request) -> bytes:
        limit = self.config.max_request_bytes
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise TooLarge(f"request larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0

        async def collect() -> None:
            nonlocal size
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"request larger than {limit} bytes")
                chunks.append(chunk)

        try:
            async with asyncio.timeout(self.config.read_timeout):
                await collect()
        except TimeoutError as exc:
            raise RequestTimeout("timed out reading the request") from exc
        return b"".join(chunks)

    async def dispatch(self, data: bytes, peer: str) -> etree._Element:
        envelope = soap.split_envelope(parse_untrusted(data, self.config.xml_limits))
        name = envelope.operation_name
        if etree.QName(envelope.operation).namespace != soap.WSEMAIL:
            raise RequestInvalid("the operation must be in the urn:wsemail namespace")
        if name == "GetSalt":
            return await self.get_salt(envelope.operation)
        if name == "Deliver":
            return await deliver(self, envelope.root)
        if name in self.operations and name not in AUTHENTICATED:
            return await self.operations[name](self, envelope, peer)
        operation = AUTHENTICATED.get(name)
        if operation is None:
            raise RequestInvalid(f"unknown operation {name!r}")

        def work(tx: Tx, user: UserRecord) -> tuple[etree._Element, Environment]:
            env = Environment(
                principal=user.address,
                domain=self.config.domain,
                tx=tx,
                request=envelope.operation,
                pipeline=self.pipeline,
                clock=self.clock,
                is_admin=user.admin,
                wake_relay=self.wake_relay,
            )
            return operation(env, envelope.operation), env

        result, env = await self.authenticated(envelope, peer, work)
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
        """Authenticate a client request (password MAC, or UsernameToken PasswordText for
        third-party toolkits unless `mac_only`) and run `work` for that user in the unit of
        work that also remembers the request's nonce. The one place that does this, for the
        core operations and for plug-ins' own operations; a MAC request that asked for a
        signed answer (`<w:SignResponse/>`) gets one from `endpoint`."""
        token = read_username_token(envelope.header)
        try:
            username = normalize_address(token.username)
        except RemoteFault:
            username = token.username[:320]
        self.auth.check_rate(username, peer)
        name = envelope.operation_name
        authenticate: Callable[[Tx], UserRecord]
        try:
            if token.password_type == MAC_TYPE:
                self.auth.check_fresh(token.created)
                nonce = self.auth.canonical_nonce(token)
                body_c14n = c14n(envelope.body)

                def authenticate(tx: Tx) -> UserRecord:  # noqa: F811
                    return self.auth.verify_mac(tx, token, nonce, name, body_c14n)

            elif token.password_type == PASSWORD_TEXT and not mac_only:
                authenticate = await self.password_text(token, username, peer)
            elif mac_only:
                raise InvalidSecurity(f"{name} needs the password MAC")
            else:
                raise InvalidSecurity("unsupported wsse:Password Type")

            def unit(tx: Tx) -> T:
                return work(tx, authenticate(tx))

            result = await self.store.transact(unit)
            _ANSWER.set(wants_signed_answer(envelope.header, token))
            return result
        except AuthenticationFailed:
            self.auth.record_failure(username, peer)
            log.info("authentication failed for %r from %s", username, peer)
            raise

    async def password_text(
        self, token: UsernameToken, username: str, peer: str
    ) -> Callable[[Tx], UserRecord]:
        """UsernameToken/PasswordText: only over TLS or from loopback."""
        if self.config.tls_cert is None and not _is_loopback(peer):
            raise InvalidSecurity("PasswordText is accepted only over TLS")
        nonce = None
        if token.created is not None:
            self.auth.check_fresh(token.created)
        if token.nonce is not None:
            nonce = self.auth.canonical_nonce(token)
        user = await self.store.transact(lambda tx: tx.user(username))
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
        user = await self.store.transact(lambda tx: tx.user(username))
        salt = user.salt if user is not None else self.auth.fake_salt(username)
        result = etree.Element(q("GetSaltResponse"))
        element(result, "Salt", base64.b64encode(salt).decode("ascii"))
        kdf = element(result, "Kdf")
        kdf.set("algorithm", "scrypt")
        kdf.set("n", str(KDF_N))
        kdf.set("r", str(KDF_R))
        kdf.set("p", str(KDF_P))
        return result


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_server(config: ServerConfig, *, clock: Callable[[], float] = time.time) -> Server:
    """Open the data dir, the store and the pipeline for `config`."""
    secret = config.prepare()
    store_cls = resolve_class(config.store)
    store = store_cls(config.db_path, clock=clock)
    pipeline = Pipeline(config.domain, config.plugins)
    auth = Authenticator(
        secret,
        clock=clock,
        past_seconds=config.past_seconds,
        future_seconds=config.future_seconds,
        failures_per_user=config.failures_per_user,
        failures_per_peer=config.failures_per_peer,
        failure_window=config.failure_window,
    )
    server = Server(config, store, pipeline, auth, clock)
    server.federation = Federation(config)
    server.relay = Relay(server, server.federation)
    pipeline.attach_all(server)
    return server
