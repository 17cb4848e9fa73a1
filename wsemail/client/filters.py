"""In charge of the client's side of the user's own rules on the server (issue 18): the
Sieve script (checked here first with `wsemail.core.sieve`, then by the server, which
refuses it whole) and the vacation responder. Used by `wsemail filters`, `wsemail
vacation` and the TUI's filters screen."""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from wsemail.client.mail import Client
from wsemail.core.sieve import parse
from wsemail.protocol.errors import ServerError
from wsemail.protocol.soap import q

EXTENSION_ID = "filters"


@dataclass(frozen=True)
class Vacation:
    on: bool
    subject: str = ""
    body: str = ""
    days: int = 7
    until: str | None = None  # YYYY-MM-DD, the last day

    def as_dict(self) -> dict[str, object]:
        return {
            "on": self.on,
            "subject": self.subject,
            "body": self.body,
            "days": self.days,
            "until": self.until,
        }


class Filters:
    def __init__(self, client: Client) -> None:
        self.client = client

    def _call(self, request: etree._Element, tag: str) -> etree._Element:
        answer = self.client.extension(EXTENSION_ID, request)
        if answer is None or answer.tag != q(tag):
            raise ServerError(f"the server answered no {tag}")
        return answer

    def set_script(self, text: str) -> str:
        """Upload `text` as the script (empty: remove it); checked locally first (a
        SieveError with line and column), then by the server (RequestInvalid)."""
        if text.strip():
            parse(text)
        request = etree.Element(q("SetScript"))
        request.text = text
        return self._call(request, "Script").text or ""

    def script(self) -> str:
        return self._call(etree.Element(q("GetScript")), "Script").text or ""

    def set_vacation(
        self, subject: str, body: str, *, days: int = 7, until: str | None = None
    ) -> Vacation:
        request = etree.Element(q("SetVacation"))
        request.set("Subject", subject)
        request.set("Days", str(days))
        if until:
            request.set("Until", until)
        request.text = body
        return self._vacation(self._call(request, "Vacation"))

    def vacation_off(self) -> Vacation:
        return self._vacation(self._call(etree.Element(q("VacationOff")), "Vacation"))

    def vacation(self) -> Vacation:
        return self._vacation(self._call(etree.Element(q("GetVacation")), "Vacation"))

    @staticmethod
    def _vacation(node: etree._Element) -> Vacation:
        days = node.get("Days") or "7"
        return Vacation(
            on=node.get("On") == "true",
            subject=node.get("Subject") or "",
            body=node.text or "",
            days=int(days) if days.isdigit() and len(days) < 4 else 7,
            until=node.get("Until"),
        )


__all__ = ["Filters", "Vacation"]
