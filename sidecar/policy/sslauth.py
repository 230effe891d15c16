"""TIBCO MFT Platform Server SSLAUTH authorization files: grammar, compilation, evaluation.

Pure apart from `load_sslauth` reading the file: no sockets, no TLS. A file is parsed once, when
the configuration snapshot is built; one bad line refuses the whole file (`RuleFileError` with
`file:line`). Semantics: SPEC §4.4 and domain/NOTES.md E.2-E.5.

Layout of a file
* Lines are split on "\\n" only (a trailing "\\r" is dropped), so line numbers are an editor's.
* A line with `*` in column 1, or whose first non-blank character is `#`, is a comment; blank
  lines are ignored. Comments and blank lines may sit between continued lines.
* A line whose content ends with `,` continues on the next non-comment line. Any other line
  starts a new entry, which must begin with a statement keyword.
* Statements: `ACCEPT`, `REVOKE`, `REJECT` (= REVOKE), case-insensitive, whole words. Several may
  share a line (`REVOKE /SN=987654 REVOKE /SN=12:34:56 ACCEPT`); a statement runs to the next
  keyword or the end of its entry. Its line number is the line of its keyword.
* Parameters `/KEY=value`, KEY uppercase, one of /CN /OU /O /L /ST /C /SN /SDATE /STIME /EDATE
  /ETIME /USER; separated by `,`, blanks or nothing (`/OU=Marketing/O=TIBCO`).

Where a value ends (choices where TIBCO is silent)
* at a `,`;
* at `/` followed by letters/digits and `=` (any such `/word=`, not only known keys, so that
  `/O=ACME/cn=Joe` and `/O=ACME/XYZ=1` are reported instead of read as part of the value):
  a value may contain `/` only where that shape does not follow;
* at a blank followed by a whole word ACCEPT, REVOKE or REJECT (any case), which starts the next
  statement, as in TIBCO's `REVOKE /SN=987654 REVOKE /SN=12:34:56 ACCEPT` and
  `Accept /OU=Marketing/O=TIBCO revoke`. After /CN /OU /O /L /ST /C /USER, whose values may hold
  blanks, such a word is read as a statement only when it ends the line; followed by more text
  (`/O=Bank Accept Ltd`, `/O=We Accept /OU=x`) it is ambiguous, a company name or a new statement,
  and is an error: end the value with `,` or start the next statement on a new line.
  `/O=Accept Corp` and `/O=REJECTED` are fine: the word must follow a blank and stand alone;
* at the end of the line. Values are trimmed; an empty value is an error. Comments cannot follow
  a statement on the same line (`#` there is part of a value).

Values
* /CN /OU /O /L /ST /C: exact, case-sensitive; a trailing `*` makes the text before it a prefix
  (`/CN=*` requires the attribute to be present, with any value); `*` elsewhere is an error.
* /SN: colons and blanks removed, optional `0x`, hexadecimal digits, compared as an integer with
  the certificate serial (`12:34:56` = `123456` = serial 0x123456). No `*`.
* /SDATE /EDATE: ccyymmdd, a real date. /STIME /ETIME: hhmm, 0000-2359. No `*`. /STIME without
  /SDATE, or /ETIME without /EDATE, is an error (TIBCO ignores them; we refuse them).
* /USER: any non-empty text without `*`; used only when its ACCEPT statement decides.
* A parameter given twice in one statement is an error.

Errors: every bad line of the file is reported (at most `MAX_PROBLEMS`), not only the first; a
statement with a bad line is dropped and the rest of its entry is still read for more problems.
The whole file is refused when any line is bad.
"""

from __future__ import annotations

import heapq
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Literal, NoReturn

from sidecar.errors import RuleFileError, RuleFileProblem, os_reason
from sidecar.tls.peer import PeerCert

Action = Literal["ACCEPT", "REVOKE"]

NAME_KEYS: tuple[str, ...] = ("CN", "OU", "O", "L", "ST", "C")  # subject attributes, OpenSSL short names
OTHER_KEYS: tuple[str, ...] = ("SN", "SDATE", "STIME", "EDATE", "ETIME", "USER")
KNOWN_KEYS = frozenset(NAME_KEYS + OTHER_KEYS)
_ACTIONS: dict[str, Action] = {"ACCEPT": "ACCEPT", "REVOKE": "REVOKE", "REJECT": "REVOKE"}

# Spelled out letter by letter: re.IGNORECASE would also accept look-alikes such as the Kelvin sign.
_KEYWORD = "|".join("".join(f"[{c}{c.lower()}]" for c in word) for word in _ACTIONS)
_KEYWORD_AT = re.compile(rf"({_KEYWORD})(?=[\s,/]|\Z)")
_PARAMETER_AT = re.compile(r"/([A-Za-z][A-Za-z0-9]*)=")
_VALUE_END = re.compile(rf",|/[A-Za-z][A-Za-z0-9]*=|(?<=\s)(?:{_KEYWORD})(?=[\s,/]|\Z)")
_HEX = re.compile(r"[0-9A-Fa-f]+")
_DATE = re.compile(r"[0-9]{8}")
_VALUE_WITH_BLANKS = frozenset((*NAME_KEYS, "USER"))  # where a keyword after a blank is ambiguous
MAX_PROBLEMS = 100  # bad lines reported per file; a file given by mistake (a binary) stays readable
MAX_FILE = 16 * 1024 * 1024  # 100,000 statements are about 5 MB
_TIME = re.compile(r"[0-9]{4}")


@dataclass(frozen=True, slots=True)
class NameCriterion:
    """One subject attribute test: exact value, or prefix when written with a trailing `*`."""

    attribute: str  # CN, OU, O, L, ST or C
    text: str  # the value without its trailing `*`
    prefix: bool = False

    def matches(self, values: tuple[str, ...]) -> bool:
        if self.prefix:
            return any(value.startswith(self.text) for value in values)
        return self.text in values

    def render(self) -> str:
        return f"/{self.attribute}={self.text}{'*' if self.prefix else ''}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Statement:
    action: Action
    names: tuple[NameCriterion, ...] = ()
    serial: int | None = None
    start_date: date | None = None
    start_time: time | None = None  # only with start_date
    end_date: date | None = None
    end_time: time | None = None  # only with end_date
    user: str | None = None
    line: int = field(default=0, compare=False)  # where the keyword is; not part of the rule's meaning

    def hits(self, cert: PeerCert) -> bool:
        """Do the certificate criteria (subject attributes, serial) all match? Dates are not criteria."""
        if self.serial is not None and cert.serial != self.serial:
            return False
        return all(name.matches(cert.subject_values(name.attribute)) for name in self.names)

    def window_failure(self, now: datetime) -> str | None:
        """Why `now` is outside this statement's date window, or None when it is inside."""
        today = now.date()
        minute = time(now.hour, now.minute)
        if self.start_date is not None:
            if self.start_date > today:
                return f"/SDATE={_render_date(self.start_date)} is after today {today.isoformat()}"
            if self.start_date == today and self.start_time is not None and self.start_time > minute:
                return (
                    f"/SDATE={_render_date(self.start_date)} /STIME={_render_time(self.start_time)} "
                    f"is later than now {minute:%H:%M} today"
                )
        if self.end_date is not None:
            if self.end_date < today:
                return f"/EDATE={_render_date(self.end_date)} is before today {today.isoformat()}"
            if self.end_date == today and self.end_time is not None and self.end_time < minute:
                return (
                    f"/EDATE={_render_date(self.end_date)} /ETIME={_render_time(self.end_time)} "
                    f"is earlier than now {minute:%H:%M} today"
                )
        return None

    def window_end(self, now: datetime) -> datetime | None:
        """The first instant outside this statement's window at its end, on `now`'s clock; None: no /EDATE.

        /EDATE alone allows the whole day; /ETIME allows its whole minute (a check at 14:30:59 against
        /ETIME=1430 passes), so the window ends at the next day, or at the next minute.
        """
        if self.end_date is None:
            return None
        if self.end_time is None:
            end = datetime.combine(self.end_date + timedelta(days=1), time())
        else:
            end = datetime.combine(self.end_date, self.end_time) + timedelta(minutes=1)
        return end.replace(tzinfo=now.tzinfo)

    def _criteria_parts(self) -> list[str]:
        parts = [name.render() for name in self.names]
        if self.serial is not None:
            parts.append(f"/SN={self.serial:X}")
        return parts

    def criteria(self) -> str:
        """The certificate criteria as written in a file: `/OU=ACCT*/O=ACME`."""
        return "".join(self._criteria_parts())

    def render(self) -> str:
        parts = self._criteria_parts()
        if self.start_date is not None:
            parts.append(f"/SDATE={_render_date(self.start_date)}")
        if self.start_time is not None:
            parts.append(f"/STIME={_render_time(self.start_time)}")
        if self.end_date is not None:
            parts.append(f"/EDATE={_render_date(self.end_date)}")
        if self.end_time is not None:
            parts.append(f"/ETIME={_render_time(self.end_time)}")
        if self.user is not None:
            parts.append(f"/USER={self.user}")
        return " ".join([self.action, ", ".join(parts)]) if parts else self.action


@dataclass(frozen=True, slots=True)
class SslauthResult:
    allowed: bool
    rule_ref: str | None  # "sslauth.txt:7"; None when no statement decided
    user: str | None  # /USER of the deciding ACCEPT
    detail: str  # for logs and `sidecar explain`
    valid_until: datetime | None = None  # an accepted result: when the deciding ACCEPT's window ends


# Attributes tried, in this order, as the index key of a statement with an exact (non-prefix) value.
_INDEX_ATTRIBUTES = ("CN", "OU", "O", "L", "ST", "C")


@dataclass(frozen=True, slots=True)
class _StatementIndex:
    """Which statements can possibly hit a certificate, in file order, without testing all of them.

    A statement with an exact subject value (e.g. /CN=PARTNER0042) can only hit a certificate that
    has that value, and one with /SN only the certificate with that serial: those are filed under
    the value; the rest (prefixes only, dates only, bare keywords) are always candidates. Merging
    the candidate lists in file order keeps "first hit decides" exact while a 1,000-line file costs
    a few dictionary lookups per connection instead of 1,000 statement tests.
    """

    by_value: dict[tuple[str, str], tuple[int, ...]]
    by_serial: dict[int, tuple[int, ...]]
    always: tuple[int, ...]
    attributes: tuple[str, ...]  # the attributes that appear in `by_value` keys

    @classmethod
    def build(cls, statements: tuple[Statement, ...]) -> _StatementIndex:
        by_value: dict[tuple[str, str], list[int]] = {}
        by_serial: dict[int, list[int]] = {}
        always: list[int] = []
        for position, statement in enumerate(statements):
            exact = {name.attribute: name.text for name in statement.names if not name.prefix}
            attribute = next((a for a in _INDEX_ATTRIBUTES if a in exact), None)
            if attribute is not None:
                by_value.setdefault((attribute, exact[attribute]), []).append(position)
            elif statement.serial is not None:
                by_serial.setdefault(statement.serial, []).append(position)
            else:
                always.append(position)
        return cls(
            by_value={key: tuple(value) for key, value in by_value.items()},
            by_serial={key: tuple(value) for key, value in by_serial.items()},
            always=tuple(always),
            attributes=tuple(a for a in _INDEX_ATTRIBUTES if any(key[0] == a for key in by_value)),
        )

    def candidates(self, cert: PeerCert) -> Iterator[int]:
        lists = [self.always]
        serial_hits = self.by_serial.get(cert.serial)
        if serial_hits:
            lists.append(serial_hits)
        for attribute in self.attributes:
            for value in cert.subject_values(attribute):
                hits = self.by_value.get((attribute, value))
                if hits:
                    lists.append(hits)
        if len(lists) == 1:
            return iter(lists[0])
        return heapq.merge(*lists)


@dataclass(frozen=True, slots=True)
class RuleSet:
    filename: str
    statements: tuple[Statement, ...] = ()
    _index: _StatementIndex = field(init=False, repr=False, compare=False)
    # Can an accepted session reach the end of a window? Without /EDATE anywhere, never: a live
    # session's time limit then needs no evaluation of the file.
    has_end_dates: bool = field(init=False, repr=False, compare=False)
    # Some statement has a date window (/SDATE or /EDATE): the same certificate may get another
    # answer at another time. Without one, `evaluate` depends on the certificate alone.
    dated: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", _StatementIndex.build(self.statements))
        object.__setattr__(self, "has_end_dates", any(s.end_date is not None for s in self.statements))
        dated = any(s.start_date is not None or s.end_date is not None for s in self.statements)
        object.__setattr__(self, "dated", dated)

    def evaluate(self, cert: PeerCert | None, now: datetime) -> SslauthResult:
        """First statement whose criteria hit decides; `now` is the server's local date and time."""
        if cert is None:
            return SslauthResult(True, None, None, "no verified client certificate: SSLAUTH not applied")
        statements = self.statements
        for position in self._index.candidates(cert):
            statement = statements[position]
            if not statement.hits(cert):
                continue
            ref = f"{self.filename}:{statement.line}"
            failure = statement.window_failure(now)
            if failure is not None:
                return SslauthResult(False, ref, None, f"{statement.action} at {ref}: {failure}")
            criteria = statement.criteria()
            matched = f"matched {criteria}" if criteria else "matched every certificate (no criteria)"
            if statement.action == "ACCEPT":
                as_user = f" (user {statement.user})" if statement.user is not None else ""
                detail = f"ACCEPT at {ref} {matched}{as_user}"
                return SslauthResult(True, ref, statement.user, detail, statement.window_end(now))
            return SslauthResult(False, ref, None, f"REVOKE at {ref} {matched}")
        return SslauthResult(True, None, None, "no statement matched: accepted")

    def render(self) -> str:
        return "".join(statement.render() + "\n" for statement in self.statements)


def load_sslauth(path: str | os.PathLike[str], display_name: str | None = None) -> RuleSet:
    """Read and parse a file; references name it `display_name` (default: the path as given)."""
    filename = display_name or os.fspath(path)
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE + 1)
    except OSError as exc:
        raise RuleFileError.single(filename, 0, f"cannot read the file: {os_reason(exc)}") from None
    if len(data) > MAX_FILE:
        raise RuleFileError.single(filename, 0, f"larger than {MAX_FILE // (1024 * 1024)} MB: not an SSLAUTH file")
    try:
        text = data.decode("utf-8-sig")  # a BOM from a Windows editor is not content
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RuleFileError.single(filename, line, "not valid UTF-8 text") from None
    return parse_sslauth(text, filename)


def parse_sslauth(text: str, filename: str) -> RuleSet:
    return RuleSet(filename, _Parser(filename).parse(text))


def _render_date(day: date) -> str:
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"  # not strftime: %Y does not pad years < 1000


def _render_time(moment: time) -> str:
    return f"{moment.hour:02d}{moment.minute:02d}"


class _InvalidValue(Exception):
    """A parameter value that breaks its format; the parser adds file and line."""


def _name_criterion(key: str, value: str) -> NameCriterion:
    if "*" in value[:-1]:
        raise _InvalidValue(f"/{key}={value}: * is only allowed at the end of a value")
    if value.endswith("*"):
        return NameCriterion(key, value[:-1], prefix=True)
    return NameCriterion(key, value)


def _serial(value: str) -> int:
    digits = value.replace(":", "")
    digits = "".join(digits.split())
    if digits[:2] in ("0x", "0X"):
        digits = digits[2:]
    if not _HEX.fullmatch(digits):
        raise _InvalidValue(f"/SN={value}: a serial number is hexadecimal digits, optionally with ':'")
    return int(digits, 16)


def _date(key: str, value: str) -> date:
    if not _DATE.fullmatch(value):
        raise _InvalidValue(f"/{key}={value}: expected a date as ccyymmdd (8 digits)")
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        raise _InvalidValue(f"/{key}={value}: not a real date") from None


def _time(key: str, value: str) -> time:
    if not _TIME.fullmatch(value) or int(value[:2]) > 23 or int(value[2:]) > 59:
        raise _InvalidValue(f"/{key}={value}: expected a time as hhmm, 0000 to 2359")
    return time(int(value[:2]), int(value[2:]))


class _Draft:
    """A statement being read; mutable only while its parameters arrive, then frozen by finish()."""

    __slots__ = (
        "action",
        "end_date",
        "end_time",
        "keys_at",
        "line",
        "names",
        "serial",
        "start_date",
        "start_time",
        "user",
    )

    def __init__(self, action: Action, line: int) -> None:
        self.action = action
        self.line = line
        self.keys_at: dict[str, int] = {}  # parameter -> line it was given on
        self.names: list[NameCriterion] = []
        self.serial: int | None = None
        self.start_date: date | None = None
        self.start_time: time | None = None
        self.end_date: date | None = None
        self.end_time: time | None = None
        self.user: str | None = None

    def finish(self) -> Statement:
        return Statement(
            action=self.action,
            names=tuple(self.names),
            serial=self.serial,
            start_date=self.start_date,
            start_time=self.start_time,
            end_date=self.end_date,
            end_time=self.end_time,
            user=self.user,
            line=self.line,
        )


class _LineError(Exception):
    """One bad line; the parser records it and goes on with the next line."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class _Parser:
    __slots__ = ("broken", "draft", "filename", "problems", "statements")

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.statements: list[Statement] = []
        self.draft: _Draft | None = None
        self.broken = False  # the current entry had a bad line: its statement is dropped
        self.problems: list[RuleFileProblem] = []

    def fail(self, line: int, message: str) -> NoReturn:
        raise _LineError(line, message)

    def record(self, error: _LineError) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(RuleFileProblem(self.filename, error.line, error.message))
        elif len(self.problems) == MAX_PROBLEMS:
            self.problems.append(
                RuleFileProblem(self.filename, error.line, f"more bad lines from here on (only {MAX_PROBLEMS} shown)")
            )

    def parse(self, text: str) -> tuple[Statement, ...]:
        continuing = False
        for number, raw in enumerate(text.split("\n"), start=1):
            line = raw.removesuffix("\r")
            if line.startswith("*") or line.lstrip().startswith("#") or not line.strip():
                continue
            if not continuing:
                try:
                    self.close_statement()
                except _LineError as error:
                    self.record(error)
                self.broken = False
            try:
                self.scan(line, number)
            except _LineError as error:
                self.record(error)
                self.broken = True
            continuing = line.rstrip().endswith(",")
        try:
            self.close_statement()
        except _LineError as error:
            self.record(error)
        if self.problems:
            raise RuleFileError(self.problems)
        return tuple(self.statements)

    def close_statement(self) -> None:
        draft, self.draft = self.draft, None
        if draft is None:
            return
        for time_key, date_key in (("STIME", "SDATE"), ("ETIME", "EDATE")):
            if time_key in draft.keys_at and date_key not in draft.keys_at:
                self.fail(
                    draft.keys_at[time_key],
                    f"/{time_key} needs /{date_key} in the same statement (it is only checked on that day)",
                )
        if not self.broken:
            self.statements.append(draft.finish())

    def scan(self, line: str, number: int) -> None:
        pos = 0
        while True:
            while pos < len(line) and (line[pos].isspace() or line[pos] == ","):
                pos += 1
            if pos >= len(line):
                return
            keyword = _KEYWORD_AT.match(line, pos)
            if keyword is not None:
                try:
                    self.close_statement()
                except _LineError as error:
                    self.record(error)
                self.broken = False
                self.draft = _Draft(_ACTIONS[keyword.group(1).upper()], number)
                pos = keyword.end()
            elif line[pos] == "/":
                pos = self.parameter(line, pos, number)
            else:
                word = line[pos:].split()[0][:30]
                self.fail(number, f"unexpected text {word!r}: expected ACCEPT, REVOKE, REJECT or /PARAMETER=value")

    def parameter(self, line: str, pos: int, number: int) -> int:
        """Read one `/KEY=value` starting at `pos`; return where the next token may start."""
        start = _PARAMETER_AT.match(line, pos)
        if start is None:
            self.fail(number, f"expected /PARAMETER=value, found {line[pos:].split()[0][:30]!r}")
        key = start.group(1)
        if key not in KNOWN_KEYS:
            if key.upper() in KNOWN_KEYS:
                self.fail(number, f"parameters must be uppercase: /{key}")
            self.fail(number, f"unknown parameter /{key} (known: /{' /'.join(NAME_KEYS + OTHER_KEYS)})")
        draft = self.draft
        if draft is None:
            self.fail(
                number,
                f"/{key} outside a statement: an entry starts with ACCEPT, REVOKE or REJECT "
                "(or the previous line ends with ',')",
            )
        if key in draft.keys_at:
            self.fail(number, f"/{key} given twice in the statement of line {draft.line}")
        end = _VALUE_END.search(line, start.end())
        value_end = len(line) if end is None else end.start()
        value = line[start.end() : value_end].strip()
        if not value:
            self.fail(number, f"empty value for /{key}")
        if end is not None and key in _VALUE_WITH_BLANKS and end.group(0)[0] not in ",/" and line[end.end() :].strip():
            word = end.group(0)
            self.fail(
                number,
                f"/{key}={value} {word}: a value cannot contain the word {word.upper()}; to start a new "
                "statement, end the value with ',' or begin a new line",
            )
        draft.keys_at[key] = number
        try:
            if key in NAME_KEYS:
                draft.names.append(_name_criterion(key, value))
            elif "*" in value:
                self.fail(number, f"/{key}={value}: generic * is not allowed on /{key}")
            elif key == "SN":
                draft.serial = _serial(value)
            elif key == "SDATE":
                draft.start_date = _date(key, value)
            elif key == "STIME":
                draft.start_time = _time(key, value)
            elif key == "EDATE":
                draft.end_date = _date(key, value)
            elif key == "ETIME":
                draft.end_time = _time(key, value)
            else:
                draft.user = value
        except _InvalidValue as exc:
            self.fail(number, str(exc))
        return value_end
