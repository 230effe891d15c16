"""The service manager's end of systemd's notify protocol, for tests: a real datagram socket."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path


def bind_manager(kind: str, folder: Path, timeout: float) -> tuple[socket.socket, str]:
    """A bound AF_UNIX datagram socket, and the $NOTIFY_SOCKET value that names it (`path` or `abstract`)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if kind == "path":
        path = folder / "notify"
        sock.bind(str(path))
        value = str(path)
    else:
        name = f"sidecar-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        value = "@" + name
    sock.settimeout(timeout)
    return sock, value
