"""The client library (RC/SC in the paper): used by the CLI now and the TUI later.

    with Client("http://127.0.0.1:8025/wsemail", "alice@localhost", password="…") as c:
        c.send(["bob@localhost"], "hi", "hello")
        for header in c.iter_headers(folder="inbox"):
            print(c.retrieve(header.id).body)

The password is turned into the MAC key once (scrypt) on the first authenticated call;
every request after that costs one HMAC. `transport` is a test seam: pass
`httpx.ASGITransport(app)` to talk to an in-process server.

With trust roots, every authenticated request asks for a signed answer (DESIGN.md §4):
the answer must be signed by a server certificate of the user's own domain that chains to
the roots and is not revoked (checked on first contact, when the server embeds it; later
answers name it by digest), be fresh, and be bound to this request's nonce; otherwise the
call raises. Without trust roots nothing can be checked: `answer_check` says "unchecked".
"""

from __future__ import annotations

import base64
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import httpx
from lxml import etree

from wsemail.client.salts import KeyAhead, SaltMemory
from wsemail.client.tls import client_context
from wsemail.protocol import soap
from wsemail.protocol.auth import (
    IN_RESPONSE_TO,
    KDF_N,
    KDF_P,
    KDF_R,
    SIGN_RESPONSE,
    Credentials,
    check_window,
    derive_key,
    parse_timestamp,
    timestamp_parts,
)
from wsemail.protocol.errors import (
    MessageExpired,
    RemoteFault,
    ReplayDetected,
    ServerError,
    SignatureInvalid,
    TransportError,
    UntrustedSigner,
    UsageError,
)
from wsemail.protocol.message import (
    Draft,
    Message,
    MessageHeader,
    domain_of,
    new_message_id,
    normalize_address,
)
from wsemail.protocol.soap import WSSE, element, parse_int, q, text_of
from wsemail.protocol.xmlsafe import XmlLimits, parse_untrusted

if TYPE_CHECKING:
    from cryptography import x509

    from wsemail.core.provenance import Provenance
    from wsemail.pki import TrustStore

# Signatures, certificates and provenance (cryptography, signxml, the PKI) are imported by
# the calls that check them: listing mail without trust roots never loads them, so a
# client (and the TUI's first page) starts sooner.

SERVICE_PATH = "/wsemail"  # where a server answers SOAP when the URL names no path
RESPONSE_LIMITS = XmlLimits(max_bytes=64 << 20, max_depth=32, max_elements=1_000_000)
ANSWER_HEADERS = frozenset({q("Security", WSSE)})  # header blocks this client processes
ANSWER_PAST, ANSWER_FUTURE = 300.0, 60.0  # freshness window of a signed answer, seconds
STALE_ANSWER = "stale-answer"  # MessageExpired.detail: the answer, not the request, was stale


@dataclass(frozen=True)
class SendResult:
    id: str
    message_id: str


@dataclass(frozen=True)
class Page:
    headers: list[MessageHeader]
    next_cursor: str | None
    # a search's answer: messages in the searched folders whose body is end-to-end
    # encrypted, which the server cannot search
    encrypted_not_searched: int = 0


@dataclass(frozen=True)
class Conversation:
    """One conversation of a listing: its size, how many unread, its newest headers
    (oldest first; at most 20, `count` says how many there are)."""

    count: int
    unread: int
    headers: list[MessageHeader]

    @property
    def latest(self) -> MessageHeader:
        return self.headers[-1]

    def as_dict(self) -> dict[str, object]:
        return {
            "count": self.count,
            "unread": self.unread,
            "subject": self.headers[0].subject if self.headers else "",
            "messages": [h.as_dict() for h in self.headers],
        }


@dataclass(frozen=True)
class ThreadPage:
    threads: list[Conversation]
    next_cursor: str | None


@dataclass(frozen=True)
class Folder:
    name: str
    total: int
    unread: int
    system: bool  # inbox, sent, Archive, Drafts, Trash: cannot be renamed or deleted

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "total": self.total,
            "unread": self.unread,
            "system": self.system,
        }


MAX_IDS = 1000  # message ids per Move / SetFlags request


class Client:
    def __init__(
        self,
        server: str,
        username: str,
        password: str | None = None,
        *,
        credentials: Credentials | None = None,
        transport: httpx.BaseTransport | None = None,
        verify: str | bool | ssl.SSLContext = True,
        timeout: float = 30.0,
        trust_roots: list[Path] | None = None,
        tls_name: str | None = None,
        clock: Callable[[], float] = time.time,
        salts: SaltMemory | None = None,
    ) -> None:
        if password is None and credentials is None:
            raise UsageError("a password is needed")
        try:
            url = httpx.URL(server)
        except httpx.InvalidURL as exc:
            raise UsageError(f"not a server URL: {server!r} ({exc})") from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise UsageError(f"not a server URL: {server!r} (use https://host:port/wsemail)")
        if url.path in ("", "/"):  # `http://host:port` means the service at its usual path
            url = url.copy_with(path=SERVICE_PATH)
            server = str(url)
        self.server = server
        self.username = normalize_address(username)
        self._password = password
        self._credentials = credentials
        # with `salts`: the salt of this account's last session; the key derivation begins
        # from it now, while the client connects and asks the server for the salt
        self._salts = salts
        self._ahead: KeyAhead | None = None
        self._new_salt: bytes | None = None  # to remember once the server accepted the key
        if salts is not None and password is not None and credentials is None:
            remembered = salts.get(server, self.username)
            if remembered is not None:
                self._ahead = KeyAhead(password, remembered)
        if verify is True or isinstance(verify, str):  # str: our own CA bundle (WSEMAIL_CACERT)
            # httpx's checks, the bundle read at the first TLS handshake (none for http://)
            verify = client_context(verify if isinstance(verify, str) else None)
        self._http = httpx.Client(
            transport=transport,
            verify=verify,
            timeout=timeout,
            headers={"content-type": soap.CONTENT_TYPE},
        )
        self.trust_roots = list(trust_roots or [])
        self._trust: TrustStore | None = None
        self._crls: list[x509.CertificateRevocationList] = []  # from our server, for `_trust`
        # server certificates of relayed mail by SHA-256 of the DER, each fetched once
        self.certificates: dict[bytes, x509.Certificate] = {}
        # our own server's certificate, once a signed answer carried it and it was checked
        self.server_certificate: x509.Certificate | None = None
        self.answer_check: str | None = None  # last answer: "verified" or "unchecked"
        # this machine's clock (a test seam) and how far the server's is ahead of it, learnt
        # from GetSalt: request timestamps and the freshness of answers are in server time
        self.clock = clock
        self.clock_offset: float | None = None
        # the name the server's TLS certificate must carry when it differs from the URL's host
        # (a domain's server certificate names the mail domain)
        self._extensions = {"sni_hostname": tls_name} if tls_name else {}

    def __repr__(self) -> str:
        return f"Client({self.server!r}, {self.username!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @property
    def http(self) -> httpx.Client:
        """The pooled HTTP client (this client's TLS settings and connections), for the
        library's other requests: uploads, downloads, streams, signed calls."""
        return self._http

    @property
    def extensions(self) -> dict[str, str]:
        """The httpx request extensions each request to this client's server needs (the
        TLS name its certificate must carry, when it differs from the URL's host)."""
        return dict(self._extensions)

    # authentication ---------------------------------------------------------------------
    @property
    def credentials(self) -> Credentials:
        """The session key: fetched salt + scrypt, once per client session."""
        if self._credentials is None:
            assert self._password is not None
            salt = self.get_salt(self.username)
            ahead, self._ahead = self._ahead, None
            key = ahead.key_for(salt) if ahead is not None else None
            if key is None:
                key = derive_key(self._password, salt)
                self._new_salt = salt if self._salts is not None else None
            self._credentials = Credentials(self.username, key)
            self._password = None
        return self._credentials

    def now(self) -> datetime:
        """The time as the server counts it (this clock plus the offset learnt)."""
        return datetime.fromtimestamp(self.clock() + (self.clock_offset or 0.0), UTC)

    def learn_clock(self) -> None:
        """Ask the server its time (GetSalt's ServerTime) and keep the offset."""
        self.get_salt(self.username)
        if self.clock_offset is None:
            self.clock_offset = 0.0  # a server that does not say: trust our own clock

    def get_salt(self, username: str) -> bytes:
        op = etree.Element(q("GetSalt"))
        element(op, "Username", username)
        sent = self.clock()
        answer = self.call(op, authenticated=False)
        server_time = text_of(answer, "ServerTime")
        if server_time:
            try:
                at = parse_timestamp(server_time).timestamp()
            except RemoteFault as exc:
                raise ServerError("the server's GetSalt answer has a bad ServerTime") from exc
            self.clock_offset = at - (sent + self.clock()) / 2
        kdf = answer.find(q("Kdf"))
        if kdf is None or (kdf.get("n"), kdf.get("r"), kdf.get("p")) != (
            str(KDF_N),
            str(KDF_R),
            str(KDF_P),
        ):
            raise ServerError("server asks for KDF parameters this client does not support")
        return base64.b64decode(text_of(answer, "Salt", "") or "")

    # transport --------------------------------------------------------------------------
    def call(
        self, operation: etree._Element, *, authenticated: bool = True, idempotent: bool = False
    ) -> etree._Element:
        """POST one operation; return the response element or raise its fault.

        A request refused as stale, or an answer judged stale, makes the client learn the
        server's clock again and ask once more, when that is safe: a refused request had no
        effect; a stale answer came after the effect, so only an `idempotent` operation is
        asked again (a Send with the same MessageId is stored once)."""
        if (
            authenticated
            and self.clock_offset is None
            and self._credentials is not None  # else the salt brings the server's time
            and self.trust() is not None  # answers will be judged by it
        ):
            self.learn_clock()
        try:
            answer = self._call(operation, authenticated)
        except MessageExpired as exc:
            if not authenticated or (exc.detail == STALE_ANSWER and not idempotent):
                raise
            self.learn_clock()
            answer = self._call(operation, authenticated)
        if authenticated and self._new_salt is not None and self._salts is not None:
            # the server accepted a key from this salt: the next session begins with it
            self._salts.put(self.server, self.username, self._new_salt)
            self._new_salt = None
        return answer

    def _call(self, operation: etree._Element, authenticated: bool) -> etree._Element:
        env, header, body = soap.new_envelope()
        body.append(operation)
        nonce = None
        if authenticated:
            nonce = self.credentials.sign(header, body, self.now())
            if self.trust() is not None:
                from wsemail.protocol.dsig import cert_digest

                asks = element(header, SIGN_RESPONSE)
                if self.server_certificate is not None:
                    digest = cert_digest(self.server_certificate)
                    asks.set("ServerCertificate", base64.b64encode(digest).decode("ascii"))
            else:
                nonce = None
                self.answer_check = "unchecked"
        else:
            env.remove(header)
        try:
            response = self._http.post(
                self.server, content=soap.serialize(env), extensions=self._extensions
            )
        except httpx.HTTPError as exc:
            raise TransportError(f"cannot reach {self.server}: {exc}") from exc
        try:
            root = parse_untrusted(response.content, RESPONSE_LIMITS)
            parts = soap.split_envelope(root)
        except RemoteFault as exc:
            raise ServerError(
                f"unreadable answer (HTTP {response.status_code}) from {self.server}"
            ) from exc
        answer = parts.operation
        soap.raise_if_fault(answer)
        soap.check_must_understand(parts.header, ANSWER_HEADERS)  # the answer's, as a receiver
        if nonce is None:
            return answer
        return self._checked_answer(root, nonce)

    def _checked_answer(self, root: etree._Element, nonce: str) -> etree._Element:
        """The verified response element of a signed answer to the request with `nonce`."""
        from wsemail.core.provenance import server_domain
        from wsemail.protocol.dsig import DS, cert_digest, verify_envelope

        trust = self.trust()
        assert trust is not None
        domain = domain_of(self.username)
        held = self.server_certificate

        def own_server(cert: x509.Certificate) -> str:
            if held is not None and cert == held:
                return domain  # checked when it first came
            signer = server_domain(trust, cert)
            if signer != domain:
                raise UntrustedSigner(f"signed by the server of {signer}, not of {domain}")
            return signer

        def by_digest(digest: bytes) -> x509.Certificate:
            if held is None or cert_digest(held) != digest:
                raise SignatureInvalid("it names a server certificate this client does not hold")
            return held

        try:
            if (
                root.find(f"{q('Header', soap.SOAP)}/{q('Security', WSSE)}/{q('Signature', DS)}")
                is None
            ):
                raise SignatureInvalid("it is not signed")
            verified = verify_envelope(root, own_server, by_digest)
            created, expires = timestamp_parts(verified.timestamp)
            try:  # judged by the server's clock: ours may be off by minutes
                check_window(created, expires, self.now(), ANSWER_PAST, ANSWER_FUTURE)
            except MessageExpired as exc:
                raise MessageExpired(f"it is stale: {exc}", detail=STALE_ANSWER) from exc
            if verified.operation.get(IN_RESPONSE_TO) != nonce:
                raise ReplayDetected("it answers another request")
        except RemoteFault as exc:
            refused = f"answer from {self.server} refused: {exc.reason}"
            raise type(exc)(refused, detail=exc.detail) from exc
        self.server_certificate = verified.cert
        self.answer_check = "verified"
        return verified.operation

    # operations -------------------------------------------------------------------------
    def send(
        self,
        to: list[str],
        subject: str = "",
        body: str = "",
        *,
        cc: list[str] | None = None,
        message_id: str | None = None,
        retries: int = 2,
        attachments: list[str] | None = None,
        instant: bool = False,
        delete_if_undeliverable: bool = False,
        bcc: list[str] | None = None,
        in_reply_to: str | None = None,
        references: list[str] | None = None,
    ) -> SendResult:
        """Submit a message. A retry after a lost answer reuses the MessageId, so the server
        stores it once. `attachments` are ids of finished uploads (`wsemail.client.attachments`)
        that the server turns into on-demand references. `instant` marks an instant message
        (pushed to the recipient's live sessions, else kept in the mailbox, or with
        `delete_if_undeliverable` dropped with a notice to the sender). `bcc`: blind copies
        (only your own copy names them). `in_reply_to` and `references` place the message in
        a conversation (`wsemail.client.replies` fills them in for a reply)."""
        draft = Draft(
            to=list(to),
            cc=list(cc or []),
            subject=subject,
            body=body,
            message_id=message_id or new_message_id(self.username.rpartition("@")[2]),
            attachments=list(attachments or []),
            instant=instant,
            delete_if_undeliverable=delete_if_undeliverable,
            bcc=list(bcc or []),
            in_reply_to=in_reply_to,
            references=list(references or []),
        )
        for attempt in range(retries + 1):
            op = etree.Element(q("Send"))
            draft.to_xml(op)
            try:
                answer = self.call(op, idempotent=True)  # the same MessageId
            except TransportError:
                if attempt == retries:
                    raise
                continue
            return SendResult(
                text_of(answer, "Id", "") or "", text_of(answer, "MessageId", "") or ""
            )
        raise AssertionError("unreachable")

    def list_headers(
        self,
        folder: str = "inbox",
        *,
        limit: int = 50,
        cursor: str | None = None,
        unread_only: bool = False,
    ) -> Page:
        op = etree.Element(q("ListHeaders"))
        element(op, "Folder", folder)
        element(op, "Limit", str(limit))
        if cursor:
            element(op, "Cursor", cursor)
        element(op, "UnreadOnly", "true" if unread_only else "false")
        answer = self.call(op, idempotent=True)
        headers = [MessageHeader.from_xml(n) for n in answer.findall(q("MessageHeader"))]
        return Page(headers, text_of(answer, "NextCursor"))

    def iter_headers(
        self, folder: str = "inbox", *, unread_only: bool = False, page_size: int = 100
    ) -> Iterator[MessageHeader]:
        """Every header of a folder, newest first, one page in memory at a time."""
        cursor: str | None = None
        while True:
            page = self.list_headers(
                folder, limit=page_size, cursor=cursor, unread_only=unread_only
            )
            yield from page.headers
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def list_threads(
        self,
        folder: str = "inbox",
        *,
        limit: int = 20,
        cursor: str | None = None,
        unread_only: bool = False,
    ) -> ThreadPage:
        """Conversations with a message in `folder`, the one with the newest message there
        first; each with its size, unread count and newest headers (every folder but
        Trash)."""
        op = etree.Element(q("ListThreads"))
        element(op, "Folder", folder)
        element(op, "Limit", str(limit))
        if cursor:
            element(op, "Cursor", cursor)
        element(op, "UnreadOnly", "true" if unread_only else "false")
        answer = self.call(op, idempotent=True)
        threads = [
            Conversation(
                parse_int(text_of(n, "Count"), "Count", 0, 2**62),
                parse_int(text_of(n, "Unread"), "Unread", 0, 2**62),
                [MessageHeader.from_xml(h) for h in n.findall(q("MessageHeader"))],
            )
            for n in answer.findall(q("Thread"))
        ]
        return ThreadPage(threads, text_of(answer, "NextCursor"))

    def iter_threads(
        self, folder: str = "inbox", *, unread_only: bool = False, page_size: int = 20
    ) -> Iterator[Conversation]:
        """Every conversation of a folder, newest first, one page in memory at a time."""
        cursor: str | None = None
        while True:
            page = self.list_threads(
                folder, limit=page_size, cursor=cursor, unread_only=unread_only
            )
            yield from page.threads
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def thread(self, message_id: str, *, peek: bool = False, page_size: int = 50) -> list[Message]:
        """The whole conversation of a message (by its id), oldest first, every message as
        `retrieve` answers it (check each with `verify`); marked seen unless `peek`."""
        found: list[Message] = []
        cursor: str | None = None
        while True:
            op = etree.Element(q("GetThread"))
            element(op, "Id", message_id)
            element(op, "Limit", str(page_size))
            if cursor:
                element(op, "Cursor", cursor)
            if peek:
                element(op, "Peek", "true")
            answer = self.call(op, idempotent=True)
            found += [Message.from_xml(n) for n in answer.findall(q("Message"))]
            cursor = text_of(answer, "NextCursor")
            if not cursor:
                return found

    def retrieve(self, message_id: str, *, peek: bool = False) -> Message:
        """A whole message; marked seen unless `peek`."""
        op = etree.Element(q("Retrieve"))
        element(op, "Id", message_id)
        if peek:
            element(op, "Peek", "true")
        node = self.call(op, idempotent=True).find(q("Message"))
        if node is None:
            raise ServerError("RetrieveResponse without a Message")
        return Message.from_xml(node)

    def set_trust_roots(self, roots: list[Path]) -> None:
        """Check answers and signatures against these federation roots from now on."""
        missing = [str(p) for p in roots if not Path(p).is_file()]
        if missing:
            raise UsageError(f"trust root not found: {', '.join(missing)}")
        self.trust_roots = list(roots)
        self._trust = None
        self.server_certificate = None

    def trust(self) -> TrustStore | None:
        """The federation roots this client trusts, with the CRLs its own server holds."""
        if not self.trust_roots:
            return None
        if self._trust is None:
            from cryptography import x509

            from wsemail.pki import TrustStore

            try:
                response = self._http.get(self.server + "/crl", extensions=self._extensions)
            except httpx.HTTPError as exc:
                raise TransportError(f"cannot reach {self.server}: {exc}") from exc
            crls = []
            marker = b"-----BEGIN X509 CRL-----"
            for block in response.content.split(marker)[1:] if response.is_success else []:
                try:
                    crls.append(x509.load_pem_x509_crl(marker + block))
                except ValueError:
                    continue
            self._trust = TrustStore.load(self.trust_roots)
            for crl in crls:
                try:
                    self._trust.add_crl(crl)
                except RemoteFault:
                    continue  # a CRL that does not verify is ignored; checks then fail closed
            self._crls = crls
        return self._trust

    def check_user_certificate(
        self, cert: x509.Certificate, issuing: x509.Certificate, address: str, at: datetime
    ) -> None:
        """Accept `cert` as `address`'s certificate from its domain's `issuing` CA, chained to
        this client's trust roots, as at the time `at` (a short-lived identity certificate
        that signed a direct instant message then), with the CRLs this client holds now."""
        from wsemail.pki import TrustStore

        trust = self.trust()
        if trust is None:
            raise UntrustedSigner("no trust roots configured")
        then = TrustStore(trust.roots, clock=lambda: at)
        for crl in self._crls:
            try:
                then.add_crl(crl)
            except RemoteFault:
                continue
        then.verify_user(cert, issuing, address)

    def verify(self, message: Message) -> tuple[Provenance, Message]:
        """Check a retrieved message's server signature (end-to-end provenance); the
        returned message's content comes from the verified signed form."""
        from wsemail.core import provenance
        from wsemail.core.provenance import server_domain

        trust = self.trust()
        signer = None if trust is None else (lambda cert: server_domain(trust, cert))
        return provenance.check(
            message, self.username, signer, self.certificate, self.check_user_certificate
        )

    def certificate(self, digest: bytes) -> x509.Certificate:
        """The server certificate a compact provenance names by digest, asked once of our
        own server (which verified it when it accepted the message); the caller still checks
        its chain, role and revocation."""
        from cryptography import x509

        from wsemail.protocol.dsig import cert_digest

        cert = self.certificates.get(digest)
        if cert is None:
            op = etree.Element(q("GetCertificate"))
            element(op, "Digest", base64.b64encode(digest).decode("ascii"))
            try:
                der = base64.b64decode(
                    text_of(self.call(op, idempotent=True), "Certificate", "") or ""
                )
                cert = x509.load_der_x509_certificate(der)
            except ValueError as exc:
                raise SignatureInvalid("the server answered an unreadable certificate") from exc
            if cert_digest(cert) != digest:
                raise SignatureInvalid("the server answered another certificate than asked")
            self.certificates[digest] = cert
        return cert

    def delete(self, message_id: str) -> str:
        """Move a message to Trash ("trashed"); in Trash, delete it for good ("deleted")."""
        op = etree.Element(q("Delete"))
        element(op, "Id", message_id)
        return text_of(self.call(op), "Outcome", "deleted") or "deleted"

    # the mailbox: folders, moving, flags, search ----------------------------------------
    def folders(self) -> list[Folder]:
        answer = self.call(etree.Element(q("ListFolders")))
        return [
            Folder(
                text_of(n, "Name", "") or "",
                int(text_of(n, "Total", "0") or 0),
                int(text_of(n, "Unread", "0") or 0),
                text_of(n, "System") == "true",
            )
            for n in answer.findall(q("Folder"))
        ]

    def _folder_call(self, operation: str, **fields: str) -> str:
        op = etree.Element(q(operation))
        for tag, value in fields.items():
            element(op, tag, value)
        return text_of(self.call(op), "Name", "") or ""

    def create_folder(self, name: str) -> str:
        return self._folder_call("CreateFolder", Name=name)

    def rename_folder(self, name: str, new_name: str) -> str:
        return self._folder_call("RenameFolder", Name=name, NewName=new_name)

    def delete_folder(self, name: str) -> str:
        """Delete one of your own folders; it must be empty."""
        return self._folder_call("DeleteFolder", Name=name)

    def move(self, ids: list[str], folder: str) -> int:
        """Move messages to `folder` (all of a request or none: an unknown id is NotFound)."""
        if not ids:
            raise UsageError("no message ids")
        moved = 0
        for start in range(0, len(ids), MAX_IDS):
            op = etree.Element(q("Move"))
            for message_id in ids[start : start + MAX_IDS]:
                element(op, "Id", message_id)
            element(op, "Folder", folder)
            moved += int(text_of(self.call(op), "Moved", "0") or 0)
        return moved

    def set_flags(
        self,
        ids: list[str],
        *,
        seen: bool | None = None,
        flagged: bool | None = None,
        answered: bool | None = None,
    ) -> int:
        """Set or clear seen, flagged (starred) and answered on messages; None leaves one."""
        if not ids:
            raise UsageError("no message ids")
        wanted = {"Seen": seen, "Flagged": flagged, "Answered": answered}
        if all(v is None for v in wanted.values()):
            raise UsageError("say which flag to set")
        changed = 0
        for start in range(0, len(ids), MAX_IDS):
            op = etree.Element(q("SetFlags"))
            for message_id in ids[start : start + MAX_IDS]:
                element(op, "Id", message_id)
            for tag, value in wanted.items():
                if value is not None:
                    element(op, tag, "true" if value else "false")
            changed += int(text_of(self.call(op), "Changed", "0") or 0)
        return changed

    def search(self, query: str, *, limit: int = 50, cursor: str | None = None) -> Page:
        """Search on the server (language: wsemail/server/mailbox/query.py), newest first."""
        op = etree.Element(q("Search"))
        element(op, "Query", query)
        element(op, "Limit", str(limit))
        if cursor:
            element(op, "Cursor", cursor)
        answer = self.call(op)
        headers = [MessageHeader.from_xml(n) for n in answer.findall(q("MessageHeader"))]
        hidden = parse_int(
            answer.get("EncryptedNotSearched") or "0", "EncryptedNotSearched", 0, 2**62
        )
        return Page(headers, text_of(answer, "NextCursor"), hidden)

    def extension(
        self, extension_id: str, payload: etree._Element | None = None
    ) -> etree._Element | None:
        op = etree.Element(q("Extension"))
        element(op, "ExtensionId", extension_id)
        holder = element(op, "Payload")
        if payload is not None:
            holder.append(payload)
        answer = self.call(op).find(q("Payload"))
        return answer[0] if answer is not None and len(answer) else None
