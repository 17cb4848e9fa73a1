"""In charge of the attachment byte streams, as raw ASGI routes beside the SOAP endpoint:

    PUT /wsemail/attachments/upload?ticket=T     one-time ticket from the MAC-authenticated
                                                 `BeginUpload`; the body streams to disk in
                                                 constant memory, hashed on the way
    GET /wsemail/attachments/download?ticket=T   one-time ticket from a verified
                                                 `FetchAttachment`; `Range: bytes=N-[M]`
                                                 resumes a partial download

A refused request is answered with a SOAP fault and leaves nothing stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from lxml import etree
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from wsemail.protocol import soap
from wsemail.protocol.errors import (
    Forbidden,
    RemoteFault,
    RequestInvalid,
    RequestTimeout,
    ServerError,
    StorageFull,
    TooLarge,
)
from wsemail.protocol.soap import element, parse_int, q
from wsemail.server.attachments import records
from wsemail.server.attachments.chunks import Blobs
from wsemail.server.attachments.spool import Spool
from wsemail.server.attachments.storage import BlobStore
from wsemail.server.connguard import Pace
from wsemail.server.storage import FULL_REASON, is_full
from wsemail.server.store import Tx

if TYPE_CHECKING:
    from wsemail.server.app import Server

log = logging.getLogger("wsemail.attachments")
UPLOAD_PATH = "/wsemail/attachments/upload"
# a download is read in pieces of this size (each sent before the next is read): what one
# download holds besides the TLS buffers; 1 MB took ~2 MB more peak RSS for no speed gain,
# 256 KB ~0.4 MB more than 128 KB (1 GB: same seconds, 0.25 s less of the server's CPU)
READ_CHUNK = 128 << 10
_RANGE = re.compile(r"^bytes=([0-9]{1,19})-([0-9]{0,19})$", re.ASCII)
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


def _fault(exc: RemoteFault) -> Response:
    response = Response(soap.fault(exc), status_code=exc.status, media_type=soap.CONTENT_TYPE)
    if isinstance(exc, RequestTimeout):  # the rest of a slow body is not waited for
        response.headers["connection"] = "close"
    return response


def _ticket(scope: Scope) -> str:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("ticket", [])
    if len(values) != 1 or not 20 <= len(values[0]) <= 100:
        raise Forbidden("a valid one-time ticket is required")
    return str(values[0])


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def base_url(scope: Scope) -> str:
    """The SOAP endpoint's URL as the uploading client reached it."""
    host = _header(scope, b"host")
    if host is None or not _HOST.match(host):
        server = scope.get("server") or ("127.0.0.1", 0)
        host = f"{server[0]}:{server[1]}"
    scheme = "https" if scope.get("scheme") == "https" else "http"
    return f"{scheme}://{host}/wsemail"


def _parse_range(wanted: str | None) -> tuple[int, int | None] | None:
    if wanted is None:
        return None
    match = _RANGE.match(wanted.strip())
    if match is None:
        raise RequestInvalid("only one byte range, bytes=N- or bytes=N-M, is served")
    return int(match.group(1)), int(match.group(2)) if match.group(2) else None


class Streams:
    def __init__(
        self,
        server: Server,
        blobs: Blobs,
        public_url: Callable[[Scope], str],
        after_upload: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.server = server
        self.blobs = blobs
        self.public_url = public_url
        self.after_upload = after_upload

    # upload -----------------------------------------------------------------------------
    async def upload(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if scope["method"] not in ("PUT", "POST"):
                raise RequestInvalid("upload with PUT")
            ticket = _ticket(scope)
            space = self.server.store.space
            if space is not None and space.still_full():  # the reserve is for reads
                raise StorageFull(FULL_REASON)
            blob = await self.server.store.transact(
                lambda tx: records.take_upload_ticket(tx, ticket)
            )
            if blob is None:
                raise Forbidden("unknown, used or expired upload ticket")
            try:
                response = await self._receive_into(blob, scope, receive)
            except OSError as exc:
                if not is_full(exc):
                    raise
                if space is not None:
                    space.disk_full()
                raise StorageFull(FULL_REASON) from exc
        except RemoteFault as exc:
            response = _fault(exc)
        except Exception:
            log.exception("upload failed")
            response = _fault(ServerError("internal server error"))
        await response(scope, receive, send)

    async def _receive_into(self, blob: records.Blob, scope: Scope, receive: Receive) -> Response:
        tmp = self.blobs.temporary()
        digest = hashlib.sha256()
        size = 0
        committed = False
        try:
            declared = _header(scope, b"content-length")
            length = None if declared is None else parse_int(declared, "Content-Length", 0, 2**63)
            if length is not None and length != blob.size:
                raise RequestInvalid("Content-Length differs from the announced size")
            # a stall of read_timeout, or a pace below the minimum rate, ends it
            pace = Pace(self.server.config, total=None)
            with open(tmp, "wb") as out:
                spool = Spool(out, digest)  # hashes and writes off the event loop
                try:
                    while True:
                        async with asyncio.timeout_at(pace.deadline(size)):
                            message = await receive()
                        if message["type"] == "http.disconnect":
                            raise RequestInvalid("the client went away during the upload")
                        chunk = message.get("body", b"")
                        size += len(chunk)
                        if size > blob.size:
                            raise TooLarge("more bytes than announced")
                        if chunk:
                            await spool.add(chunk)
                        if not message.get("more_body", False):
                            break
                    await spool.finish()
                finally:
                    await spool.settle()
            if size != blob.size:
                raise RequestInvalid(f"received {size} bytes, {blob.size} were announced")
            await asyncio.to_thread(self.blobs.commit, tmp, blob.guid)
            sha256 = digest.hexdigest()
            url = self.public_url(scope)
            await self.server.store.transact(
                lambda tx: records.mark_stored(tx, blob.guid, sha256, url)
            )
            committed = True
        except TimeoutError as exc:
            raise RequestTimeout("timed out reading the upload (too slow)") from exc
        finally:
            if not committed:
                await asyncio.to_thread(self._abandon, tmp, blob.guid)
        log.info("stored attachment %s (%d bytes) for %r", blob.guid, size, blob.owner)
        result = etree.Element(q("UploadResponse"))
        element(result, "Guid", blob.guid)
        element(result, "Size", str(size))
        element(result, "Sha256", sha256)
        if self.after_upload is not None:
            await self.after_upload()
        return Response(soap.response(result), status_code=201, media_type=soap.CONTENT_TYPE)

    def _abandon(self, tmp: Path, guid: str) -> None:
        BlobStore.discard(tmp)
        self.blobs.remove(guid)
        self.server.store.transact_sync(lambda tx: records.forget(tx, guid))

    # download ---------------------------------------------------------------------------
    async def download(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if scope["method"] not in ("GET", "HEAD"):
                raise RequestInvalid("download with GET")
            ticket = _ticket(scope)
            wanted = _header(scope, b"range")
            span = _parse_range(wanted)
            taken = await self.server.store.transact(lambda tx: self._take(tx, ticket, span))
        except RemoteFault as exc:
            await _fault(exc)(scope, receive, send)
            return
        blob, first, last = taken
        if first > last:
            unsatisfiable = RequestInvalid(f"the range is outside the {blob.size} bytes")
            response = Response(
                soap.fault(unsatisfiable),
                status_code=416,
                media_type=soap.CONTENT_TYPE,
                headers={"content-range": f"bytes */{blob.size}"},
            )
            await response(scope, receive, send)
            return
        await self._stream(scope, send, blob, first, last, partial=wanted is not None)

    @staticmethod
    def _take(
        tx: Tx, ticket: str, span: tuple[int, int | None] | None
    ) -> tuple[records.Blob, int, int]:
        """Consume the ticket; (blob, first, last) with first > last for a range outside."""
        found = records.take_download_ticket(tx, ticket)
        if found is None:
            raise Forbidden("unknown, used or expired download ticket")
        blob, address = found
        first, last = 0, blob.size - 1
        if span is not None:
            first = span[0]
            last = blob.size - 1 if span[1] is None else min(span[1], blob.size - 1)
            if first >= blob.size or first > last:
                return blob, 1, 0
        records.audit(tx, blob.guid, address, "download", first, last)
        return blob, first, last

    async def _stream(
        self, scope: Scope, send: Send, blob: records.Blob, first: int, last: int, partial: bool
    ) -> None:
        length = max(0, last - first + 1)
        headers = [
            (b"content-type", b"application/octet-stream"),
            (b"content-length", str(length).encode()),
            (b"accept-ranges", b"bytes"),
            (b"x-wsemail-sha256", (blob.sha256 or "").encode()),
        ]
        if partial:
            headers.append((b"content-range", f"bytes {first}-{last}/{blob.size}".encode()))
        try:
            handle = await asyncio.to_thread(self.blobs.open, blob.guid)  # closed below
        except OSError:
            log.exception("attachment %s is missing from storage", blob.guid)
            await _fault(ServerError("the attachment is not available"))(scope, _none, send)
            return
        with handle:
            await send(
                {
                    "type": "http.response.start",
                    "status": 206 if partial else 200,
                    "headers": headers,
                }
            )
            if scope["method"] == "HEAD":
                await send({"type": "http.response.body", "body": b""})
                return
            handle.seek(first)
            remaining = length
            while remaining > 0:
                chunk = await asyncio.to_thread(handle.read, min(READ_CHUNK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                await send(
                    {"type": "http.response.body", "body": chunk, "more_body": remaining > 0}
                )
            if remaining:
                log.error("attachment %s ended %d bytes early", blob.guid, remaining)
            elif length == 0:
                await send({"type": "http.response.body", "body": b""})


async def _none() -> dict[str, Any]:
    return {"type": "http.disconnect"}
