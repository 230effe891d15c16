"""`sidecar check` and `sidecar run` as real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..support.env import Pki, base_config
from ..support.process import reap

SIDECAR = [sys.executable, "-m", "sidecar"]


def _write(directory: Path, config: dict[str, Any]) -> Path:
    path = directory / "sidecar.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_check_accepts_a_valid_config(pki: Pki, tmp_path: Path) -> None:
    result = subprocess.run([*SIDECAR, "check", "-c", str(_write(tmp_path, base_config(pki, 9)))],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_check_reports_every_problem_with_its_path(pki: Pki, tmp_path: Path) -> None:
    config = base_config(pki, 9)
    config["profiles"][0]["ciphlist"] = [49199, 1234, "RC4-SHA", 10]
    config["profiles"][0]["rootcid"] = ["NOPE"]
    config["profiles"][0]["colour"] = "blue"
    config["listeners"][0]["backend"] = "nowhere"
    config["limits"]["idle_timeout"] = -1
    result = subprocess.run([*SIDECAR, "check", "-c", str(_write(tmp_path, config))],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2
    errors = result.stderr
    assert "profiles[0].rootcid[0]: unknown pki id 'NOPE'" in errors
    assert "profiles[0].colour: unknown key" in errors
    assert "listeners[0].backend: 'nowhere' is not an address" in errors
    assert "limits.idle_timeout: must be a positive number" in errors


def test_check_reports_cipher_problems_with_their_index(pki: Pki, tmp_path: Path) -> None:
    config = base_config(pki, 9)
    config["profiles"][0]["ciphlist"] = [49199, 1234, 10, 2]
    result = subprocess.run([*SIDECAR, "check", "-c", str(_write(tmp_path, config))],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert "profiles[0].ciphlist[1]: unknown cipher suite 1234" in result.stderr
    assert "profiles[0].ciphlist[2]: cipher suite 10 (TLS_RSA_WITH_3DES_EDE_CBC_SHA) is not available" in result.stderr
    assert "profiles[0].ciphlist[3]: cipher suite 2 (TLS_RSA_WITH_NULL_SHA) offers no encryption" in result.stderr


def test_check_reports_unreadable_files(pki: Pki, tmp_path: Path) -> None:
    config = base_config(pki, 9)
    config["pki"]["SRVCERT"]["key"] = str(tmp_path / "missing.key")
    config["listeners"][0]["sslauth"] = "rules.txt"
    (tmp_path / "rules.txt").write_text("ACCEPT /CN=ok\nACCEPT /cn=bad\n")
    result = subprocess.run([*SIDECAR, "check", "-c", str(_write(tmp_path, config))],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert "pki.SRVCERT.key: cannot read" in result.stderr
    assert "rules.txt:2:" in result.stderr


def test_run_refuses_a_listener_without_its_server_profile_cftp20f(pki: Pki, tmp_path: Path) -> None:
    config = base_config(pki, 9)
    config["listeners"][0]["ssl"] = "MISSING"
    result = subprocess.run([*SIDECAR, "run", "-c", str(_write(tmp_path, config))],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    cftp20f = [line for line in lines if line.get("msg_id") == "CFTP20F"]
    assert cftp20f and cftp20f[0]["msg"] == "CFTP20F CFTSSL direct=server MISSING for CFTPROT PESITSSL _ Not found"
    assert not any(line.get("event") == "ready" for line in lines)


def test_run_refuses_a_client_profile_on_a_listener(pki: Pki, tmp_path: Path) -> None:
    config = base_config(pki, 9)
    config["profiles"][0]["direct"] = "client"
    result = subprocess.run([*SIDECAR, "check", "-c", str(_write(tmp_path, config))],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert "CFTP20F" in result.stderr


def _wait_ready(process: subprocess.Popen[str]) -> dict[str, Any]:
    assert process.stderr is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        event = json.loads(line)
        if event.get("event") == "ready":
            return dict(event)
    raise AssertionError("no ready line")


def test_run_serves_then_stops_cleanly_on_sigterm(pki: Pki, tmp_path: Path) -> None:
    config = base_config(pki, 9)
    process = subprocess.Popen([*SIDECAR, "run", "-c", str(_write(tmp_path, config))],
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        ready = _wait_ready(process)
        host, port = ready["listeners"]["PESITSSL"].rsplit(":", 1)
        assert int(port) > 0
        with socket.create_connection((host, int(port)), timeout=5):
            pass
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        reap(process)


def test_run_exits_1_when_the_port_is_taken(pki: Pki, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = base_config(pki, 9)
        config["listeners"][0]["listen"] = f"127.0.0.1:{taken.getsockname()[1]}"
        result = subprocess.run([*SIDECAR, "run", "-c", str(_write(tmp_path, config))],
                                capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 1
    assert any(json.loads(line).get("event") == "start_failed" for line in result.stderr.splitlines())


def _tls13_ticket_received(pki: Pki, port: int) -> bool:
    context = pki.client_context(pki.client, tls=(ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3), stem="tk")
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"x")
        tls.recv(1)  # tickets arrive after the handshake, before the echo
        session = tls.session
        return bool(session is not None and session.has_ticket)


@pytest.mark.parametrize("tickets", [False, True])
def test_run_sends_tls13_tickets_only_when_a_profile_wants_them(tickets: bool, pki: Pki, tmp_path: Path) -> None:
    echo = socket.socket()
    echo.bind(("127.0.0.1", 0))
    echo.listen()
    config = base_config(pki, echo.getsockname()[1])
    config["profiles"][0]["session_tickets"] = tickets
    env = {key: value for key, value in os.environ.items() if key != "OPENSSL_CONF"}
    process = subprocess.Popen([*SIDECAR, "run", "-c", str(_write(tmp_path, config))],
                               stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        ready = _wait_ready(process)
        port = int(ready["listeners"]["PESITSSL"].rsplit(":", 1)[1])

        def serve_one() -> None:
            connection, _ = echo.accept()
            with connection:
                connection.sendall(connection.recv(1))

        server = threading.Thread(target=serve_one, daemon=True)
        server.start()
        assert _tls13_ticket_received(pki, port) is tickets
        server.join(5)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        echo.close()
        reap(process)
