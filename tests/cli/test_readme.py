"""The README's two commands, extracted and checked: the test command is what CI runs, and the
demo command runs as written in a fresh copy of the project."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _commands() -> list[str]:
    return re.findall(r"```sh\n(.+?)\n```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_has_the_two_commands_and_ci_runs_the_test_one_verbatim() -> None:
    demo, tests = _commands()[:2]
    assert "sidecar demo --once" in demo
    assert "pytest" in tests
    assert tests in (ROOT / ".ci" / "run").read_text()


def test_readme_demo_command_runs_as_written(tmp_path: Path) -> None:
    demo = _commands()[0]
    copy = tmp_path / "sidecar"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info", "bench"))
    env = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH")}
    result = subprocess.run(demo, shell=True, cwd=copy, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "outcomes as expected" in result.stdout
