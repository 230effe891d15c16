"""`sidecar import-cft FILE… [-o OUT] [--backend HOST:PORT]`: the I/O shell around `import_cft`.

Exit 0 when the configuration was written (the report may hold errors and warnings: they are for a
person to read); 2 when an input cannot be read or has a syntax error, or --backend is not an
address: every problem is listed and nothing is written; 1 when the output cannot be written.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

from ..config import parse_address
from . import import_cft
from .report import LEVELS, Note

EXIT_OK = 0
EXIT_WRITE = 1
EXIT_INPUT = 2


def _read(path: Path) -> tuple[str | None, str | None, bool]:
    """(text, problem, read as Latin-1). Not UTF-8: Latin-1, which older CFT hosts commonly write."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"{path}: error: cannot read: {exc.strerror or exc}", False
    try:
        return data.decode("utf-8-sig"), None, False
    except UnicodeDecodeError:
        return data.decode("latin-1"), None, True


def _write(output: Path, text: str) -> str | None:
    """Write atomically (a reader never sees half a file); the problem, if any."""
    directory = output.parent if str(output.parent) else Path(".")
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{output.name}.", dir=directory)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
            os.replace(temporary, output)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError as exc:
        return f"{output}: error: cannot write: {exc.strerror or exc}"
    return None


def import_cft_command(args: argparse.Namespace) -> int:
    files: list[Path] = args.files
    output: Path | None = args.output
    problems: list[str] = []
    backend: str | None = None
    if args.backend is not None:
        try:
            backend = str(parse_address(args.backend))
        except ValueError as exc:
            problems.append(f"--backend: error: {exc}")
    sources: list[tuple[str, str]] = []
    encoding_notes: list[Note] = []
    for path in files:
        text, problem, latin1 = _read(path)
        if problem is not None:
            problems.append(problem)
        elif text is not None:
            sources.append((str(path), text))
            if latin1:
                encoding_notes.append(Note(str(path), None, "warning", "", "not UTF-8: read as Latin-1"))
    result = import_cft(sources, backend=backend, output=(output or Path("sidecar.yaml")).absolute())
    problems.extend(str(problem) for problem in result.problems)
    if problems or result.yaml_text is None:
        for line in problems:
            print(line, file=sys.stderr)
        print(f"import-cft: {len(problems)} problem(s), nothing written", file=sys.stderr)
        return EXIT_INPUT
    notes = [*encoding_notes, *result.notes]
    for note in notes:
        print(note, file=sys.stderr)
    if output is not None:
        problem = _write(output, result.yaml_text)
        if problem is not None:
            print(problem, file=sys.stderr)
            return EXIT_WRITE
    else:
        try:
            sys.stdout.write(result.yaml_text)
            sys.stdout.flush()
        except BrokenPipeError:
            return EXIT_WRITE
    counts = Counter(note.level for note in notes)
    sections = ", ".join(
        f"{key}: {len(result.tree.get(key, ()))}" for key in ("pki", "profiles", "listeners", "partners")
    )
    report = ", ".join(f"{level}: {counts[level]}" for level in LEVELS)
    print(f"import-cft: wrote {output or 'stdout'} ({sections}); report: {report}", file=sys.stderr)
    return EXIT_OK
