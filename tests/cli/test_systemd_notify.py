"""`sidecar run` under systemd Type=notify: a real process, a real datagram socket as the service manager.

READY=1 after the `ready` line; RELOADING=1 (with MONOTONIC_USEC) then READY=1 around every reload,
from SIGHUP or from `sidecar reload` (POST /reload), applied or refused; STOPPING=1 on SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.notify import monotonic_usec

from ..support.env import Pki, base_config
from ..support.notify import bind_manager
from ..support.process import reap

SIDECAR = [sys.executable, "-m", "sidecar"]


@pytest.fixture(params=["path", "abstract"])
def manager(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """The service manager's end: a bound AF_UNIX datagram socket, and the $NOTIFY_SOCKET that names it."""
    sock, value = bind_manager(request.param, tmp_path, timeout=60)
    yield sock, value
    sock.close()


def _receive(sock: socket.socket) -> dict[str, str]:
    return dict(line.split("=", 1) for line in sock.recv(4096).decode().splitlines())


def _nothing_pending(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(60)
    return False


def _events_written_so_far(fd: int) -> list[dict[str, Any]]:
    """The log lines already in the pipe, read without waiting."""
    os.set_blocking(fd, False)
    data = b""
    try:
        while chunk := os.read(fd, 65536):
            data += chunk
    except BlockingIOError:
        pass
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def _reload(admin: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SIDECAR, "reload", "-c", str(config), "--admin", admin],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_ready_reloading_stopping(manager: tuple[socket.socket, str], pki: Pki, tmp_path: Path) -> None:
    sock, notify_socket = manager
    config = base_config(pki, 9)
    config["admin"] = {"listen": "127.0.0.1:0"}
    config_path = tmp_path / "sidecar.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = dict(os.environ, NOTIFY_SOCKET=notify_socket)
    process = subprocess.Popen([*SIDECAR, "run", "-c", str(config_path)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert process.stderr is not None
        # READY=1 comes after the `ready` line: once it is received, that line is already written.
        assert _receive(sock)["READY"] == "1"
        ready = [event for event in _events_written_so_far(process.stderr.fileno()) if event["event"] == "ready"]
        assert len(ready) == 1, "READY=1 was sent before the ready line"
        admin = ready[0]["admin"]

        # SIGHUP: RELOADING=1 stamped with the monotonic clock, then READY=1.
        before = monotonic_usec()
        process.send_signal(signal.SIGHUP)
        reloading = _receive(sock)
        assert reloading["RELOADING"] == "1"
        assert before <= int(reloading["MONOTONIC_USEC"]) <= monotonic_usec()
        assert _receive(sock)["READY"] == "1"

        # `sidecar reload` (ExecReload): the same notifications; 0 when applied.
        result = _reload(admin, config_path)
        assert result.returncode == 0, result.stderr
        assert _receive(sock)["RELOADING"] == "1"
        assert _receive(sock)["READY"] == "1"

        # A refused reload: `sidecar reload` fails (so does `systemctl reload`), and the process,
        # still serving its configuration, is READY again.
        config_path.write_text(yaml.safe_dump({**config, "listeners": [{**config["listeners"][0], "ssl": "NOPE"}]}))
        result = _reload(admin, config_path)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "reload refused" in result.stderr
        assert _receive(sock)["RELOADING"] == "1"
        assert _receive(sock)["READY"] == "1"
        assert _nothing_pending(sock)

        process.send_signal(signal.SIGTERM)
        assert _receive(sock)["STOPPING"] == "1"
        assert process.wait(timeout=30) == 0
        assert _nothing_pending(sock)
    finally:
        reap(process)


def test_run_without_notify_socket_still_serves(pki: Pki, tmp_path: Path) -> None:
    """No $NOTIFY_SOCKET (not under systemd): nothing to send, and nothing breaks."""
    config_path = tmp_path / "sidecar.yaml"
    config_path.write_text(yaml.safe_dump(base_config(pki, 9)))
    env = {key: value for key, value in os.environ.items() if key != "NOTIFY_SOCKET"}
    process = subprocess.Popen([*SIDECAR, "run", "-c", str(config_path)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if json.loads(line)["event"] == "ready":
                break
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        reap(process)
