"""The import report (domain/CFTUTIL.md §9): one line per fact an operator must know.

`FILE:LINE: LEVEL: CMD ID[/direct]: message`, LINE being the first line of the command at fault.
Levels form a closed set:
* `error`   — something that was in the CFT configuration is missing or wrong in the result and
              needs a decision (an unresolved reference, no backend, an id sidecar cannot use);
* `warning` — a value dropped, translated or guessed (a cipher CFT offers and sidecar cannot, an
              inferred default), or a definition that overrides or deletes nothing;
* `ignored` — one line per imported object listing every parameter that means nothing in sidecar,
              with its value (passwords as `***`);
* `skipped` — an object that is not carried over at all, and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Level = Literal["error", "warning", "ignored", "skipped"]
LEVELS: tuple[Level, ...] = ("error", "warning", "ignored", "skipped")


@dataclass(frozen=True, slots=True)
class Note:
    file: str
    line: int | None  # None: about the result as a whole
    level: Level
    subject: str  # "CFTSSL BRSRV/server", "CFTPART LILLE"; "" when about no one object
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        subject = f"{self.subject}: " if self.subject else ""
        return f"{where}: {self.level}: {subject}{self.message}"
