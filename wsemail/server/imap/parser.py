"""In charge of reading IMAP commands off the wire, strictly (RFC 3501 §4, RFC 7888):

- a line is at most `max_line` bytes; a longer one ends the connection (`Fatal`);
- a literal `{n}` is answered with a continuation only when n is within the command's
  limit; otherwise the command is refused (`Refused`, tagged BAD) before a byte of it is
  read; a non-synchronising literal `{n+}` over the limit ends the connection, since its
  bytes are already on the way and cannot be told from the next command;
- a literal that does not arrive within `timeout` ends the connection;
- parentheses nest at most `MAX_DEPTH` deep; anything else that is not the grammar is a
  `Refused` naming what is wrong. Nothing here touches the store.

A command parses into tokens: `Atom` (str; a `[...]` section and `<...>` partial stay part
of the atom they follow, as in `BODY.PEEK[HEADER.FIELDS (FROM)]<0.100>`), `bytes` for a
quoted string or a literal, and `list` for a parenthesised list.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

MAX_DEPTH = 8
_LITERAL = re.compile(rb"\{(\d{1,10})(\+?)\}$")
_ATOM_STOP = frozenset(b' (){"\r\n')
_TAG = re.compile(r"^[!#$&'+-Z^-z|~]{1,64}$")  # astring chars minus "+"; checked below


class Atom(str):
    """A bare word of a command (a tag, a command name, a flag, NIL, a sequence set…)."""

    __slots__ = ()


class Refused(Exception):  # noqa: N818 -- an answer, not a bug
    """The command is malformed: answered `<tag> BAD <reason>`; the connection goes on."""

    def __init__(self, reason: str, tag: str = "*") -> None:
        super().__init__(reason)
        self.reason = reason
        self.tag = tag


class Fatal(Exception):  # noqa: N818
    """The connection cannot go on (a line too long, a literal that never came)."""


@dataclass
class Raw:
    """One command as read: its lines (CRLF stripped) and the literals between them."""

    lines: list[bytes] = field(default_factory=list)
    literals: list[bytes] = field(default_factory=list)

    @property
    def tag(self) -> str:
        first = self.lines[0].split(b" ", 1)[0] if self.lines else b""
        text = first.decode("ascii", "replace")
        return text if _TAG.match(text) else "*"

    @property
    def size(self) -> int:
        return sum(len(x) for x in self.lines) + sum(len(x) for x in self.literals)


@dataclass
class Limits:
    max_line: int = 16 << 10
    max_literal: int = 64 << 10  # for everything but APPEND
    max_append: int = 25 << 20
    max_command: int = 256 << 10  # lines and literals of a command but APPEND's message
    timeout: float = 60.0  # for the rest of a command once it started


async def _line(reader: asyncio.StreamReader, limits: Limits, timeout: float | None) -> bytes:
    try:
        data = await asyncio.wait_for(reader.readuntil(b"\n"), timeout)
    except asyncio.LimitOverrunError as exc:
        raise Fatal("line too long") from exc
    except asyncio.IncompleteReadError as exc:
        raise EOFError from exc
    except TimeoutError as exc:
        raise Fatal("command not completed in time") from exc
    if len(data) > limits.max_line:
        raise Fatal("line too long")
    return data[:-2] if data.endswith(b"\r\n") else data[:-1]


async def read_command(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    limits: Limits,
    idle: float | None,
    *,
    authenticated: bool = True,
) -> Raw:
    """Read one whole command, literals included (EOFError when the peer is gone). Only
    an authenticated APPEND may send a message-sized literal."""
    raw = Raw()
    line = await _line(reader, limits, idle)
    while True:
        raw.lines.append(line)
        found = _LITERAL.search(line)
        if found is None:
            return raw
        size, nonsync = int(found.group(1)), bool(found.group(2))
        is_append = authenticated and _is_append(raw.lines[0])
        allowed = limits.max_append if is_append else limits.max_literal
        if size > allowed or (not is_append and raw.size + size > limits.max_command):
            if nonsync:
                raise Fatal(f"literal of {size} bytes is over the limit of {allowed}")
            raise Refused(f"literal of {size} bytes is over the limit of {allowed}", raw.tag)
        if not nonsync:
            writer.write(b"+ go ahead\r\n")
            await writer.drain()
        try:
            data = await asyncio.wait_for(reader.readexactly(size), limits.timeout)
        except asyncio.IncompleteReadError as exc:
            raise EOFError from exc
        except TimeoutError as exc:
            raise Fatal("literal not completed in time") from exc
        raw.literals.append(data)
        line = await _line(reader, limits, limits.timeout)


def _is_append(first: bytes) -> bool:
    words = first.split(b" ", 3)
    if len(words) < 2:
        return False
    return words[1].upper() == b"APPEND"


class _Scanner:
    def __init__(self, raw: Raw) -> None:
        self.raw = raw
        self.index = 0  # which line
        self.pos = 0
        self.line = raw.lines[0] if raw.lines else b""

    def at_end(self) -> bool:
        return self.pos >= len(self.line) and self.index >= len(self.raw.lines) - 1

    def parse(self) -> list[object]:
        """The whole command as a flat list of tokens (lists nested)."""
        stack: list[list[object]] = [[]]
        expect_space = False
        while True:
            if self.pos >= len(self.line):
                if self.index >= len(self.raw.lines) - 1:
                    break
                raise Refused("literal marker out of place", self.raw.tag)
            char = self.line[self.pos]
            if char == 0x20:
                if not expect_space:
                    raise Refused("unexpected space", self.raw.tag)
                self.pos += 1
                expect_space = False
                if self.pos >= len(self.line) and self.index >= len(self.raw.lines) - 1:
                    raise Refused("trailing space", self.raw.tag)
                continue
            if char == 0x29:  # )
                if len(stack) == 1:
                    raise Refused("unbalanced parenthesis", self.raw.tag)
                done = stack.pop()
                stack[-1].append(done)
                self.pos += 1
                expect_space = True
                continue
            if expect_space:
                raise Refused("missing space between arguments", self.raw.tag)
            if char == 0x28:  # (
                if len(stack) > MAX_DEPTH:
                    raise Refused(f"lists nest at most {MAX_DEPTH} deep", self.raw.tag)
                stack.append([])
                self.pos += 1
                continue
            stack[-1].append(self._scalar())
            expect_space = True
        if len(stack) != 1:
            raise Refused("unbalanced parenthesis", self.raw.tag)
        return stack[0]

    def _scalar(self) -> object:
        char = self.line[self.pos]
        if char == 0x22:  # "
            return self._quoted()
        if char == 0x7B:  # {
            found = _LITERAL.fullmatch(self.line[self.pos :])
            if found is None or self.index >= len(self.raw.literals):
                raise Refused("malformed literal", self.raw.tag)
            data = self.raw.literals[self.index]
            self.index += 1
            self.line = self.raw.lines[self.index]
            self.pos = 0
            return data
        return self._atom()

    def _quoted(self) -> bytes:
        out = bytearray()
        i = self.pos + 1
        line = self.line
        while i < len(line):
            c = line[i]
            if c == 0x5C:  # backslash
                if i + 1 >= len(line) or line[i + 1] not in (0x5C, 0x22):
                    raise Refused("bad escape in a quoted string", self.raw.tag)
                out.append(line[i + 1])
                i += 2
                continue
            if c == 0x22:
                self.pos = i + 1
                return bytes(out)
            if c == 0 or c == 0x0D or c == 0x0A:
                raise Refused("control character in a quoted string", self.raw.tag)
            out.append(c)
            i += 1
        raise Refused("unterminated quoted string", self.raw.tag)

    def _atom(self) -> Atom:
        line = self.line
        start = i = self.pos
        while i < len(line):
            c = line[i]
            if c == 0x5B:  # [ … ] may hold spaces and parentheses
                end = line.find(b"]", i)
                if end < 0:
                    raise Refused("unterminated [", self.raw.tag)
                i = end + 1
                continue
            if c in _ATOM_STOP:
                break
            if c < 0x20 or c >= 0x7F:
                raise Refused("control or 8-bit character in an atom", self.raw.tag)
            i += 1
        if i == start:
            raise Refused("empty argument", self.raw.tag)
        self.pos = i
        return Atom(line[start:i].decode("ascii"))


def parse(raw: Raw) -> tuple[str, str, list[object]]:
    """(tag, command name upper-cased, arguments) of a command read by `read_command`."""
    if not raw.lines or not raw.lines[0]:
        raise Refused("empty command")
    tokens = _Scanner(raw).parse()
    if len(tokens) < 2 or not isinstance(tokens[0], Atom) or not isinstance(tokens[1], Atom):
        raise Refused("a command is: tag SP name [SP arguments]", raw.tag)
    tag = str(tokens[0])
    if not _TAG.match(tag) or "+" in tag or "[" in tag:
        raise Refused("bad tag", raw.tag)
    return tag, str(tokens[1]).upper(), tokens[2:]


# arguments ------------------------------------------------------------------------------
def astring(value: object, what: str) -> str:
    """An atom or string argument as text (UTF-8)."""
    if isinstance(value, Atom):
        if "[" in value:
            raise Refused(f"{what}: unexpected [")
        return str(value)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Refused(f"{what} is not UTF-8") from exc
    raise Refused(f"{what} must be an atom or a string")


def atom(value: object, what: str) -> str:
    if not isinstance(value, Atom):
        raise Refused(f"{what} must be an atom")
    return str(value)


def count(args: list[object], low: int, high: int, command: str) -> None:
    if not low <= len(args) <= high:
        raise Refused(f"wrong number of arguments for {command}")
