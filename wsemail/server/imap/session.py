"""One IMAP connection (RFC 3501 states: not authenticated → authenticated → selected →
logout). Every command reads and writes the store in one unit of work of its own, so a
refused or failed command leaves nothing changed; the selected folder's UIDs come from
`records.sync`. Updates other sessions made (new mail, flags, expunges) are reported at
NOOP, CHECK, IDLE and after this session's own EXPUNGE/MOVE, never in the middle of a
FETCH, STORE or SEARCH by sequence number (RFC 3501 §7.4.1).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wsemail.protocol.errors import AuthenticationFailed, RateLimited, RemoteFault, StoreError
from wsemail.protocol.message import normalize_address as normalize
from wsemail.server.imap.folders import FolderCommands
from wsemail.server.imap.messages import MessageCommands
from wsemail.server.imap.parser import (
    Fatal,
    Raw,
    Refused,
    astring,
    atom,
    count,
    parse,
    read_command,
)
from wsemail.server.imap.state import Account, No, log, oneline

if TYPE_CHECKING:
    pass


class Session(FolderCommands, MessageCommands):
    """One connection: reading commands, dispatching them by state, logging in."""

    def capabilities(self) -> bytes:
        caps = [b"IMAP4rev1", b"LITERAL+", b"UIDPLUS", b"MOVE", b"IDLE", b"SPECIAL-USE"]
        caps += [b"UNSELECT", b"NAMESPACE", b"ID", b"ENABLE"]
        if self.account is None:
            if not self.tls and self.service.starttls is not None:
                caps.append(b"STARTTLS")
            if self.may_login():
                caps.append(b"AUTH=PLAIN")
            else:
                caps.append(b"LOGINDISABLED")
        return b" ".join(caps)

    def may_login(self) -> bool:
        return self.tls or (
            self.service.loopback_plain_login and self.service.is_loopback(self.peer)
        )

    async def run(self) -> None:
        self.send(b"* OK [CAPABILITY " + self.capabilities() + b"] wsemail IMAP ready")
        try:
            while not self.logout:
                await self.drain()
                idle = self.service.autologout if self.account else self.service.login_timeout
                try:
                    raw = await read_command(
                        self.reader,
                        self.writer,
                        self.service.limits,
                        idle,
                        authenticated=self.account is not None,
                    )
                except Refused as exc:
                    self.send(exc.tag.encode() + b" BAD " + exc.reason.encode())
                    continue
                await self.command(raw)
        except Fatal as exc:
            self.send(b"* BYE " + str(exc).encode())
        except (ValueError, TimeoutError):  # a line too long or too late (AUTHENTICATE, IDLE)
            self.send(b"* BYE line too long or too late")
        except (EOFError, ConnectionError):
            pass
        finally:
            self.service.forget(self)
            try:
                await asyncio.wait_for(self.drain(), 5)
                self.writer.close()
            except (ConnectionError, TimeoutError, ssl.SSLError, asyncio.CancelledError):
                self.writer.transport.abort()

    async def command(self, raw: Raw) -> None:
        tag = raw.tag
        try:
            tag, name, args = parse(raw)
            handler = self.handler(name)
            await handler(tag, args)
        except Refused as exc:
            self.send(tag.encode() + b" BAD " + exc.reason.encode())
        except No as exc:
            self.send(tag.encode() + b" NO " + exc.text.encode())
        except RemoteFault as exc:
            self.send(tag.encode() + b" NO " + oneline(exc.reason))
        except StoreError:
            log.exception("IMAP command %r failed in the store", raw.lines[0][:40])
            self.send(tag.encode() + b" NO [UNAVAILABLE] temporary server problem")

    def handler(self, name: str) -> Callable[[str, list[object]], Any]:
        anywhere = {
            "CAPABILITY": self.do_capability,
            "NOOP": self.do_noop,
            "LOGOUT": self.do_logout,
            "ID": self.do_id,
        }
        before = {
            "STARTTLS": self.do_starttls,
            "LOGIN": self.do_login,
            "AUTHENTICATE": self.do_authenticate,
        }
        after = {
            "SELECT": self.do_select,
            "EXAMINE": self.do_select,
            "CREATE": self.do_create,
            "DELETE": self.do_delete,
            "RENAME": self.do_rename,
            "SUBSCRIBE": self.do_ok,
            "UNSUBSCRIBE": self.do_ok,
            "LIST": self.do_list,
            "LSUB": self.do_list,
            "STATUS": self.do_status,
            "APPEND": self.do_append,
            "IDLE": self.do_idle,
            "NAMESPACE": self.do_namespace,
            "ENABLE": self.do_enable,
        }
        selected = {
            "CHECK": self.do_noop,
            "CLOSE": self.do_close,
            "UNSELECT": self.do_close,
            "EXPUNGE": self.do_expunge,
            "SEARCH": self.do_search,
            "FETCH": self.do_fetch,
            "STORE": self.do_store,
            "COPY": self.do_copy,
            "MOVE": self.do_copy,
            "UID": self.do_uid,
        }
        self.name = name
        if name in anywhere:
            return anywhere[name]
        if name in before:
            if self.account is not None:
                raise Refused("already logged in")
            return before[name]
        if name in after or name in selected:
            if self.account is None:
                raise Refused("log in first")
            if name in selected and self.folder is None:
                raise Refused("select a folder first")
            return after.get(name) or selected[name]
        raise Refused("unknown command")

    # any state ---------------------------------------------------------------------------
    async def do_capability(self, tag: str, args: list[object]) -> None:
        count(args, 0, 0, "CAPABILITY")
        self.send(b"* CAPABILITY " + self.capabilities())
        self.ok(tag)

    async def do_noop(self, tag: str, args: list[object]) -> None:
        count(args, 0, 0, self.name)
        if self.folder is not None:
            await self.report_updates()
        self.ok(tag)

    async def do_logout(self, tag: str, args: list[object]) -> None:
        count(args, 0, 0, "LOGOUT")
        self.send(b"* BYE logging out")
        self.ok(tag)
        self.logout = True

    async def do_id(self, tag: str, args: list[object]) -> None:
        count(args, 1, 1, "ID")
        self.send(b'* ID ("name" "wsemail")')
        self.ok(tag)

    async def do_namespace(self, tag: str, args: list[object]) -> None:
        count(args, 0, 0, "NAMESPACE")
        self.send(b'* NAMESPACE (("" "/")) NIL NIL')
        self.ok(tag)

    async def do_enable(self, tag: str, args: list[object]) -> None:
        self.send(b"* ENABLED")
        self.ok(tag)

    # logging in --------------------------------------------------------------------------
    async def do_starttls(self, tag: str, args: list[object]) -> None:
        count(args, 0, 0, "STARTTLS")
        context = self.service.starttls
        if self.tls or context is None:
            raise Refused("STARTTLS is not available here")
        if self.reader._buffer:  # type: ignore[attr-defined]  # pipelined plaintext: refuse it
            raise Fatal("data after STARTTLS")
        self.ok(tag, "begin TLS")
        await self.drain()
        await self.writer.start_tls(context)
        self.tls = True

    async def do_login(self, tag: str, args: list[object]) -> None:
        count(args, 2, 2, "LOGIN")
        username = astring(args[0], "the user name")
        password = astring(args[1], "the password")
        await self.login(tag, username, password)

    async def do_authenticate(self, tag: str, args: list[object]) -> None:
        count(args, 1, 2, "AUTHENTICATE")
        if atom(args[0], "the mechanism").upper() != "PLAIN":
            raise No("[CANNOT] only AUTHENTICATE PLAIN")
        if not self.may_login():
            raise No("[PRIVACYREQUIRED] use TLS first")
        if len(args) == 2:
            answer = astring(args[1], "the initial response")
        else:
            self.send(b"+ ")
            await self.drain()
            line = await asyncio.wait_for(self.reader.readline(), self.service.limits.timeout)
            if len(line) > 4096 or not line.endswith(b"\n"):
                raise Fatal("authentication line too long")
            answer = line.strip().decode("ascii", "replace")
        if answer == "*":
            raise Refused("authentication cancelled")
        try:
            blob = base64.b64decode(answer.encode("ascii"), validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
            raise Refused("bad base64") from exc
        fields = blob.split(b"\0")
        if len(fields) != 3:
            raise Refused("PLAIN is: [authzid] NUL user NUL password")
        authzid, user, password = (f.decode("utf-8", "replace") for f in fields)
        if authzid and authzid != user:
            self.failed(user)
            raise No("[AUTHENTICATIONFAILED] authentication failed")
        await self.login(tag, user, password)

    def username(self, text: str) -> str:
        try:
            return normalize(text)
        except RemoteFault:
            return text[:320]

    def failed(self, text: str) -> None:
        self.service.server.auth.record_failure(self.username(text), self.peer)
        self.service.auth_failed += 1
        log.info("IMAP login failed for %r from %s", self.username(text), self.peer)

    async def login(self, tag: str, text: str, password: str) -> None:
        if not self.may_login():
            raise No("[PRIVACYREQUIRED] LOGIN needs TLS (STARTTLS) on this connection")
        username = self.username(text)
        auth = self.service.server.auth
        try:
            auth.check_rate(username, self.peer)
        except RateLimited:
            raise No("[UNAVAILABLE] too many failed logins, try again later") from None
        try:
            user = await self.service.server.store.transact(lambda tx: tx.user(username))
            await auth.check_password(user, username, password)
        except AuthenticationFailed:
            self.failed(text)
            raise No("[AUTHENTICATIONFAILED] authentication failed") from None
        assert user is not None
        self.account = Account(user.address, user.key)
        self.service.register(self)
        log.info("IMAP login %r from %s", user.address, self.peer)
        self.ok(tag, "[CAPABILITY " + self.capabilities().decode() + "] logged in")
