"""In charge of the forms server plug-in, a composite:

- sending processor: a submitted form (the message body is a form document) gets the
  routing rules of this server applied before anyone signed, e.g. a requisition whose
  `total` is above a threshold gets a purchasing step (`rules` option:
  `[{form = "requisition", field = "total", above = "5000", role = "purchasing",
  approvers = ["pat@b.test"]}]`; a role address among the approvers, `wsemail alias add
  purchasing@b.test pat@b.test --role`, stands for its members at that time);
- extension `forms` (password MAC, admins only): `Publish` a signed wheel (file, bytes,
  signature), kept under the data dir;
- route `WHEEL_PATH?file=NAME` (and `NAME.sig`): serves published wheels to anyone —
  readers verify the publisher signature themselves;
- top-level operation `Autofill`, signed with the caller's federated identity certificate
  (`autofill.py`; `IssueToken` is registered too when no other plug-in offers it): the
  caller's own employee record from the `employees` option (`{"carol@a.test" = {employee
  = "Carol", employee_id = "c-1"}}`), for the timesheet's "Autofill…"; only the
  certificate's own entry, for users of this domain only;
- delivery processor (never takes a message): when a form comes back to its sender, a
  local user, it is recorded for the webhook worker, which verifies its whole chain
  against this server's roots and CRLs outside the delivery's transaction; a finished one
  (approved by every step, or rejected) is handed to a program: the `webhook`
  option (a URL) gets a JSON POST (`form_id`, `form`, `version`, `sender`, `status`,
  `chain`, `xml`), recorded in the same transaction as that delivery and retried with
  backoff until a 2xx or `webhook_lifetime` seconds (`webhook.py`: durable, at least once,
  an `Idempotency-Key` header the receiver dedupes on; `webhook_retry` is the first
  delay, `webhook_max_delay` the longest; a 4xx other than 408/409/425/429 fails it at
  once; `webhook_ca` is the PEM bundle an https program is checked against, or
  `"federation"` for this server's federation roots; default the system's CAs).

Forwarding from step to step is the approver's client's job (it sends the signed form to
the next step's approvers); the chain itself carries every signature.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import ssl
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from cryptography import x509
from lxml import etree
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from wsemail.core.forms.contract import Step
from wsemail.core.forms.document import WHEEL_PATH, FormDocument, FormError, is_form_body
from wsemail.pki import read_cert
from wsemail.protocol import soap
from wsemail.protocol.errors import Forbidden, PluginError, RemoteFault, RequestInvalid
from wsemail.protocol.message import Message, domain_of
from wsemail.protocol.soap import element, q, text_of
from wsemail.server.attachments.federated import issue_token
from wsemail.server.forms import autofill, stamp, wheelrows
from wsemail.server.forms import webhook as hand_off
from wsemail.server.mapping import role_members
from wsemail.server.pipeline import (
    DeliveryProcessor,
    Environment,
    ExtensionProcessor,
    SendingProcessor,
    Verdict,
)
from wsemail.server.sql import POSTGRESQL

log = logging.getLogger("wsemail.forms")
EXTENSION_ID = "forms"
# ASCII only, so at most 200 bytes: with ".sig" and ".tmp" a name the file system takes
_FILE = re.compile(r"^(?=.{1,200}$)[A-Za-z0-9_.]+-[0-9][A-Za-z0-9_.+]*-py3-none-any\.whl(\.sig)?$")
MAX_WHEEL = 16 << 20
TOKEN_LIFETIME = 3600.0


class FormsPlugin(SendingProcessor, DeliveryProcessor, ExtensionProcessor):
    """Forms: routing rules on submitted forms, published form wheels, finished forms
    handed to a webhook."""

    name = "forms"
    extension_id = EXTENSION_ID

    def __init__(
        self,
        directory: str | None = None,
        rules: list[dict[str, Any]] | None = None,
        webhook: str | None = None,
        employees: dict[str, dict[str, str]] | None = None,
        webhook_retry: float = 2.0,
        webhook_max_delay: float = 600.0,
        webhook_lifetime: float = 2 * 86400.0,
        webhook_ca: str | None = None,
    ) -> None:
        self.directory = directory
        self.rules = [self._rule(r) for r in rules or []]
        self.root: Path | None = None
        if webhook is not None:
            import httpx  # only with a webhook

            url = httpx.URL(str(webhook))
            if url.scheme not in ("http", "https") or not url.host:
                raise ValueError(f"forms webhook must be an http(s) URL, not {webhook!r}")
        self.webhook = webhook
        if not 0 < float(webhook_retry) <= float(webhook_max_delay):
            raise ValueError("forms webhook_retry must be > 0 and <= webhook_max_delay")
        self.retry = (float(webhook_retry), float(webhook_max_delay))
        self.lifetime = float(webhook_lifetime)
        if webhook_ca is not None and webhook is None:
            raise ValueError("forms webhook_ca is set but there is no webhook")
        self.webhook_ca = None if webhook_ca is None else str(webhook_ca)
        # checked now (a missing or unreadable bundle stops the load); the federation
        # roots are the server's, known at attach
        self.tls: ssl.SSLContext | None = None
        if self.webhook_ca != hand_off.FEDERATION:
            self.tls = hand_off.tls_context(self.webhook_ca)
        self.hand_off: hand_off.Webhook | None = None
        self.employees = {
            str(who).lower(): {str(k): str(v) for k, v in dict(fields).items()}
            for who, fields in (employees or {}).items()
        }
        self.server: Any = None
        self.shared = False  # wheels as rows of a shared store (PostgreSQL), not files

    @staticmethod
    def _rule(raw: dict[str, Any]) -> dict[str, Any]:
        try:
            approvers = tuple(str(a) for a in raw["approvers"])
            rule = {
                "form": str(raw["form"]),
                "field": str(raw["field"]),
                "above": Decimal(str(raw["above"])),
                "step": Step(str(raw["role"]), approvers),
            }
        except (KeyError, TypeError, InvalidOperation) as exc:
            raise ValueError(
                f"a forms rule needs form, field, above, role, approvers: {exc}"
            ) from exc
        if not approvers:
            raise ValueError("a forms rule needs at least one approver")
        return rule

    def attach(self, server: Any) -> None:
        self.root = Path(self.directory) if self.directory else server.config.data_dir / "forms"
        self.root.mkdir(parents=True, exist_ok=True)
        server.routes[WHEEL_PATH] = self.serve
        # on a shared PostgreSQL store the wheels are rows every node serves (wheelrows.py)
        self.shared = server.store.dialect == POSTGRESQL
        if self.shared:
            server.store.ensure_schema(wheelrows.COMPONENT, wheelrows.MIGRATIONS)
        employees = self.employees

        async def signed_autofill(
            srv: Any, envelope: soap.ReceivedEnvelope, peer: str
        ) -> etree._Element:
            return await autofill.autofill(srv, envelope, peer, employees)

        server.operations[autofill.OPERATION] = signed_autofill
        server.store.ensure_schema(stamp.COMPONENT, stamp.MIGRATIONS)
        server.operations[stamp.OPERATION] = stamp.countersign
        if "IssueToken" not in server.operations:  # the attachment plug-in may not be loaded

            async def issue(srv: Any, envelope: soap.ReceivedEnvelope, peer: str) -> etree._Element:
                return await issue_token(srv, envelope, peer, TOKEN_LIFETIME)

            server.operations["IssueToken"] = issue
        self.server = server
        if self.webhook is not None:
            base, ceiling = self.retry
            tls = self.tls
            if tls is None:  # webhook_ca = "federation"
                federation = getattr(server, "federation", None)
                try:
                    tls = hand_off.tls_context(
                        self.webhook_ca, getattr(federation, "root_files", [])
                    )
                except ValueError as exc:
                    raise PluginError(str(exc)) from exc
            self.hand_off = hand_off.Webhook(
                server.store, base_delay=base, max_delay=ceiling, verify=tls, prepare=self.finished
            )
            self.hand_off.start()  # also takes up hand-offs pending from before a restart

    def close(self) -> None:
        if self.hand_off is not None:
            self.hand_off.close()
            self.hand_off = None

    # sending processor ------------------------------------------------------------------
    def process_outgoing(self, message: Message, env: Environment) -> None:
        if not is_form_body(message.body):
            return
        try:
            doc = FormDocument.parse(message.body)
            if doc.acts() or doc.sender != env.principal:
                return  # a form on its way along the route: its chain speaks for itself
            changed = False
            for rule in self.rules:
                if rule["form"] != doc.plugin.name:
                    continue
                value = self._value(doc, rule["field"])
                step: Step = rule["step"]
                # a role address among the approvers stands for its members (issue 18)
                step = Step(step.role, role_members(step.approvers, env))
                if value is not None and value > rule["above"]:
                    if all(s.role != step.role for s in doc.route()):
                        doc.add_step(step)
                        changed = True
                        log.info("form %s: rule added step %r", doc.form_id, step.role)
        except FormError as exc:
            raise RequestInvalid(f"form refused: {exc}") from exc
        if changed:
            message.body = doc.to_bytes().decode()
            message.size = len(message.body.encode()) + len(message.subject.encode())

    @staticmethod
    def _value(doc: FormDocument, name: str) -> Decimal | None:
        node = next((c for c in doc.data if etree.QName(c).localname == name), None)
        if node is None or node.text is None:
            return None
        try:
            return Decimal(node.text.strip())
        except InvalidOperation as exc:
            raise FormError(f"{name} is not a number") from exc

    # delivery processor: a finished form back at its sender ---------------------------
    def deliver(self, message: Message, recipient: str, env: Environment) -> Verdict:
        """Record a form back at its sender for the webhook worker, which verifies its
        chain outside this transaction (`finished`) before anything is posted."""
        if self.webhook is None or not is_form_body(message.body):
            return Verdict.PASS
        from wsemail.core.forms import approvals  # approval chains: a form's, loaded then

        try:
            doc = FormDocument.parse(message.body)
            if recipient != doc.sender or domain_of(doc.sender) != env.domain:
                return Verdict.PASS
            entries = doc.entries()
            if not entries or len(entries) > len(doc.route()) * approvals.MAX_ACTS_PER_STEP:
                return Verdict.PASS
        except (FormError, RemoteFault, ValueError) as exc:
            log.info("form for %r not handed on: %s", recipient, exc)
            return Verdict.PASS
        payload: dict[str, object] = {
            "form_id": doc.form_id,
            "form": doc.plugin.name,
            "version": doc.plugin.version,
            "sender": doc.sender,
            "xml": doc.to_bytes().decode(),
        }
        worker = self.hand_off
        if worker is not None and hand_off.record(env.tx, self.webhook, payload, self.lifetime):
            env.after_commit.append(worker.wake)
        return Verdict.PASS

    def finished(self, payload: dict[str, object]) -> dict[str, object] | None:
        """The webhook's payload of a recorded form whose whole chain verifies against
        this server's roots and CRLs and is finished (approved or rejected); None when it
        is not finished; FormError / a security fault when it does not verify. Runs in
        the webhook worker, outside any transaction, in time linear in the acts."""
        from wsemail.core.forms import approvals

        doc = FormDocument.parse(str(payload["xml"]))
        roots, crls = self._trust_material()
        chain = approvals.verify(doc, roots, crls)
        if not (chain.complete or chain.rejected):
            return None
        return {**payload, "status": chain.status, "chain": [str(e) for e in chain.entries]}

    def _trust_material(
        self,
    ) -> tuple[list[x509.Certificate], list[x509.CertificateRevocationList]]:
        federation = getattr(self.server, "federation", None)
        if federation is None:
            raise FormError("no federation trust roots on this server")
        roots = [read_cert(p) for p in federation.root_files]
        crls = [x509.load_pem_x509_crl(p.read_bytes()) for p in federation.crl_files]
        return roots, crls

    # extension: Publish -----------------------------------------------------------------
    def handle(self, payload: etree._Element, env: Environment) -> etree._Element | None:
        requests = [c for c in payload if isinstance(c.tag, str)]
        if len(requests) == 1 and requests[0].tag == q("Autofill"):
            raise RequestInvalid(
                "Autofill is a top-level operation signed with your federated identity"
            )
        if len(requests) != 1 or requests[0].tag != q("Publish"):
            raise RequestInvalid("the forms extension takes one Publish request")
        if not env.is_admin:
            raise Forbidden("only administrators publish form plug-ins")
        op = requests[0]
        file_name = (text_of(op, "File") or "").strip()
        if not _FILE.match(file_name) or file_name.endswith(".sig"):
            raise RequestInvalid("File must be a pure-Python wheel's file name")
        try:
            wheel = base64.b64decode(text_of(op, "Wheel") or "", validate=True)
            signature = base64.b64decode(text_of(op, "Signature") or "", validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RequestInvalid("Wheel and Signature are base64") from exc
        if not wheel or not signature or len(wheel) > MAX_WHEEL:
            raise RequestInvalid("a wheel and its signature are required")
        if self.shared:
            wheelrows.put(env.tx, [(file_name, wheel), (f"{file_name}.sig", signature)])
            return _published(file_name)
        root = self.root
        assert root is not None
        stored = [(root / file_name, wheel), (root / f"{file_name}.sig", signature)]

        def write() -> None:
            for path, data in stored:
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_bytes(data)
                tmp.replace(path)

        env.after_commit.append(write)
        return _published(file_name)

    # the wheel route --------------------------------------------------------------------
    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        files = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("file", [])
        root = self.root
        if scope["method"] != "GET" or len(files) != 1 or not _FILE.match(files[0]):
            response = Response("bad request\n", status_code=400, media_type="text/plain")
        elif self.shared:
            name = files[0]
            data = await self.server.store.transact(lambda tx: wheelrows.get(tx, name))
            response = (
                Response("no such wheel\n", status_code=404, media_type="text/plain")
                if data is None
                else Response(data, media_type="application/octet-stream")
            )
        elif root is None or not (root / files[0]).is_file():
            response = Response("no such wheel\n", status_code=404, media_type="text/plain")
        else:
            response = Response(
                (root / files[0]).read_bytes(), media_type="application/octet-stream"
            )
        await response(scope, receive, send)


def _published(file_name: str) -> etree._Element:
    result = etree.Element(q("Published"))
    element(result, "File", file_name)
    element(result, "Path", WHEEL_PATH)
    return result
