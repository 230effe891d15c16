"""Error types. Denials are never errors: they are `policy.decision.Decision` values."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# One problem is one line an operator reads in a terminal or a log: never more than this, whatever
# the input (a 10 MB scalar, a binary file given as a certificate).
MAX_LINE = 300
# Problems listed at most (then one line says how many more): a file given by mistake, with
# thousands of unknown keys, still gives a readable answer and a bounded /reload body.
MAX_ISSUES = 200


def bounded(text: str, limit: int = MAX_LINE) -> str:
    """`text` on one line, cut to `limit` characters with `…` when longer."""
    flat = " ".join(text.split()) if ("\n" in text or "\r" in text or "\t" in text) else text
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def os_reason(exc: OSError) -> str:
    """Why a file could not be read, in words (`no such file`), without `[Errno 2]` and the path."""
    reasons = {2: "no such file", 13: "permission denied", 21: "it is a folder", 20: "a parent is not a folder"}
    return reasons.get(exc.errno or 0) or (exc.strerror or "read error").lower()


class SidecarError(Exception):
    """Root of every error sidecar raises on purpose."""


@dataclass(frozen=True, slots=True)
class Issue:
    """One configuration problem, located by its YAML path or by `file:line`.

    `line` is the line of the configuration file the path was read from, when known; it is shown
    after the message (`profiles[0].verify: must be one of … (line 12)`) so that the path, which
    names the setting, stays first.
    """

    where: str
    message: str
    msg_id: str | None = None  # a Transfer CFT message id when the problem is one CFT names (CFTP20F)
    line: int | None = None  # None: not located yet; 0: not a line of the configuration file

    def __post_init__(self) -> None:
        # Bounded at the source, so every consumer (check, log lines, /reload JSON) gets short text.
        object.__setattr__(self, "where", bounded(self.where, 120))
        object.__setattr__(self, "message", bounded(self.message))

    def __str__(self) -> str:
        suffix = f" (line {self.line})" if self.line else ""  # 0: a line of another file is already named
        head = f"{self.where}: " if self.where else ""
        return head + bounded(self.message, MAX_LINE - len(head) - len(suffix)) + suffix


class ConfigError(SidecarError):
    """A configuration that cannot be used; carries every problem found, not just the first."""

    def __init__(self, issues: Iterable[Issue], *, warnings: Iterable[Issue] = ()) -> None:
        self.issues: tuple[Issue, ...] = _at_most(tuple(issues), "problems")
        self.warnings: tuple[Issue, ...] = _at_most(tuple(warnings), "warnings")  # shown, never decisive
        super().__init__("\n".join(str(issue) for issue in self.issues))


def _at_most(issues: tuple[Issue, ...], what: str) -> tuple[Issue, ...]:
    if len(issues) <= MAX_ISSUES:
        return issues
    return (*issues[:MAX_ISSUES], Issue("", f"{len(issues) - MAX_ISSUES} more {what} not shown"))


@dataclass(frozen=True, slots=True)
class RuleFileProblem:
    """One bad line of a rule file; line 0 means the file as a whole (unreadable, not text)."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return bounded(f"{self.file}:{self.line}: {self.message}")


class RuleFileError(SidecarError):
    """A rule file (SSLAUTH) refused whole; carries every bad line found, in file order.

    `file`, `line` and `message` are those of the first problem, for callers that show one.
    """

    def __init__(self, problems: Iterable[RuleFileProblem]) -> None:
        self.problems: tuple[RuleFileProblem, ...] = tuple(problems)
        assert self.problems, "a RuleFileError needs at least one problem"
        first = self.problems[0]
        self.file = first.file
        self.line = first.line
        self.message = first.message
        super().__init__("\n".join(str(problem) for problem in self.problems))

    @classmethod
    def single(cls, file: str, line: int, message: str) -> RuleFileError:
        return cls([RuleFileProblem(file, line, message)])


class DnPatternError(SidecarError):
    """A DNUSER/DNISSUER pattern that does not follow the Transfer CFT grammar."""
