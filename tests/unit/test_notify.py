"""sd_notify messages and $NOTIFY_SOCKET addresses (sd_notify(3)), as pure values."""

from __future__ import annotations

import pytest

from sidecar.notify import message, notify_address, ready_message, reloading_message, stopping_message


@pytest.mark.parametrize(
    ("value", "address"),
    [
        (None, None),
        ("", None),
        ("/run/systemd/notify", "/run/systemd/notify"),
        ("@sidecar/notify", "\0sidecar/notify"),  # abstract namespace: `@` is the leading NUL
        ("@", None),
        ("run/notify", None),  # sd_notify accepts absolute paths only
        ("vsock:2:1234", None),  # not an AF_UNIX socket: not supported, nothing sent
    ],
)
def test_notify_address(value: str | None, address: str | None) -> None:
    assert notify_address(value) == address


def _assignments(datagram: bytes) -> dict[str, str]:
    text = datagram.decode()
    assert text.endswith("\n")
    return dict(line.split("=", 1) for line in text.splitlines())


def test_messages_are_newline_separated_assignments() -> None:
    assert _assignments(ready_message("serving"))["READY"] == "1"
    reloading = _assignments(reloading_message(123456789))
    assert (reloading["RELOADING"], reloading["MONOTONIC_USEC"]) == ("1", "123456789")
    assert _assignments(stopping_message())["STOPPING"] == "1"


def test_a_value_never_spans_lines() -> None:
    # A newline inside STATUS would start a new assignment that the service manager would obey.
    assert _assignments(message(STATUS="bad\nREADY=1")) == {"STATUS": "bad READY=1"}
