"""CFTUTIL/PKIUTIL commands from text (domain/CFTUTIL.md §2-3). Pure: returns values, never raises.

Grammar (names case-insensitive, upper-cased here; `,` between parameters optional):

    file    = { command } ;
    command = NAME { [","] param } [","] ;
    param   = NAME "=" value ;
    value   = scalar | "(" [ scalar { [","] scalar } ] ")" ;   lists may span lines
    scalar  = quoted | bare ;

* A command starts at a name that is **not** followed by `=`; a name followed by `=` is a parameter.
  So a value is always one token, and whatever name follows it starts the next parameter or command.
* In name position a word ends at `=` (`ID=X` is a name, `=` and a value); in value position `=` is
  an ordinary character (`DNUSER = O=ACME`).
* A stray `,` between commands is accepted: Axway's examples leave one before the next command.
* After a syntax error, reading resumes at the next line that starts with a command name, so that
  every error of a file is listed, each with its line; the commands of a file with errors are not
  to be used.

Values keep how they were written (bare, `'…'` or `"…"`): the case rules of CFTUTIL.md §4 depend on it
and are applied by the mapping, which knows each parameter's class.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from .lexer import Token, tokenize

NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_BARE = re.compile(r"(?:[^ \t\r\n,()/'\"‘’“”]|/(?!\*))+")


@dataclass(frozen=True, slots=True)
class Scalar:
    text: str
    quote: str = ""  # "" bare, "'" or '"'
    curly: bool = field(default=False, compare=False)  # written with typographic quotes


@dataclass(frozen=True, slots=True)
class ListValue:
    items: tuple[Scalar, ...]


Value = Scalar | ListValue


@dataclass(frozen=True, slots=True)
class Param:
    name: str  # upper case
    value: Value
    line: int


@dataclass(frozen=True, slots=True)
class Command:
    name: str  # upper case
    params: tuple[Param, ...]
    file: str
    line: int  # the line of its name


@dataclass(frozen=True, slots=True)
class SyntaxProblem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: error: {self.message}"


@dataclass(frozen=True, slots=True)
class Parsed:
    commands: tuple[Command, ...]
    problems: tuple[SyntaxProblem, ...]


class _Abort(Exception):
    """Internal: the current command is broken; resume at the next command line."""


class _Reader:
    def __init__(self, tokens: list[Token], file: str) -> None:
        self.tokens = tokens
        self.file = file
        self.i = 0
        self.problems: list[SyntaxProblem] = []

    def peek(self, offset: int = 0) -> Token | None:
        index = self.i + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def fail(self, line: int, message: str) -> _Abort:
        self.problems.append(SyntaxProblem(self.file, line, message))
        return _Abort()

    def is_command_start(self, index: int) -> bool:
        token = self.tokens[index]
        if token.kind != "word" or not NAME.fullmatch(token.text):
            return False
        following = self.tokens[index + 1] if index + 1 < len(self.tokens) else None
        return not (following is not None and following.kind == "word" and following.text.startswith("="))

    def recover(self) -> None:
        """Skip to the next line that starts with a command name, reporting lexical errors on the way."""
        while self.i < len(self.tokens):
            token = self.tokens[self.i]
            if token.kind == "error":
                self.problems.append(SyntaxProblem(self.file, token.line, token.text))
            elif token.line_start and self.is_command_start(self.i):
                return
            self.i += 1

    def run(self) -> Parsed:
        commands: list[Command] = []
        while self.i < len(self.tokens):
            token = self.tokens[self.i]
            if token.kind == "comma":
                self.i += 1
                continue
            start = self.i
            try:
                commands.append(self.command())
            except _Abort:
                self.i = max(self.i, start + 1)  # past the offending token, not past the next command
                self.recover()
        return Parsed(tuple(commands), tuple(self.problems))

    def command(self) -> Command:
        token = self.tokens[self.i]
        name, has_equals, _ = self.named(token, "command name")
        if has_equals or not self.is_command_start(self.i):
            raise self.fail(token.line, f"parameter {name[:40]!r} outside a command (expected a command name)")
        self.i += 1
        params: list[Param] = []
        while (param := self.param()) is not None:
            params.append(param)
        return Command(token.text.upper(), tuple(params), self.file, token.line)

    def named(self, token: Token, what: str) -> tuple[str, str, str]:
        """`name`, `=`, rest of a word that must begin with a name (a command's or a parameter's);
        anything else is a syntax error (a lexical error token is consumed with it)."""
        if token.kind == "error":
            self.i += 1
            raise self.fail(token.line, token.text)
        if token.kind != "word":
            raise self.fail(token.line, f"expected a {what}, got {_show(token)}")
        name, equals, rest = token.text.partition("=")
        if not NAME.fullmatch(name):
            raise self.fail(token.line, f"expected a {what}, got {_show(token)}")
        return name, equals, rest

    def param(self) -> Param | None:
        while (token := self.peek()) is not None and token.kind == "comma":
            self.i += 1
        if token is None:
            return None
        name, has_equals, rest = self.named(token, "parameter name")
        if has_equals:
            self.i += 1
        else:
            following = self.peek(1)
            if following is None or following.kind != "word" or not following.text.startswith("="):
                return None  # a name without `=`: the next command
            rest = following.text[1:]
            self.i += 2
        value = Scalar(rest) if rest else self.value(name.upper(), token.line)
        return Param(name.upper(), value, token.line)

    def value(self, name: str, line: int) -> Value:
        token = self.peek()
        if token is None:
            raise self.fail(line, f"{name}: a value is expected after '='")
        self.i += 1
        if token.kind == "word":
            return Scalar(token.text)
        if token.kind == "quoted":
            return Scalar(token.text, token.quote, token.curly)
        if token.kind == "open":
            return self.list_value(name, token.line)
        if token.kind == "error":
            raise self.fail(token.line, token.text)
        raise self.fail(token.line, f"{name}: a value is expected after '=', got {_show(token)}")

    def list_value(self, name: str, line: int) -> ListValue:
        items: list[Scalar] = []
        while (token := self.peek()) is not None:
            self.i += 1
            if token.kind == "close":
                return ListValue(tuple(items))
            if token.kind == "comma":
                continue
            if token.kind == "word":
                items.append(Scalar(token.text))
            elif token.kind == "quoted":
                items.append(Scalar(token.text, token.quote, token.curly))
            elif token.kind == "error":
                raise self.fail(token.line, token.text)
            else:
                raise self.fail(token.line, f"{name}: lists do not nest")
        raise self.fail(line, f"{name}: list opened with '(' is never closed")


def _show(token: Token) -> str:
    if token.kind == "word" and token.line_start and token.text.startswith(("*", "#", "//")):
        return f"{token.text[:40]!r} (CFTUTIL comments are only /* … */)"
    if token.kind == "quoted":
        return f"the quoted string {token.quote}{token.text[:40]}{token.quote}"
    return repr(token.text[:40])


def parse_commands(text: str, file: str) -> Parsed:
    """Every command of `text`, or the syntax problems (each with `file:line`) when there are any."""
    return _Reader(list(tokenize(text)), file).run()


# --------------------------------------------------------------------------------------------
# Rendering (the inverse, for round trips and for writing commands in tests and docs)


def render_scalar(scalar: Scalar) -> str:
    if scalar.quote == "" and _BARE.fullmatch(scalar.text) and scalar.text != "-":
        return scalar.text
    quote = scalar.quote or "'"
    return quote + scalar.text.replace(quote, quote * 2) + quote


def render_value(value: Value) -> str:
    if isinstance(value, ListValue):
        return "(" + ", ".join(render_scalar(item) for item in value.items) + ")"
    return render_scalar(value)


def render_commands(commands: Iterable[Command]) -> str:
    """CFTEXT-like text: one parameter per line. Quoted text must not hold a line break."""
    lines: list[str] = []
    for command in commands:
        if not command.params:
            lines.append(command.name)
            continue
        lines.append(f"{command.name}")
        for i, param in enumerate(command.params):
            separator = "," if i < len(command.params) - 1 else ""
            lines.append(f"  {param.name} = {render_value(param.value)}{separator}")
    return "\n".join(lines) + "\n"
