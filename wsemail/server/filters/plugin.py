"""The built-in `filters` plug-in: a delivery processor (the vacation responder, then the
user's Sieve script) and the extension `filters` (password MAC; a user sets their own):

    <SetScript>text</SetScript>   checked whole first: a syntax error (line, column), a
                                  script over 64 KB, a fileinto of a missing folder, a
                                  redirect to oneself or back to oneself through mapped
                                  addresses is refused and the old script stays; empty
                                  text removes the script
    <GetScript/>                  → <Script>text</Script> (empty: none)
    <SetVacation Subject= Days= Until=>body</SetVacation>,  <VacationOff/>,
    <GetVacation/>                → <Vacation On= Subject= Days= Until=>body</Vacation>

At delivery a fileinto whose folder is gone keeps the message in the inbox; a redirect
that would loop (to oneself, through an address the message already went through) is
not made and the message is kept.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from lxml import etree

from wsemail.protocol.errors import RemoteFault, RequestInvalid
from wsemail.protocol.message import Message, domain_of, normalize_address
from wsemail.protocol.soap import parse_int, q
from wsemail.server import mapping
from wsemail.server.filters import records, vacation
from wsemail.server.mailbox import records as mailbox
from wsemail.server.pipeline import (
    DeliveryProcessor,
    Environment,
    ExtensionProcessor,
    Verdict,
    dispatch,
)

if TYPE_CHECKING:
    from wsemail.core.sieve import Action, Script

log = logging.getLogger("wsemail.filters")
EXTENSION_ID = "filters"

# The Sieve parser and evaluator (`wsemail.core.sieve`: sievelib, and the email package for
# a message's headers) are imported when a script is first set or run: most mailboxes have
# none, and a server that never meets one does not load them (about 1 MB).


@lru_cache(maxsize=256)
def _compiled(text: str) -> Script:
    from wsemail.core import sieve

    return sieve.parse(text)


class Filters(DeliveryProcessor, ExtensionProcessor):
    """Per-user Sieve filters and the vacation responder, run at delivery."""

    name = "filters"
    extension_id = EXTENSION_ID

    def attach(self, server: Any) -> None:
        server.store.ensure_schema(records.COMPONENT, records.MIGRATIONS)

    # delivery ---------------------------------------------------------------------------
    def deliver(self, message: Message, recipient: str, env: Environment) -> Verdict:
        text, away = records.at_delivery(env.tx, recipient)
        if not text and away is None:
            return Verdict.PASS  # most mailboxes: nothing to run, one look-up
        if env.tx.user(recipient) is None:
            return Verdict.PASS  # the local MTA says the user is unknown
        if env.tx.find_copy(recipient, "inbox", message.sender, message.message_id):
            return Verdict.PASS  # delivered before (a retry): the local MTA says so once
        if away is not None:
            vacation.respond(message, recipient, away, env)
        if not text:
            return Verdict.PASS
        from wsemail.core import sieve

        try:
            script = _compiled(text)
        except sieve.SieveError as exc:  # stored by an older version that took more
            log.warning("script of %s no longer parses (%s): kept in inbox", recipient, exc)
            return Verdict.PASS
        actions = sieve.evaluate(script, sieve.view_of(message))
        for action in self.safe(actions, message, recipient, env):
            self.apply(action, message, recipient, env)
        return Verdict.TAKEN

    def safe(
        self, actions: list[Action], message: Message, recipient: str, env: Environment
    ) -> list[Action]:
        """The actions, with a redirect that would loop replaced by a keep."""
        from wsemail.core import sieve

        out: list[Action] = []
        for action in actions:
            if action.kind == "redirect" and (
                action.target.lower() == recipient.lower()
                or recipient in mapping.forwarded_through(message)
                or action.target in mapping.forwarded_through(message)
            ):
                log.warning("redirect of %s to %s would loop: kept", recipient, action.target)
                action = sieve.Action("keep")
            if action not in out:
                out.append(action)
        return out

    def apply(self, action: Action, message: Message, recipient: str, env: Environment) -> None:
        if action.kind == "discard":
            log.info("discarded %s for %s", message.message_id, recipient)
        elif action.kind == "redirect":
            copy = replace(message, headers=[*message.headers, (mapping.FORWARDED_BY, recipient)])
            if domain_of(action.target) == env.domain:
                mapping.deliver_locally(copy, action.target, env)
            else:
                mapping.forward(message, [action.target], recipient, env)
        else:
            folder = "inbox"
            if action.kind == "fileinto":
                found = mailbox.resolve(env.tx, recipient, action.target)
                if found is None:
                    log.info("%s has no folder %r: kept in inbox", recipient, action.target)
                folder = found or "inbox"
            copy = replace(
                message,
                folder="inbox",
                seen="\\Seen" in action.flags,
                flagged="\\Flagged" in action.flags,
            )
            public_id, _ = env.tx.add_message(
                recipient, "inbox", copy, origin=copy.origin, signed_xml=copy.signed_xml
            )
            if folder != "inbox":
                mailbox.move(env.tx, recipient, [public_id], folder)

    # extension --------------------------------------------------------------------------
    def handle(self, payload: etree._Element, env: Environment) -> etree._Element | None:
        handlers = {
            "SetScript": self.set_script,
            "GetScript": self.get_script,
            "SetVacation": self.set_vacation,
            "VacationOff": self.vacation_off,
            "GetVacation": self.get_vacation,
        }
        return dispatch(payload, handlers, env, EXTENSION_ID)

    def set_script(self, request: etree._Element, env: Environment) -> etree._Element:
        text = request.text or ""
        answer = etree.Element(q("Script"))
        if not text.strip():
            records.remove_script(env.tx, env.principal)
            return answer
        from wsemail.core import sieve

        try:
            script = sieve.parse(text)
        except sieve.SieveError as exc:
            raise RequestInvalid(f"script refused: {exc}") from exc
        for act in script.walk():
            if (
                act.name == "fileinto"
                and mailbox.resolve(env.tx, env.principal, act.argument) is None
            ):
                raise RequestInvalid(
                    f"script refused: fileinto {act.argument!r}: no such folder (create it first)"
                )
            if act.name == "redirect":
                self.check_redirect(act.argument, env)
        records.put_script(env.tx, env.principal, text)
        answer.text = text
        return answer

    @staticmethod
    def check_redirect(target: str, env: Environment) -> None:
        try:
            address = normalize_address(target)
        except RemoteFault as exc:
            raise RequestInvalid(f"script refused: redirect {target[:80]!r}: {exc.reason}") from exc
        if address.lower() == env.principal.lower():
            raise RequestInvalid(f"script refused: redirect to yourself ({address}) would loop")
        if env.principal in _redirect_reach(address, env):
            raise RequestInvalid(
                f"script refused: redirect to {address} comes back to you (a loop)"
            )

    def get_script(self, request: etree._Element, env: Environment) -> etree._Element:
        answer = etree.Element(q("Script"))
        answer.text = records.script(env.tx, env.principal) or ""
        return answer

    def set_vacation(self, request: etree._Element, env: Environment) -> etree._Element:
        days = parse_int(request.get("Days") or "7", "Days", 1, vacation.MAX_DAYS)
        found = vacation.settings(
            request.get("Subject") or "",
            request.text or "",
            request.get("Until"),
            days,
            env.clock(),
        )
        records.put_vacation(env.tx, env.principal, found)
        return self.get_vacation(request, env)

    def vacation_off(self, request: etree._Element, env: Environment) -> etree._Element:
        records.remove_vacation(env.tx, env.principal)
        return self.get_vacation(request, env)

    def get_vacation(self, request: etree._Element, env: Environment) -> etree._Element:
        found = records.vacation(env.tx, env.principal)
        answer = etree.Element(q("Vacation"))
        answer.set("On", "false")
        if found is not None:
            active = found.until is None or env.clock() <= found.until
            answer.set("On", "true" if active else "false")
            answer.set("Subject", found.subject)
            answer.set("Days", str(found.days))
            if found.until is not None:
                end = datetime.fromtimestamp(found.until, UTC)
                answer.set("Until", end.date().isoformat())
            answer.text = found.body
        return answer


def _redirect_reach(address: str, env: Environment) -> set[str]:
    """The local mailboxes mail redirected to `address` reaches: through mapped addresses
    and the redirects of those mailboxes' own scripts, MAX_DEPTH steps at most."""
    from wsemail.core import sieve

    reached: set[str] = set()
    todo = [address]
    for _ in range(mapping.MAX_DEPTH):
        found = []
        for target in todo:
            if domain_of(target) != env.domain:
                continue
            for owner in mapping.expand(target, env).mailboxes:
                if owner in reached:
                    continue
                reached.add(owner)
                text = records.script(env.tx, owner)
                try:
                    script = _compiled(text) if text else None
                except sieve.SieveError:
                    script = None
                if script is not None:
                    found += [a.argument for a in script.walk() if a.name == "redirect"]
        if not found:
            break
        todo = found
    return reached
