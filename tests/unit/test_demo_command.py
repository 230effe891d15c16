"""How `sidecar demo` names the program in the commands it prints: what a shell would run as printed."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from sidecar.demo import sidecar_command


def _program(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    program = folder / "sidecar"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    return program


def test_bare_name_only_when_path_finds_this_very_program(tmp_path: Path) -> None:
    program = _program(tmp_path / "venv bin")
    assert sidecar_command(str(program), search_path=str(program.parent)) == "sidecar"
    assert sidecar_command("sidecar", search_path=str(program.parent)) == "sidecar"  # as typed at a prompt


def test_full_path_when_path_finds_no_sidecar_or_another_one(tmp_path: Path) -> None:
    program = _program(tmp_path / "venv bin")
    other = _program(tmp_path / "elsewhere")
    (tmp_path / "empty").mkdir()
    for search_path in (str(tmp_path / "empty"), str(other.parent)):
        printed = sidecar_command(str(program), search_path=search_path)
        assert shlex.split(printed) == [str(program)]  # quoted: the folder has a space


def test_python_dash_m_when_started_that_way() -> None:
    expected = [sys.executable, "-m", "sidecar"]
    assert shlex.split(sidecar_command(str(Path("sidecar") / "__main__.py"))) == expected
    assert shlex.split(sidecar_command("-c")) == expected
