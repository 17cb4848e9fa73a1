"""Parse a Sieve script (RFC 5228 subset, see the package) into wsemail's own tree.

`sievelib` does the lexing and grammar and says where a syntax error is (line, column);
what it accepts but wsemail does not run (other extensions, comparators, tagged
arguments) is refused here, at the first place the word appears in the script. Nothing of
sievelib leaks out of this module: its errors become `SieveError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Union

from sievelib.parser import Parser

MAX_SCRIPT = 64 << 10  # bytes of script text (UTF-8)
MAX_NESTING = 16
CAPABILITIES = ("fileinto", "imap4flags")
FLAGS = {"\\seen": "\\Seen", "\\flagged": "\\Flagged"}
ADDRESS_HEADERS = frozenset(
    ("from", "to", "cc", "bcc", "sender", "reply-to", "resent-from", "resent-to")
)
_SIZE = re.compile(r"^([0-9]{1,12})([KMG]?)$", re.IGNORECASE)


class SieveError(ValueError):
    """A script wsemail does not run, with where (1-based line and column; 0 if unknown)."""

    def __init__(self, reason: str, line: int = 0, column: int = 0) -> None:
        self.reason, self.line, self.column = reason, line, column
        where = f"line {line}, column {column}: " if line else ""
        super().__init__(f"{where}{reason}")


# the tree ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Const:
    value: bool


@dataclass(frozen=True)
class Header:
    names: tuple[str, ...]
    keys: tuple[str, ...]
    match: str  # is, contains, matches


@dataclass(frozen=True)
class Address:
    part: str  # all, localpart, domain
    names: tuple[str, ...]
    keys: tuple[str, ...]
    match: str


@dataclass(frozen=True)
class Size:
    over: bool
    limit: int


@dataclass(frozen=True)
class Exists:
    names: tuple[str, ...]


@dataclass(frozen=True)
class AllOf:
    tests: tuple[Test, ...]


@dataclass(frozen=True)
class AnyOf:
    tests: tuple[Test, ...]


@dataclass(frozen=True)
class Not:
    test: Test


Test = Union[Const, Header, Address, Size, Exists, AllOf, AnyOf, Not]  # noqa: UP007


@dataclass(frozen=True)
class Act:
    """keep, discard, stop, fileinto (argument: folder), redirect (argument: address),
    addflag (flags)."""

    name: str
    argument: str = ""
    flags: tuple[str, ...] = ()


@dataclass
class If:
    branches: list[tuple[Test | None, list[Command]]] = field(default_factory=list)


Command = Union[Act, If]  # noqa: UP007


@dataclass
class Script:
    text: str
    commands: list[Command]

    def walk(self) -> list[Act]:
        """Every action the script names, anywhere (for checks at set time)."""
        found: list[Act] = []

        def visit(commands: list[Command]) -> None:
            for command in commands:
                if isinstance(command, Act):
                    found.append(command)
                else:
                    for _, block in command.branches:
                        visit(block)

        visit(self.commands)
        return found


# parsing -------------------------------------------------------------------------------
def parse(text: str) -> Script:
    """The tree of `text`, or SieveError (with line and column where it can say)."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) > MAX_SCRIPT:
        raise SieveError(f"a script is at most {MAX_SCRIPT // 1024} KB ({len(data)} bytes given)")
    if "\x00" in text:
        raise SieveError("a script must not contain NUL characters")
    parser = Parser()
    try:
        ok = parser.parse(data)
    except RecursionError as exc:
        raise SieveError("the script nests too deeply") from exc
    except Exception as exc:  # sievelib's own bugs on odd input: still a refused script
        raise SieveError(f"unreadable script: {exc}") from exc
    if not ok:
        line, column, _ = getattr(parser, "error_pos", (0, 0, 0))
        reason = str(getattr(parser, "error", "syntax error"))
        reason = re.sub(r"^line \d+: ", "", reason)
        raise SieveError(reason, line, column)
    bare = _masked(text).rstrip()
    if bare and bare[-1] not in ";}":  # sievelib takes a last command without its ';'
        before = text[: len(bare)]
        line = before.count("\n") + 1
        raise SieveError(
            "';' expected at the end of the script", line, len(bare) - before.rfind("\n")
        )
    return Script(text, _Builder(text).block(list(parser.result), 0, top=True))


def _masked(text: str) -> str:
    """`text` with comments and strings blanked out (same length)."""
    pattern = r'#[^\n]*|/\*.*?\*/|"(?:[^"\\]|\\.)*"|text:.*?\n\.\r?\n'
    return re.sub(
        pattern,
        lambda m: " " * len(m.group(0)) if m.group(0)[0] in "#/" else "x" * len(m.group(0)),
        text,
        flags=re.DOTALL,
    )


class _Builder:
    def __init__(self, text: str) -> None:
        self.text = text
        self.required: set[str] = set()

    def fail(self, reason: str, word: str) -> SieveError:
        line, column = locate(self.text, word)
        return SieveError(reason, line, column)

    def block(self, nodes: list[Any], depth: int, *, top: bool = False) -> list[Command]:
        if depth > MAX_NESTING:
            raise SieveError(f"blocks nest at most {MAX_NESTING} deep")
        out: list[Command] = []
        for node in nodes:
            name = str(node.name).lower()
            args: dict[str, Any] = dict(node.arguments)
            if name == "require":
                if not top or any(not isinstance(c, If) and c.name != "require" for c in out):
                    pass  # sievelib already insists on require first
                for capability in _strings(args.get("capabilities")):
                    if capability not in CAPABILITIES:
                        raise self.fail(f'extension "{capability}" is not supported', capability)
                    self.required.add(capability)
                continue
            if name in ("if", "elsif", "else"):
                test = None if name == "else" else self.test(args.get("test"), depth)
                body = self.block(list(node.children), depth + 1)
                if name == "if":
                    out.append(If([(test, body)]))
                else:
                    last = out[-1] if out else None
                    if not isinstance(last, If) or last.branches[-1][0] is None:
                        raise self.fail(f"{name} without a preceding if", name)
                    last.branches.append((test, body))
                continue
            out.append(self.action(name, args))
        return out

    def action(self, name: str, args: dict[str, Any]) -> Act:
        if name in ("keep", "discard", "stop"):
            self.no_extra(name, args, set())
            return Act(name)
        if name == "fileinto":
            self.no_extra(name, args, {"mailbox"})
            folder = _string(args.get("mailbox"))
            if not folder or len(folder) > 200:
                raise self.fail("fileinto needs a folder name", "fileinto")
            return Act(name, folder)
        if name == "redirect":
            self.no_extra(name, args, {"address"})
            return Act(name, _string(args.get("address")).strip())
        if name == "addflag":
            if "imap4flags" not in self.required:
                raise self.fail('addflag needs require "imap4flags"', "addflag")
            self.no_extra(name, args, {"list-of-flags"})
            flags = []
            for value in _strings(args.get("list-of-flags")):
                for flag in value.split():
                    known = FLAGS.get(flag.lower())
                    if known is None:
                        raise self.fail(f"flag {flag} is not supported (\\Seen, \\Flagged)", flag)
                    flags.append(known)
            return Act(name, flags=tuple(dict.fromkeys(flags)))
        raise self.fail(f"command {name!r} is not supported", name)

    def no_extra(self, name: str, args: dict[str, Any], allowed: set[str]) -> None:
        extra = sorted(set(args) - allowed)
        if extra:
            word = str(args[extra[0]]) if str(args[extra[0]]).startswith(":") else extra[0]
            raise self.fail(f"{name}: {word} is not supported", word)

    def test(self, node: Any, depth: int) -> Test:
        if node is None:
            raise SieveError("a test is missing")
        if depth > MAX_NESTING:
            raise SieveError(f"tests nest at most {MAX_NESTING} deep")
        name = str(node.name).lower()
        args: dict[str, Any] = dict(node.arguments)
        if "comparator" in args:
            raise self.fail(
                "comparators are not supported (the default is i;ascii-casemap)", ":comparator"
            )
        if name in ("true", "false"):
            return Const(name == "true")
        if name == "not":
            return Not(self.test(args.get("test"), depth + 1))
        if name in ("allof", "anyof"):
            tests = tuple(self.test(t, depth + 1) for t in args.get("tests") or [])
            return AllOf(tests) if name == "allof" else AnyOf(tests)
        if name == "exists":
            self.no_extra(name, args, {"header-names"})
            return Exists(tuple(n.lower() for n in _strings(args.get("header-names"))))
        if name == "size":
            self.no_extra(name, args, {"comparator", "limit"})
            return Size(str(args.get("comparator")) == ":over", self.size(str(args.get("limit"))))
        if name == "header":
            self.no_extra(name, args, {"match-type", "header-names", "key-list"})
            return Header(
                tuple(n.lower() for n in _strings(args.get("header-names"))),
                tuple(_strings(args.get("key-list"))),
                self.match(args),
            )
        if name == "address":
            self.no_extra(name, args, {"address-part", "match-type", "header-list", "key-list"})
            names = tuple(n.lower() for n in _strings(args.get("header-list")))
            for header in names:
                if header not in ADDRESS_HEADERS:
                    raise self.fail(f"address: {header} is not an address header", header)
            part = str(args.get("address-part") or ":all").lstrip(":").lower()
            if part not in ("all", "localpart", "domain"):
                raise self.fail(f"address part :{part} is not supported", f":{part}")
            return Address(part, names, tuple(_strings(args.get("key-list"))), self.match(args))
        raise self.fail(f"test {name!r} is not supported", name)

    def match(self, args: dict[str, Any]) -> str:
        kind = str(args.get("match-type") or ":is").lstrip(":").lower()
        if kind not in ("is", "contains", "matches"):
            raise self.fail(f"match type :{kind} is not supported", f":{kind}")
        return kind

    def size(self, raw: str) -> int:
        found = _SIZE.match(raw.strip())
        if found is None:
            raise self.fail(f"size limit {raw!r} is not a number", raw)
        scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[found.group(2).upper()]
        return int(found.group(1)) * scale


def _string(raw: Any) -> str:
    """A Sieve string as sievelib hands it (quoted, or a `text:` block) as plain text."""
    if isinstance(raw, list):
        raw = raw[0] if raw else ""
    value = str(raw or "")
    if value.startswith('"') and value.endswith('"') and len(value) >= 2:
        return re.sub(r"\\(.)", r"\1", value[1:-1], flags=re.DOTALL)
    if value.lower().startswith("text:"):
        lines = value.split("\n")[1:]
        if lines and lines[-1].strip() == ".":
            lines = lines[:-1]
        return "\n".join(line[1:] if line.startswith("..") else line for line in lines)
    return value


def _strings(raw: Any) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, list):
        return [_string(item) for item in raw]
    return [_string(raw)]


def locate(text: str, word: str) -> tuple[int, int]:
    """Line and column (1-based) of the first `word` outside comments; (0, 0) if none."""
    pattern = re.compile(re.escape(word), re.IGNORECASE)
    masked = re.sub(r"#[^\n]*|/\*.*?\*/", lambda m: " " * len(m.group(0)), text, flags=re.DOTALL)
    found = pattern.search(masked)
    if found is None:
        return 0, 0
    before = text[: found.start()]
    line = before.count("\n") + 1
    return line, found.start() - (before.rfind("\n") + 1) + 1
