"""The scale keys: `workers` (top level) and `listeners[].accept_proxy`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.config import parse_config
from sidecar.errors import ConfigError


def _config(top: dict[str, Any], listener: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {
            **top,
            "listeners": [
                {"id": "IN", "listen": "127.0.0.1:0", "backend": "127.0.0.1:1", "plaintext": "allow", **listener}
            ],
        }
    )


@pytest.mark.parametrize(
    ("top", "listener", "workers", "accept_proxy"),
    [
        ({}, {}, 1, ()),
        ({"workers": 4}, {"accept_proxy": ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]}, 4,
         ("10.0.0.0/8", "192.0.2.7", "2001:db8::/32")),
        ({"workers": "auto"}, {"accept_proxy": []}, "auto", ()),
        ({}, {"accept_proxy": "10.0.0.0/8"}, 1, ("10.0.0.0/8",)),  # one network alone, as for other lists
    ],
)  # fmt: skip
def test_valid(top: dict[str, Any], listener: dict[str, Any], workers: object, accept_proxy: tuple[str, ...]) -> None:
    config = parse_config(_config(top, listener), Path("/etc/sidecar/sidecar.yaml"))
    assert config.workers == workers
    assert config.listeners[0].accept_proxy == accept_proxy


@pytest.mark.parametrize(
    ("top", "listener", "problems"),
    [
        ({"workers": 0}, {}, ["workers: must be between 1 and 256, got 0 (line 6)"]),
        ({"workers": "many"}, {}, ["workers: expected a number of processes or 'auto', got text 'many' (line 6)"]),
        ({"workers": True}, {}, ["workers: expected a number of processes or 'auto', got true/false True (line 6)"]),
        ({}, {"accept_proxy": ["10.0.0.0/33", "lb.example"]},
         ["listeners[0].accept_proxy[0]: '10.0.0.0/33' is not an IP address or CIDR network (line 3)",
          "listeners[0].accept_proxy[1]: 'lb.example' is not an IP address or CIDR network (line 4)"]),
        ({}, {"accept_proxy": {"lb": "10.0.0.0/8"}},
         ["listeners[0].accept_proxy: must be a list, got a mapping (line 2)"]),
    ],
)  # fmt: skip
def test_invalid(top: dict[str, Any], listener: dict[str, Any], problems: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_config(top, listener), Path("/etc/sidecar/sidecar.yaml"))
    assert [str(issue) for issue in caught.value.issues] == problems
