"""`sidecar demo` as a real subprocess: the table, the exit status, and the files `--dir` keeps."""

from __future__ import annotations

import os
import re
import shutil
import signal
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
    # A certificate refused in the handshake is named, with why it did not verify.
    assert "Elsewhere CA: depth 0: unable to get local issuer certificate (20)" in result.stdout
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


def _without(folder: Path) -> str:
    """PATH without `folder`: the virtualenv's bin is not on PATH, as after `python -m venv` alone."""
    kept = [entry for entry in os.environ.get("PATH", "").split(os.pathsep) if entry and Path(entry) != folder]
    return os.pathsep.join(kept)


def _printed_commands(process: subprocess.Popen[str]) -> list[str]:
    """The "Try it yourself" lines of a serving demo, read up to "Serving until Ctrl-C."."""
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:
        if line.startswith("Serving until Ctrl-C."):
            return lines
        lines.append(line.rstrip("\n"))
    raise AssertionError(f"the demo ended before serving: {''.join(lines)}")


@pytest.mark.parametrize("started_as", ["console script", "python -m"])
def test_demo_prints_a_sidecar_command_that_runs_as_printed(started_as: str, tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "sidecar"
    if started_as == "console script" and not script.exists():
        pytest.skip("no console script beside this Python (sidecar not installed in its environment)")
    demo = [str(script), "demo"] if started_as == "console script" else [*SIDECAR, "demo"]
    env = dict(_env(), PATH=_without(script.parent))
    if shutil.which("sidecar", path=env["PATH"]) is not None:
        pytest.skip("another `sidecar` is on PATH")
    process = subprocess.Popen([*demo, "--dir", str(tmp_path / "demo")], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        printed = [line.strip() for line in _printed_commands(process) if " explain " in line]
        assert len(printed) == 1, printed
        # Pasted into a shell whose PATH has no `sidecar`: it runs, and explains an accepted client.
        result = subprocess.run(printed[0], shell=True, cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert result.returncode == 0, f"{printed[0]}\n{result.stdout}{result.stderr}"
        assert not printed[0].startswith("sidecar ")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
