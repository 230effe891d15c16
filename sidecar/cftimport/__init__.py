"""`sidecar import-cft`: Transfer CFT configuration (CFTUTIL/PKIUTIL commands) to sidecar's YAML.

Pure from text to text: `lexer` and `parser` read the command language (domain/CFTUTIL.md §2-3),
`mapping` builds the configuration tree and the report (§4-8), and the result is then read back by
`config.parse_config`, the loader of every hand-written file, whose findings join the report
pointing at the CFT command they come from. `command` is the I/O shell (files, exit codes).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import parse_config
from ..errors import ConfigError
from .mapping import Imported, Origin, map_commands
from .parser import Command, SyntaxProblem, parse_commands
from .report import Note

__all__ = ["ImportResult", "Note", "SyntaxProblem", "import_cft", "loader_notes", "render_yaml"]

HEADER = "# Imported from Transfer CFT by `sidecar import-cft`; what did not carry over is in its report.\n"
_ITEM = re.compile(r"(?:profiles|listeners|partners)\[\d+\]|pki\.[^.\s]+")


@dataclass(frozen=True, slots=True)
class ImportResult:
    """Either `problems` (syntax errors: nothing to write) or the YAML text and its report."""

    problems: tuple[SyntaxProblem, ...] = ()
    yaml_text: str | None = None
    tree: dict[str, Any] = field(default_factory=dict)
    notes: tuple[Note, ...] = ()


def render_yaml(tree: dict[str, Any]) -> str:
    """The tree as YAML: keys in the mapping's order; safe_dump quotes what YAML would misread (NO, 1762)."""
    # libyaml's emitter when PyYAML has it: the same text, a few times faster on thousands of partners.
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    body = yaml.dump(
        tree, Dumper=dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1_000_000
    )
    return HEADER + body


def loader_notes(yaml_text: str, output: Path, origins: dict[str, Origin]) -> list[Note]:
    """What the configuration loader finds in the result, each pointing at the CFT command it came from."""
    try:
        parse_config(yaml_text, output)
    except ConfigError as exc:
        notes = []
        for issue in exc.issues:
            match = _ITEM.match(issue.where)
            origin = origins.get(match.group()) if match else None
            text = str(dataclasses.replace(issue, line=None))  # the line is the note's, not the message's
            if origin is not None:
                notes.append(Note(origin.file, origin.line, "error", origin.subject, text))
            else:
                notes.append(Note(output.name, issue.line or None, "error", "", text))
        return notes
    return []


def import_cft(sources: Sequence[tuple[str, str]], *, backend: str | None = None,
               output: Path = Path("sidecar.yaml")) -> ImportResult:  # fmt: skip
    """Import the (file name, text) pairs, in order; `output` is where the YAML will live (for the loader)."""
    commands: list[Command] = []
    problems: list[SyntaxProblem] = []
    for name, text in sources:
        parsed = parse_commands(text, name)
        commands.extend(parsed.commands)
        problems.extend(parsed.problems)
    if problems:
        return ImportResult(problems=tuple(problems))
    imported: Imported = map_commands(commands, backend)
    yaml_text = render_yaml(imported.tree)
    notes = [*imported.notes, *loader_notes(yaml_text, output, imported.origins)]
    order = {name: i for i, (name, _) in enumerate(sources)}
    notes.sort(key=lambda note: (order.get(note.file, len(order)), note.line or 0))  # stable: file, then line
    return ImportResult(yaml_text=yaml_text, tree=imported.tree, notes=tuple(notes))
