"""`sidecar --version`, and `run`/`check` refusing to start on a binding that lacks what the TLS engine uses."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from OpenSSL import SSL

import sidecar

from ..support.env import Pki, base_config

SIDECAR = [sys.executable, "-m", "sidecar"]


def test_version_names_sidecar_the_tls_library_the_binding_and_python() -> None:
    result = subprocess.run([*SIDECAR, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 5, result.stdout
    assert lines[0] == f"sidecar {sidecar.__version__}"
    # The OpenSSL pyOpenSSL drives (bundled with cryptography), not the system's libssl.
    assert lines[1].startswith(SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode() + " ")
    assert lines[2] == f"pyOpenSSL {importlib.metadata.version('pyOpenSSL')}"
    assert lines[3] == f"cryptography {importlib.metadata.version('cryptography')}"
    assert lines[4].startswith(f"Python {platform.python_version()}")


# A release that renamed one `lib` function and one private method of `Connection`: both are
# removed before sidecar is imported, then the real command line runs.
_WITHOUT_TWO_BINDINGS = """
import sys
import OpenSSL._util
from OpenSSL import SSL
del OpenSSL._util.lib.SSL_get0_verified_chain
del SSL.Connection._raise_ssl_error
from sidecar.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("command", ["check", "run"])
def test_run_and_check_refuse_to_start_without_a_binding(command: str, pki: Pki, tmp_path: Path) -> None:
    config = tmp_path / "sidecar.yaml"
    config.write_text(yaml.safe_dump(base_config(pki, 9)))
    result = subprocess.run([sys.executable, "-c", _WITHOUT_TWO_BINDINGS, command, "-c", str(config)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    if command == "run":  # `run` logs JSON lines: the refusal is one `start_failed` event
        event = json.loads(line)
        assert event["event"] == "start_failed"
        line = event["error"]
    assert "lib.SSL_get0_verified_chain, Connection._raise_ssl_error missing" in line
    assert f"pyOpenSSL {importlib.metadata.version('pyOpenSSL')}" in line
    assert f"cryptography {importlib.metadata.version('cryptography')}" in line
    assert SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode() in line
    # What to install instead: the ranges sidecar declares (pyproject.toml), floor and bound.
    assert re.search(r"install cryptography>=[\d.]+,<\d+ and pyOpenSSL>=[\d.]+,<\d+ ", line), line
    assert result.stdout == ""


def test_check_passes_the_self_check_on_this_installation(pki: Pki, tmp_path: Path) -> None:
    config = tmp_path / "sidecar.yaml"
    config.write_text(yaml.safe_dump(base_config(pki, 9)))
    result = subprocess.run([*SIDECAR, "check", "-c", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
