"""The live policy keys (SPEC §8.3): defaults and what a wrong value says."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sidecar.config import parse_config
from sidecar.errors import ConfigError

BASE = {"listeners": [{"id": "L", "listen": "127.0.0.1:0", "backend": "127.0.0.1:1", "plaintext": "allow"}]}


def _parse(extra: dict[str, object], listener: dict[str, object] | None = None) -> object:
    data = {**BASE, **extra}
    data["listeners"] = [{**BASE["listeners"][0], **(listener or {})}]  # type: ignore[index]
    return parse_config(yaml.safe_dump(data), Path("/etc/sidecar/sidecar.yaml"))


def test_defaults() -> None:
    config = _parse({})
    assert config.listeners[0].live_recheck is True  # type: ignore[attr-defined]
    assert (config.reload.watch, config.reload.interval) == (False, 2.0)  # type: ignore[attr-defined]


def test_values() -> None:
    config = _parse({"reload": {"watch": True, "interval": 0.5}}, {"live_recheck": False})
    assert config.listeners[0].live_recheck is False  # type: ignore[attr-defined]
    assert (config.reload.watch, config.reload.interval) == (True, 0.5)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("extra", "listener", "expected"),
    [
        ({"reload": {"interval": 0}}, None, "reload.interval: must be a positive number of seconds"),
        ({"reload": {"watch": "yes"}}, None, "reload.watch: must be true or false"),
        ({"reload": {"every": 2}}, None, "reload.every: unknown key"),
        ({}, {"live_recheck": "on"}, "listeners[0].live_recheck: must be true or false"),
    ],
)
def test_errors(extra: dict[str, object], listener: dict[str, object] | None, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _parse(extra, listener)
    assert any(str(issue).startswith(expected) for issue in caught.value.issues), caught.value.issues
