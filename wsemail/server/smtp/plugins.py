"""The SMTP gateway's server plug-ins; both are off unless the config lists them.

    smtp-outbound  (extension "smtp")  takes the relay's fallback: domains without a
                   wsemail service get DKIM-signed SMTP to their MX hosts; the extension
                   answers an admin with the DNS records to publish; on-demand
                   attachments are attached or linked (options `attachments`:
                   auto|attach|link, `attach_max_bytes`); `mx_port` (25) and
                   `dns_timeout` for private deployments and tests
    smtp-inbound   (delivery)          runs the SMTP listener (option `port`, 127.0.0.1 by
                   default) and refuses, at delivery, legacy mail that claims a local
                   sender; attachments are kept through the `attachments` plug-in
                   (options `max_attachment_bytes`, `max_attachments`); every message
                   is checked for SPF, DKIM and DMARC (`dns_timeout`, 5 s)
    smtp-submission (extension "smtp-submission")  the submission port for mail programs
                   (RFC 6409; option `port`, 587 by default, on 127.0.0.1 unless `host`):
                   STARTTLS with the server's certificate, AUTH PLAIN/LOGIN, then a
                   message goes the way of a SOAP Send; the extension answers an admin
                   with the listener's address and counters. `insecure_auth` (loopback
                   listeners only, for tests) allows AUTH without TLS from loopback peers

Call `close()` on a plug-in that has it when the server stops (the inbound listener runs on
a daemon thread, so forgetting it only leaves the port open until the process exits).
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

from lxml import etree

from wsemail.protocol.errors import Forbidden, PluginError, Rejected
from wsemail.protocol.message import Message, domain_of
from wsemail.protocol.soap import element, q
from wsemail.server.attachments import OnDemandAttachments
from wsemail.server.pipeline import DeliveryProcessor, Environment, ExtensionProcessor, Verdict
from wsemail.server.smtp import dkim_keys
from wsemail.server.smtp.inbound import ORIGIN_PREFIX, Gateway, Listener
from wsemail.server.smtp.mx import MailDns
from wsemail.server.smtp.outbound import ATTACH_MODES, SmtpSender, storage_reader
from wsemail.server.smtp.submission import Submission, is_loopback

log = logging.getLogger("wsemail.smtp")


def _attachments(server: Any) -> OnDemandAttachments | None:
    for entry in server.pipeline.listing():
        if isinstance(entry.plugin, OnDemandAttachments):
            return entry.plugin
    return None


def _dns(
    server: Any, mx: Any, txt: Any, use_dns: bool, timeout: float = 5.0, mx_port: int = 25
) -> MailDns:
    config = server.config
    return MailDns(
        mx=mx,
        txt=txt,
        nameservers=config.dns_nameservers,
        port=config.dns_port,
        use_dns=use_dns,
        timeout=timeout,
        mx_port=mx_port,
    )


class _Listening:
    """An SMTP listener owned by a plug-in: its address once attached, stopped on close."""

    listener: Listener | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self.listener is not None, "not attached"
        return self.listener.address

    def close(self) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.stop()


class SmtpOutbound(ExtensionProcessor):
    """Deliver mail for domains without a wsemail service by SMTP, DKIM-signed."""

    name = "smtp-outbound"
    extension_id = "smtp"

    def __init__(
        self,
        selector: str = dkim_keys.DEFAULT_SELECTOR,
        helo: str = "",
        starttls: bool = True,
        require_tls: bool = False,
        tls_verify: bool = False,
        timeout: float = 30.0,
        mx: dict[str, list[str]] | None = None,
        txt: dict[str, str] | None = None,
        use_dns: bool = True,
        attachments: str = "auto",
        attach_max_bytes: int = 10 << 20,
        mx_port: int = 25,
        dns_timeout: float = 5.0,
    ) -> None:
        if attachments not in ATTACH_MODES:
            raise ValueError(f"attachments must be one of {', '.join(ATTACH_MODES)}")
        if int(attach_max_bytes) < 0:
            raise ValueError("attach_max_bytes must not be negative")
        self.options = {
            "attachments": attachments,
            "attach_max_bytes": int(attach_max_bytes),
            "selector": str(selector),
            "helo": str(helo),
            "starttls": bool(starttls),
            "require_tls": bool(require_tls),
            "tls_verify": bool(tls_verify),
            "timeout": float(timeout),
        }
        self.mx, self.txt, self.use_dns = mx, txt, bool(use_dns)
        self.mx_port, self.dns_timeout = int(mx_port), float(dns_timeout)
        self.sender: SmtpSender | None = None
        self.server: Any = None

    def attach(self, server: Any) -> None:
        if server.relay is None:
            raise PluginError("smtp-outbound needs the server's relay")
        key = dkim_keys.ensure_key(
            server.config.data_dir, server.config.domain, str(self.options["selector"])
        )
        self.sender = SmtpSender(
            relay=server.relay,
            dns=_dns(server, self.mx, self.txt, self.use_dns, self.dns_timeout, self.mx_port),
            domain=server.config.domain,
            dkim_key=key,
            reader=storage_reader(lambda: _attachments(server)),
            **self.options,  # type: ignore[arg-type]
        )
        server.relay.fallback = self.sender.fallback
        self.server = server

    def close(self) -> None:
        if self.server is not None and self.sender is not None:
            if self.server.relay.fallback == self.sender.fallback:
                self.server.relay.fallback = None

    def handle(self, payload: etree._Element, env: Environment) -> etree._Element | None:
        if not env.is_admin:
            raise Forbidden("the smtp extension is for admin accounts")
        assert self.sender is not None
        answer = etree.Element(q("SmtpDns"))
        for line in dkim_keys.dns_records(
            env.domain, self.sender.dkim_key, selector=self.sender.selector
        ):
            element(answer, "Record", line)
        return answer


class SmtpInbound(_Listening, DeliveryProcessor):
    """Take Internet mail for local users over SMTP, as legacy mail (never a relay)."""

    name = "smtp-inbound"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 2525,
        max_bytes: int = 10 << 20,
        rate: int = 60,
        window: float = 60.0,
        hostname: str = "",
        txt: dict[str, str] | None = None,
        mx: dict[str, list[str]] | None = None,
        use_dns: bool = True,
        starttls: bool = True,
        max_attachment_bytes: int = 10 << 20,
        max_attachments: int = 32,
        dns_timeout: float = 5.0,
    ) -> None:
        if int(max_bytes) <= 0 or int(rate) <= 0 or float(window) <= 0:
            raise ValueError("max_bytes, rate and window must be positive")
        if int(max_attachment_bytes) < 0 or int(max_attachments) < 0:
            raise ValueError("max_attachment_bytes and max_attachments must not be negative")
        self.max_attachment_bytes, self.max_attachments = (
            int(max_attachment_bytes),
            int(max_attachments),
        )
        self.host, self.port = str(host), int(port)
        self.max_bytes, self.rate, self.window = int(max_bytes), int(rate), float(window)
        self.hostname = str(hostname)
        self.txt, self.mx, self.use_dns, self.starttls = txt, mx, bool(use_dns), bool(starttls)
        self.dns_timeout = float(dns_timeout)
        self.listener: Listener | None = None

    def attach(self, server: Any) -> None:
        gateway = Gateway(
            server,
            _dns(server, self.mx, self.txt, self.use_dns, self.dns_timeout),
            rate=self.rate,
            window=self.window,
            max_attachment_bytes=self.max_attachment_bytes,
            max_attachments=self.max_attachments,
        )
        tls = None
        config = server.config
        if self.starttls and config.tls_cert is not None and config.tls_key is not None:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(str(config.tls_cert), str(config.tls_key))
        self.listener = Listener(
            gateway,
            self.host,
            self.port,
            max_bytes=self.max_bytes,
            hostname=self.hostname or config.domain,
            tls=tls,
        ).start()

    def deliver(self, message: Message, recipient: str, env: Environment) -> Verdict:
        """Second line of defence: legacy mail never lands under a local sender."""
        if (message.origin or "").startswith(ORIGIN_PREFIX) and domain_of(
            message.sender
        ) == env.domain:
            raise Rejected("legacy mail may not claim a local sender")
        return Verdict.PASS


class SmtpSubmission(_Listening, ExtensionProcessor):
    """Let mail programs send through wsemail: SMTP AUTH after STARTTLS on a submission port."""

    name = "smtp-submission"
    extension_id = "smtp-submission"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 587,
        max_bytes: int = 10 << 20,
        hostname: str = "",
        insecure_auth: bool = False,
    ) -> None:
        if int(max_bytes) <= 0:
            raise ValueError("max_bytes must be positive")
        if insecure_auth and not is_loopback(str(host)):
            raise ValueError("insecure_auth is for loopback listeners only")
        self.host, self.port, self.max_bytes = str(host), int(port), int(max_bytes)
        self.hostname, self.insecure_auth = str(hostname), bool(insecure_auth)
        self.handler: Submission | None = None
        self.listener: Listener | None = None

    def attach(self, server: Any) -> None:
        config = server.config
        tls = None
        if config.tls_cert is not None and config.tls_key is not None:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(str(config.tls_cert), str(config.tls_key))
        elif not self.insecure_auth:
            raise PluginError("smtp-submission needs the server's TLS certificate (tls_cert)")
        self.handler = Submission(server, insecure_auth=self.insecure_auth)
        self.listener = Listener(
            self.handler,
            self.host,
            self.port,
            max_bytes=self.max_bytes,
            hostname=self.hostname or config.domain,
            tls=tls,
            ident="wsemail SMTP submission",
            auth_require_tls=not self.insecure_auth,
        ).start()

    def handle(self, payload: etree._Element, env: Environment) -> etree._Element | None:
        if not env.is_admin:
            raise Forbidden("the smtp-submission extension is for admin accounts")
        answer = etree.Element(q("SmtpSubmission"))
        if self.listener is not None and self.handler is not None:
            host, port = self.address
            answer.set("host", host)
            answer.set("port", str(port))
            counts = self.handler.counts
            answer.set("submitted", str(counts.submitted))
            answer.set("refused", str(counts.refused))
            answer.set("authFailed", str(counts.auth_failed))
        return answer
