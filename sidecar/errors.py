"""Error types. Denials are never errors: they are `policy.decision.Decision` values."""

from __future__ import annotations

from dataclasses import dataclass


class SidecarError(Exception):
    """Root of every error sidecar raises on purpose."""


@dataclass(frozen=True, slots=True)
class Issue:
    """One configuration problem, located by its YAML path or by `file:line`."""

    where: str
    message: str
    msg_id: str | None = None  # a Transfer CFT message id when the problem is one CFT names (CFTP20F)

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class ConfigError(SidecarError):
    """A configuration that cannot be used; carries every problem found, not just the first."""

    def __init__(self, issues: list[Issue] | tuple[Issue, ...]) -> None:
        self.issues: tuple[Issue, ...] = tuple(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


class RuleFileError(SidecarError):
    """A rule file (SSLAUTH) refused whole because of one bad line."""

    def __init__(self, file: str, line: int, message: str) -> None:
        self.file = file
        self.line = line
        self.message = message
        super().__init__(f"{file}:{line}: {message}")


class DnPatternError(SidecarError):
    """A DNUSER/DNISSUER pattern that does not follow the Transfer CFT grammar."""
