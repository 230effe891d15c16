"""systemd notification (sd_notify): tell the service manager when `sidecar run` is ready, reloading, stopping.

The protocol (sd_notify(3)). `$NOTIFY_SOCKET` names an `AF_UNIX` datagram socket: a filesystem
path, or `@name` for a socket in the abstract namespace (the `@` stands for the leading NUL byte);
unset means "not started by systemd with Type=notify" and nothing is sent. Each state change is one
datagram of newline-separated `KEY=VALUE` assignments:

* `READY=1` once every listener is bound, just after the `ready` log line. With `Type=notify`,
  `systemctl start` returns (and units ordered after sidecar start) only then.
* `RELOADING=1` with `MONOTONIC_USEC=<CLOCK_MONOTONIC in µs>` when a reload begins, then
  `READY=1` when it ends. systemd 253 and later match the timestamp against the reload request it
  made; without it a reload can be taken for stale. `READY=1` follows a refused reload too: the
  process serves on with the configuration it had (the refusal itself reaches `systemctl reload`
  through `ExecReload=sidecar reload`, which exits non-zero).
* `STOPPING=1` when the drain begins (SIGTERM/SIGINT).
* `STATUS=…` alongside, a line for `systemctl status`.

The messages are built by plain functions (bytes in, nothing else); `Notifier` owns the socket.
A reload is reported once however many requests overlap (SIGHUP and `POST /reload` at the same
moment): `RELOADING=1` when the first begins, `READY=1` when the last ends, and never `READY=1`
after `STOPPING=1`. A notification that cannot be sent never stops the proxy: it is logged once.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Iterator, Mapping

from . import logs


def notify_address(value: str | None) -> str | None:
    """The socket address `$NOTIFY_SOCKET` names, in the form `socket.connect` takes; None when there is none.

    Only what sd_notify(3) defines for AF_UNIX: an absolute path, or `@name` (abstract). Anything
    else (unset, empty, a relative path, `vsock:…`) means no notification.
    """
    if not value:
        return None
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def message(**assignments: str | int) -> bytes:
    """One notification datagram: `KEY=VALUE` lines (keys upper-case, values on one line)."""
    lines = []
    for key, value in assignments.items():
        text = str(value).replace("\n", " ")
        lines.append(f"{key.upper()}={text}\n")
    return "".join(lines).encode("utf-8")


def ready_message(status: str) -> bytes:
    return message(READY=1, STATUS=status)


def reloading_message(monotonic_usec: int) -> bytes:
    return message(RELOADING=1, MONOTONIC_USEC=monotonic_usec, STATUS="reloading the configuration")


def stopping_message() -> bytes:
    return message(STOPPING=1, STATUS="draining connections")


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds: the clock systemd compares `MONOTONIC_USEC` with."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends the notifications of one `sidecar run` process; does nothing without `$NOTIFY_SOCKET`."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._socket: socket.socket | None = None
        self._reloads = 0  # reloads in progress (they may overlap: SIGHUP and POST /reload)
        self._stopping = False
        self._failed = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Notifier:
        return cls(notify_address(environ.get("NOTIFY_SOCKET")))

    def ready(self, status: str = "serving") -> None:
        self.send(ready_message(status))

    @contextlib.contextmanager
    def reloading(self) -> Iterator[None]:
        """Around one reload: RELOADING=1 when the first overlapping reload begins, READY=1 when the last ends."""
        self._reloads += 1
        if self._reloads == 1 and not self._stopping:
            self.send(reloading_message(monotonic_usec()))
        try:
            yield
        finally:
            self._reloads -= 1
            if self._reloads == 0 and not self._stopping:
                self.send(ready_message("serving"))

    def stopping(self) -> None:
        self._stopping = True
        self.send(stopping_message())

    def send(self, datagram: bytes) -> None:
        if self.address is None:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # Never wait on the service manager from the event loop: a full queue drops the message.
                self._socket.setblocking(False)
            self._socket.sendto(datagram, self.address)
        except OSError as exc:
            if not self._failed:  # once: a missing socket would otherwise log at every reload
                self._failed = True
                logs.event("notify_failed", logging.WARNING, socket=self.address.replace("\0", "@"),
                           error=f"{exc.strerror or exc}")  # fmt: skip

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


__all__ = [
    "Notifier",
    "message",
    "monotonic_usec",
    "notify_address",
    "ready_message",
    "reloading_message",
    "stopping_message",
]
