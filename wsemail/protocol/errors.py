"""The one exception tree of wsemail.

    WsemailError
    ├── UsageError                 local mistake: bad argument, missing config      (CLI exit 1)
    ├── TransportError             server or network unreachable, TLS failure       (CLI exit 3)
    │   └── RoutingError           no answer from DNS for a domain (temporary)
    │       └── NoRoute            the domain has no wsemail service (permanent)
    ├── StoreError                 the local database refused or is corrupt
    ├── PluginError                a plug-in could not be found, loaded or run
    └── RemoteFault                anything a peer may be told, as a SOAP fault
        ├── RequestInvalid         malformed XML, DOCTYPE, limits, missing parts    (400/413)
        ├── NotUnderstood          a mustUnderstand header block this node does not know
                                   (SOAP 1.2 env:MustUnderstand: 500 by the HTTP binding)
        ├── SecurityFault          the wsse:Security header did not pass
        │   ├── AuthenticationFailed   unknown user or wrong password/MAC        (401, exit 2)
        │   ├── MessageExpired         timestamp outside the freshness window    (401, exit 2)
        │   ├── ReplayDetected         nonce already seen                        (401, exit 2)
        │   ├── SignatureInvalid       XMLDSIG missing, malformed or not binding (401, exit 2)
        │   ├── UntrustedSigner        chain, role, domain or revocation refused (403, exit 2)
        │   └── RateLimited            too many failed authentications           (429, exit 2)
        ├── Forbidden                  authenticated, but not allowed            (403, exit 4)
        ├── NotFound                   no such message for this user             (404, exit 4)
        ├── Rejected                   a processor refused the message    (400/403/413, exit 4)
        ├── RevocationUnavailable      no current CRL: fail closed, retry later  (503, exit 3)
        ├── ServerBusy / ServerError   the server cannot take it now             (503/500, exit 3)
        └── InsufficientStorage        a quota or the store has no room          (507, exit 3)
            └── StorageFull            the server's disk is full: reads go on    (507, exit 5)

Every RemoteFault carries the SOAP 1.2 code (Sender/Receiver), a WS-Security or urn:wsemail
subcode and the HTTP status; `wsemail.faults` turns them into fault XML and back. Foreign
exceptions (httpx, lxml, sqlite3, signxml) are translated at one boundary each.
"""

from __future__ import annotations

from typing import ClassVar


class WsemailError(Exception):
    """Base of every error wsemail raises on purpose."""

    exit_code: ClassVar[int] = 1


class UsageError(WsemailError):
    """A local mistake: bad argument, missing configuration, no keyring."""


class TransportError(WsemailError):
    """The server could not be reached or the connection failed."""

    exit_code = 3


class RoutingError(TransportError):
    """A destination domain could not be resolved now (timeout, SERVFAIL): retry later."""


class NoRoute(RoutingError):
    """The destination domain has no wsemail service (NXDOMAIN, no SRV, or target ".")."""


class StoreError(WsemailError):
    """The server's database refused an operation."""


class StoreUnreachable(StoreError):
    """The store's database server (PostgreSQL) cannot be reached at start (exit 2)."""

    exit_code = 2


class PluginError(WsemailError):
    """A plug-in is missing, cannot be imported, or does not fit its interface."""


class RemoteFault(WsemailError):
    """An error that travels as a SOAP fault; `reason` is all the peer is told."""

    code: ClassVar[str] = "Sender"  # SOAP 1.2 fault code: Sender or Receiver
    subcode: ClassVar[str] = "wsemail:Rejected"  # prefix wsse: or wsemail:
    status: ClassVar[int] = 400
    exit_code = 4

    def __init__(self, reason: str, *, detail: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class RequestInvalid(RemoteFault):
    subcode = "wsemail:InvalidRequest"


class ForbiddenXml(RequestInvalid):
    subcode = "wsemail:ForbiddenXml"


class TooLarge(RequestInvalid):
    subcode = "wsemail:TooLarge"
    status = 413


class LimitExceeded(RequestInvalid):
    subcode = "wsemail:LimitExceeded"


class RequestTimeout(RequestInvalid):
    subcode = "wsemail:Timeout"
    status = 408


class NotUnderstood(RemoteFault):
    """A header block marked mustUnderstand that this node does not process (SOAP 1.2
    Part 1 §5.2.3). Its fault code is env:MustUnderstand, and the SOAP 1.2 HTTP binding
    (Part 2 §7.5.2.2) maps that code to status 500; `qnames` are the blocks not
    understood, sent back as env:NotUnderstood header blocks."""

    code = "MustUnderstand"
    subcode = "wsemail:NotUnderstood"
    status = 500

    def __init__(self, reason: str, *, qnames: tuple[str, ...] = ()) -> None:
        super().__init__(reason)
        self.qnames = qnames  # Clark notation: {namespace}local


class SecurityFault(RemoteFault):
    subcode = "wsse:InvalidSecurity"
    exit_code = 2


class InvalidSecurity(SecurityFault):
    """The security header is missing parts or malformed (no nonce, short nonce, …)."""


class AuthenticationFailed(SecurityFault):
    subcode = "wsse:FailedAuthentication"
    status = 401


class MessageExpired(SecurityFault):
    subcode = "wsse:MessageExpired"
    status = 401


class ReplayDetected(SecurityFault):
    subcode = "wsemail:Replay"
    status = 401


class SignatureInvalid(SecurityFault):
    """An XMLDSIG signature is missing, malformed, wrong, or does not bind what is read."""

    subcode = "wsse:FailedCheck"
    status = 401


class UntrustedSigner(SecurityFault):
    """The signer's chain, role, domain or revocation status is not acceptable."""

    subcode = "wsse:SecurityTokenUnavailable"
    status = 403


class RevocationUnavailable(RemoteFault):
    """No current CRL for a chain element: refused for now (fail closed), retryable."""

    code = "Receiver"
    subcode = "wsemail:RevocationUnavailable"
    status = 503
    exit_code = 3


class RateLimited(SecurityFault):
    subcode = "wsemail:RateLimited"
    status = 429


class Forbidden(RemoteFault):
    subcode = "wsemail:Forbidden"
    status = 403


class NotFound(RemoteFault):
    subcode = "wsemail:NotFound"
    status = 404


class Rejected(RemoteFault):
    subcode = "wsemail:Rejected"


class UnknownRecipient(Rejected):
    subcode = "wsemail:UnknownRecipient"


class RelayDenied(Rejected):
    subcode = "wsemail:RelayDenied"
    status = 403


class MessageTooLarge(Rejected):
    subcode = "wsemail:MessageTooLarge"
    status = 413


class QuotaExceeded(Rejected):
    subcode = "wsemail:QuotaExceeded"
    status = 413


class InsufficientStorage(RemoteFault):
    code = "Receiver"
    subcode = "wsemail:InsufficientStorage"
    status = 507
    exit_code = 3


class ServerBusy(RemoteFault):
    code = "Receiver"
    subcode = "wsemail:Busy"
    status = 503
    exit_code = 3


class ServerError(RemoteFault):
    code = "Receiver"
    subcode = "wsemail:ServerError"
    status = 500
    exit_code = 3


class StorageFull(InsufficientStorage):
    """The server's disk is full: it takes no new mail until space is freed; reads
    and deletes go on. Nothing of the refused request was stored."""

    code = "Receiver"
    subcode = "wsemail:StorageFull"
    status = 507
    exit_code = 5


def fault_classes() -> dict[str, type[RemoteFault]]:
    """Every concrete fault class by subcode, for turning a received fault back."""
    found: dict[str, type[RemoteFault]] = {}
    pending: list[type[RemoteFault]] = [RemoteFault]
    while pending:
        cls = pending.pop()
        if "subcode" in vars(cls):  # a subclass that keeps its parent's subcode
            found[cls.subcode] = cls  # (a client-side refinement) never takes it over
        pending.extend(cls.__subclasses__())
    return found
