"""`sidecar demo` as a real subprocess: the table, the exit status, and the files `--dir` keeps."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.demo import SHOWCASE

REPO = Path(__file__).resolve().parents[2]
SIDECAR = [sys.executable, "-m", "sidecar"]

# The files `--dir` writes; config.example.yaml names the first six under demo-pki/.
KEPT_FILES = (
    "root-ca.pem",
    "partners-ca.pem",
    "server.pem",
    "server.key",
    "partners.crl",
    "sslauth.txt",
    "config.yaml",
    "sidecar.log",
    *(
        f"client-{stem}.{ext}"
        for stem in ("paris", "paris-old", "paris-crl", "lyon", "paris-root", "untrusted")
        for ext in ("pem", "key")
    ),
)


def _env() -> dict[str, str]:
    # Run from any folder: the package is importable from the checkout, installed or not.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _demo(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SIDECAR, "demo", "--once", *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def _rows(stdout: str) -> dict[str, list[str]]:
    """The table's rows by client: [expected, outcome, reason, rule]."""
    lines = stdout.splitlines()
    start = next(
        i for i, line in enumerate(lines) if re.match(r"^\s+client\s+expected\s+outcome\s+reason\s+rule", line)
    )
    rows: dict[str, list[str]] = {}
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip(" !"))
        rows[cells[0]] = cells[1:]
    return rows


def test_demo_once_shows_every_client_with_the_expected_outcome(tmp_path: Path) -> None:
    result = _demo(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = _rows(result.stdout)
    assert set(rows) == {showcase.label for showcase in SHOWCASE}
    for showcase in SHOWCASE:
        expected, outcome, reason, _rule = rows[showcase.label]
        assert (expected, outcome, reason) == (showcase.expected, showcase.expected, showcase.expected_reason)
    assert rows["revoked-by-serial"][3].startswith("sslauth.txt:")
    assert rows["date-window-over"][3].startswith("sslauth.txt:")
    assert rows["wrong-issuer"][3] == "profiles[0].dnissuer"
    assert f"{len(SHOWCASE)}/{len(SHOWCASE)} outcomes as expected" in result.stdout
    assert re.search(r"Admin: http://127\.0\.0\.1:\d+/stats\s+http://127\.0\.0\.1:\d+/metrics", result.stdout)
    # Only the accepted client reached the backend.
    assert "Backend (plaintext echo): 1 connection(s)" in result.stdout
    # The proxy's JSON log went to its file, not to the terminal.
    assert '"event": "close"' not in result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []  # without --dir nothing lands in the working folder


def test_demo_dir_keeps_files_that_check_accepts(tmp_path: Path) -> None:
    directory = tmp_path / "demo-pki"
    result = _demo(tmp_path, "--dir", str(directory))
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(path.name for path in directory.iterdir()) == sorted(KEPT_FILES)
    assert '"event": "ready"' in (directory / "sidecar.log").read_text(encoding="utf-8")

    check = subprocess.run([*SIDECAR, "check", "-c", str(directory / "config.yaml")], cwd=tmp_path, env=_env(),
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stderr

    # The example configuration names these files under demo-pki/ next to itself.
    example = REPO / "config.example.yaml"
    if not example.exists():
        pytest.skip("no config.example.yaml in this checkout")
    shutil.copy(example, tmp_path / example.name)
    check = subprocess.run([*SIDECAR, "check", "-c", example.name], cwd=tmp_path, env=_env(),
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stderr
