"""`sidecar check` and `run` as real processes on strict and hostile configurations."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.testing.pki import issue

from ..support.env import Pki, base_config
from ..support.hostile import alias_bomb

SIDECAR = [sys.executable, "-m", "sidecar"]


def _write(directory: Path, config: dict[str, Any] | str) -> Path:
    path = directory / "sidecar.yaml"
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False))
    return path


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SIDECAR, "check", "-c", str(path)], capture_output=True, text=True, timeout=60)


def _measured_check(path: Path) -> tuple[int, str, float, float]:
    """`sidecar check` as a process: exit status, stderr, CPU seconds and peak RSS in MB of that process."""
    process = subprocess.Popen([*SIDECAR, "check", "-c", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stderr is not None
    stderr = process.stderr.read().decode()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    process.communicate()
    return process.returncode, stderr, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024  # KB on Linux


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (alias_bomb(), "aliases expand to more than"),
        ("a: '" + "x" * 10_000_000 + "'\n", "a configuration is at most"),
        ("[" * 1_000_000 + "]" * 1_000_000, "invalid YAML"),
        ("a:\n" + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(1500)), "nested more than"),
    ],
    ids=["alias-bomb", "10MB-scalar", "deep-flow", "deep-block"],
)
def test_hostile_yaml_is_refused_quickly_in_little_memory(text: str, expected: str, tmp_path: Path) -> None:
    assert len(alias_bomb()) < 1024
    returncode, stderr, cpu, peak_mb = _measured_check(_write(tmp_path, text))
    print(f"{expected}: {cpu:.2f} s CPU, {peak_mb:.0f} MB")
    assert returncode == 2, stderr
    lines = stderr.splitlines()
    assert len(lines) == 2 and expected in lines[0], lines  # the problem, then the summary
    assert all(len(line) <= 300 for line in lines)
    # SPEC §8.1: under 2 s and 200 MB; the interpreter's start-up (imports) is most of both.
    assert cpu < 2.0, f"{cpu:.2f} s of CPU"
    assert peak_mb < 200, f"{peak_mb:.0f} MB"


def test_check_prints_warnings_and_still_exits_0(pki: Pki, tmp_path: Path) -> None:
    soon = issue(pki.root, "/CN=localhost", server=True, days=(-10, 20))
    cert, key = soon.write(tmp_path, "soon")
    config = base_config(pki, 9)
    config["pki"]["SRVCERT"] = {"cert": str(cert), "key": str(key)}
    result = _check(_write(tmp_path, config))
    assert result.returncode == 0, result.stderr
    end = soon.cert.not_valid_after_utc.date().isoformat()
    assert result.stderr.splitlines() == [f"warning: pki.SRVCERT: expires {end} (in 19 days) (line 4)"]
    assert "ok" in result.stdout


def test_check_reports_errors_and_warnings_together(pki: Pki, tmp_path: Path) -> None:
    config = base_config(pki, 9)
    config["profiles"][0]["ciphlist"] = [49199, 1234]  # EC key, RSA-only suite: a warning; 1234: an error
    result = _check(_write(tmp_path, config))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0] == "error: profiles[0].ciphlist[1]: unknown cipher suite 1234 (line 16)"
    assert len(lines) == 2 and lines[1].endswith("1 problem(s)")
    # a profile that does not compile gives no warning about its suites: one problem at a time there


def test_a_duplicate_key_fails_check_with_both_lines(pki: Pki, tmp_path: Path) -> None:
    text = yaml.safe_dump(base_config(pki, 9), sort_keys=False)
    text = text.replace("  verify: required\n", "  verify: required\n  verify: none\n")
    result = _check(_write(tmp_path, text))
    assert result.returncode == 2
    assert "error: profiles[0].verify: given twice (lines 13 and 14): keep one" in result.stderr.splitlines()


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "---\n"])
def test_an_empty_file_fails_check_and_run(text: str, tmp_path: Path) -> None:
    path = _write(tmp_path, text)
    result = _check(path)
    assert result.returncode == 2
    assert "the configuration is empty" in result.stderr
    run = subprocess.run([*SIDECAR, "run", "-c", str(path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "the configuration is empty" in json.loads(run.stderr.splitlines()[0])["error"]


def test_run_logs_the_warnings_at_start(pki: Pki, tmp_path: Path) -> None:
    soon = issue(pki.root, "/CN=localhost", server=True, days=(-10, 20))
    cert, key = soon.write(tmp_path, "soon")
    config = base_config(pki, 9)
    config["pki"]["SRVCERT"] = {"cert": str(cert), "key": str(key)}
    process = subprocess.Popen([*SIDECAR, "run", "-c", str(_write(tmp_path, config))],
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert process.stderr is not None
    events: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            events.append(json.loads(line))
            if events[-1]["event"] == "ready":
                break
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    names = [event["event"] for event in events]
    assert "config_warning" in names and names.index("config_warning") < names.index("ready")
    warning = events[names.index("config_warning")]
    assert (warning["level"], warning["path"]) == ("warning", "pki.SRVCERT")
    assert "expires" in warning["warning"]


def _many_values() -> str:
    # The most expensive file the bounds let through, plus duplicate keys: one flow mapping of
    # 74,998 short keys (149,999 values with the mapping and the top key).
    return "x: {" + ",".join(f"k{i % 50}: 1" for i in range(74_998)) + "}\n"


def test_the_largest_file_within_the_bounds_is_read_quickly_in_little_memory(tmp_path: Path) -> None:
    returncode, stderr, cpu, peak_mb = _measured_check(_write(tmp_path, _many_values()))
    print(f"150,000 values: {cpu:.2f} s CPU, {peak_mb:.0f} MB")
    assert returncode == 2
    assert "x.k0: given twice (lines 1 and 1): keep one" in stderr  # each duplicate once per mapping
    assert cpu < 4.0 and peak_mb < 200, (cpu, peak_mb)
    one_more = _write(tmp_path, _many_values().replace("}", ", extra: 1}"))
    assert "holds more than 150,000 values" in _check(one_more).stderr
