"""Any YAML mapping gives a Config or a ConfigError listing path-qualified issues, never another exception."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.config import parse_config
from sidecar.errors import ConfigError

KEYS = [
    "pki",
    "profiles",
    "listeners",
    "partners",
    "outbound",
    "user_classes",
    "encryption",
    "admin",
    "limits",
    "logging",
    "id",
    "direct",
    "verify",
    "ciphlist",
    "listen",
    "backend",
    "ssl",
    "host",
    "sap",
    "version",
    "min",
    "max",
    "depth",
    "class",
    "cert",
    "key",
    "prot",
    "nrpart",
    "idle_timeout",
    "bogus",
]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 70000), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["server", "client", "required", "none", "tls1.3", "127.0.0.1:0", "x", "", "*", "[::1]:1"]),
    st.text(max_size=12),
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(KEYS), children, max_size=5),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=8))
def test_any_mapping_is_a_config_or_a_config_error(data: dict[str, object]) -> None:
    text = yaml.safe_dump(data)
    try:
        config = parse_config(text, Path("/nonexistent/sidecar.yaml"))
    except ConfigError as exc:
        assert exc.issues
        assert all(issue.message for issue in exc.issues)
    else:
        assert config.source.name == "sidecar.yaml"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_a_config_or_a_config_error(text: str) -> None:
    try:
        parse_config(text, Path("/nonexistent/sidecar.yaml"))
    except ConfigError as exc:
        assert exc.issues
