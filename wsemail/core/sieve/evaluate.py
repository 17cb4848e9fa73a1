"""Run a parsed Sieve script on one message: the list of actions to take (RFC 5228 §2.10:
an implicit keep unless fileinto, redirect or discard cancelled it; `stop` ends the run;
imap4flags' addflag sets the flags of every keep and fileinto after it)."""

from __future__ import annotations

import email.policy
import email.utils
import re
from dataclasses import dataclass, field
from email.parser import BytesParser
from functools import lru_cache

from wsemail.core.sieve.script import (
    Act,
    Address,
    AllOf,
    AnyOf,
    Command,
    Const,
    Exists,
    Header,
    If,
    Not,
    Script,
    Size,
    Test,
)
from wsemail.protocol.message import Message

MAX_REDIRECTS = 8


@dataclass(frozen=True)
class MessageView:
    """What a script sees of a message: its header fields (lower-case names, each with its
    values) and its size in bytes."""

    headers: dict[str, list[str]]
    size: int

    def values(self, name: str) -> list[str]:
        return self.headers.get(name.lower(), [])


def view_of(message: Message) -> MessageView:
    """A wsemail message's fields as header fields (From, To, Cc, Subject, Date,
    Message-ID) with the header fields it carries (Auto-Submitted, List-Id…)."""
    headers: dict[str, list[str]] = {
        "from": [message.sender],
        "subject": [message.subject],
        "date": [message.date],
        "message-id": [message.message_id],
    }
    if message.to:
        headers["to"] = [", ".join(message.to)]
    if message.cc:
        headers["cc"] = [", ".join(message.cc)]
    for name, value in message.headers:
        headers.setdefault(name.lower(), []).append(value)
    return MessageView(headers, message.size)


def view_of_mime(data: bytes) -> MessageView:
    """An Internet message's header fields (for `wsemail filters test`)."""
    parsed = BytesParser(policy=email.policy.default).parsebytes(data, headersonly=True)
    headers: dict[str, list[str]] = {}
    for name, value in parsed.items():
        headers.setdefault(name.lower(), []).append(" ".join(str(value).split()))
    return MessageView(headers, len(data))


@dataclass(frozen=True)
class Action:
    """keep (into the inbox), fileinto (a folder), redirect (an address), discard; with the
    flags to set on a kept or filed copy."""

    kind: str
    target: str = ""
    flags: tuple[str, ...] = ()

    def describe(self) -> str:
        flags = f" flags {' '.join(self.flags)}" if self.flags else ""
        target = f" {self.target}" if self.target else ""
        return f"{self.kind}{target}{flags}"


@dataclass
class _Run:
    view: MessageView
    actions: list[Action] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    cancelled: bool = False  # the implicit keep
    stopped: bool = False

    def add(self, action: Action) -> None:
        if action.kind in ("keep", "fileinto"):
            action = Action(action.kind, action.target, tuple(self.flags))
        same = [a for a in self.actions if (a.kind, a.target) == (action.kind, action.target)]
        if same:
            if action.flags and not same[0].flags:
                self.actions[self.actions.index(same[0])] = action
            return
        if action.kind == "redirect" and sum(a.kind == "redirect" for a in self.actions) >= (
            MAX_REDIRECTS
        ):
            return
        self.actions.append(action)


def evaluate(script: Script, view: MessageView) -> list[Action]:
    """The actions `script` takes for the message `view` shows (never empty: a discard is
    `discard`, else what is kept, filed or redirected)."""
    run = _Run(view)
    _block(script.commands, run)
    if not run.cancelled:
        run.add(Action("keep"))
    if not run.actions:
        return [Action("discard")]
    return run.actions


def _block(commands: list[Command], run: _Run) -> None:
    for command in commands:
        if run.stopped:
            return
        if isinstance(command, If):
            for test, body in command.branches:
                if test is None or _test(test, run.view):
                    _block(body, run)
                    break
            continue
        _act(command, run)


def _act(act: Act, run: _Run) -> None:
    if act.name == "stop":
        run.stopped = True
    elif act.name == "keep":
        run.add(Action("keep"))
        run.cancelled = True
    elif act.name == "discard":
        run.cancelled = True
    elif act.name == "fileinto":
        run.add(Action("fileinto", act.argument))
        run.cancelled = True
    elif act.name == "redirect":
        run.add(Action("redirect", act.argument))
        run.cancelled = True
    elif act.name == "addflag":
        run.flags.extend(f for f in act.flags if f not in run.flags)


def _test(test: Test, view: MessageView) -> bool:
    if isinstance(test, Const):
        return test.value
    if isinstance(test, Not):
        return not _test(test.test, view)
    if isinstance(test, AllOf):
        return all(_test(t, view) for t in test.tests)
    if isinstance(test, AnyOf):
        return any(_test(t, view) for t in test.tests)
    if isinstance(test, Exists):
        return all(view.values(name) for name in test.names)
    if isinstance(test, Size):
        return view.size > test.limit if test.over else view.size < test.limit
    if isinstance(test, Header):
        values = [v for name in test.names for v in view.values(name)]
        return any(_match(test.match, v, key) for v in values for key in test.keys)
    if isinstance(test, Address):
        found = [
            _part(address, test.part)
            for name in test.names
            for _, address in email.utils.getaddresses(view.values(name))
            if address
        ]
        return any(_match(test.match, a, key) for a in found for key in test.keys)
    raise AssertionError(f"unknown test {test!r}")


def _part(address: str, part: str) -> str:
    local, _, domain = address.rpartition("@")
    if part == "localpart":
        return local if local else address
    if part == "domain":
        return domain
    return address


def _match(kind: str, value: str, key: str) -> bool:
    """i;ascii-casemap comparisons (ASCII letters without regard to case)."""
    value, key = _fold(value), _fold(key)
    if kind == "is":
        return value == key
    if kind == "contains":
        return key in value
    return _wildcard(key).fullmatch(value) is not None


def _fold(text: str) -> str:
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


@lru_cache(maxsize=256)
def _wildcard(key: str) -> re.Pattern[str]:
    """:matches — `*` any run, `?` one character, `\\` quotes the next one."""
    out, escaped = [], False
    for char in key:
        if escaped:
            out.append(re.escape(char))
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        else:
            out.append(re.escape(char))
    return re.compile("".join(out), re.DOTALL)
