"""The Notifier against a real AF_UNIX datagram socket standing in for systemd's."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.notify import Notifier, monotonic_usec

from ..support.notify import bind_manager


def _assignments(datagram: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.decode().splitlines())


@pytest.fixture(params=["path", "abstract"])
def manager(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket and the $NOTIFY_SOCKET value that names it."""
    sock, value = bind_manager(request.param, tmp_path, timeout=5)
    yield sock, value
    sock.close()


def _pending(sock: socket.socket) -> list[dict[str, str]]:
    sock.setblocking(False)
    received = []
    try:
        while True:
            received.append(_assignments(sock.recv(4096)))
    except BlockingIOError:
        return received
    finally:
        sock.settimeout(5)


def _states(sock: socket.socket) -> list[str]:
    """The state each pending datagram announces (its first assignment's key)."""
    return [next(iter(assignments)) for assignments in _pending(sock)]


def test_ready_reload_stopping(manager: tuple[socket.socket, str]) -> None:
    sock, value = manager
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": value})
    try:
        notifier.ready()
        assert _assignments(sock.recv(4096))["READY"] == "1"
        before = monotonic_usec()
        with notifier.reloading():
            reloading = _assignments(sock.recv(4096))
            assert reloading["RELOADING"] == "1"
            assert before <= int(reloading["MONOTONIC_USEC"]) <= monotonic_usec()
            assert _pending(sock) == []  # READY only once the reload is over
        assert _assignments(sock.recv(4096))["READY"] == "1"
        notifier.stopping()
        assert _assignments(sock.recv(4096))["STOPPING"] == "1"
    finally:
        notifier.close()


def test_overlapping_reloads_are_one_reload(manager: tuple[socket.socket, str]) -> None:
    sock, value = manager
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": value})
    try:
        with notifier.reloading():
            with notifier.reloading():
                pass
            assert _states(sock) == ["RELOADING"]
        assert _states(sock) == ["READY"]
    finally:
        notifier.close()


def test_no_ready_after_stopping(manager: tuple[socket.socket, str]) -> None:
    sock, value = manager
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": value})
    try:
        with notifier.reloading():
            notifier.stopping()
        assert _states(sock) == ["RELOADING", "STOPPING"]
    finally:
        notifier.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier.from_environment({})
    assert notifier.address is None
    notifier.ready()
    with notifier.reloading():
        pass
    notifier.stopping()
    notifier.close()


def test_a_socket_that_is_gone_does_not_stop_the_proxy(tmp_path: Path) -> None:
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    notifier.ready()  # logged once, not raised
    notifier.stopping()
    notifier.close()
