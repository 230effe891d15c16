"""The configuration file itself: strict YAML, the schema read from the dataclasses, paths and lines."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from sidecar.config import (
    Admin,
    Config,
    EncryptionEntry,
    Limits,
    Listener,
    Partner,
    Profile,
    choices_of,
    keys_of,
    parse_config,
    read_config_text,
)
from sidecar.errors import MAX_LINE, ConfigError, Issue
from sidecar.yamlsource import MAX_DEPTH

from ..support.hostile import alias_bomb

SOURCE = Path("/etc/sidecar/sidecar.yaml")

VALID = """\
pki:
  ROOTCA: {cert: root.pem}
  SRVCERT: {cert: server.pem, key: server.key}
profiles:
  - id: SSLSRV
    direct: server
    usercid: SRVCERT
    rootcid: [ROOTCA]
    verify: required
listeners:
  - id: PESITSSL
    listen: 127.0.0.1:0
    ssl: SSLSRV
    backend: 127.0.0.1:1761
"""


def problems(text: str) -> list[str]:
    _, issues = read_config_text(textwrap.dedent(text), SOURCE)
    return [str(issue) for issue in issues]


def test_a_valid_file_has_no_problem_and_keeps_its_lines() -> None:
    config, issues = read_config_text(VALID, SOURCE)
    assert issues == []
    assert config is not None
    assert config.lines["profiles[0].verify"] == 9
    assert config.lines["listeners[0]"] == 11


# ---- duplicate keys ---------------------------------------------------------------------------


def test_a_key_given_twice_is_an_error_with_both_lines() -> None:
    # The dangerous typo of the issue: a second `verify:` that would silently turn verification off.
    text = VALID.replace("    verify: required\n", "    verify: required\n    depth: 3\n    verify: none\n")
    assert problems(text) == ["profiles[0].verify: given twice (lines 9 and 11): keep one"]


def test_duplicates_at_every_level_are_all_reported() -> None:
    text = VALID + "listeners: []\n" + "limits: {idle_timeout: 5, idle_timeout: 6}\n"
    found = problems(text)
    assert "listeners: given twice (lines 10 and 15): keep one" in found
    assert "limits.idle_timeout: given twice (lines 16 and 16): keep one" in found


def test_a_merge_key_is_not_a_duplicate() -> None:
    text = VALID + "limits: &l {idle_timeout: 5}\nlogging: {level: info}\n"
    assert problems(text) == []
    merged = VALID.replace(
        "    verify: required\n", "    verify: required\n    <<: {depth: 3}\n    <<: {keyext: none}\n"
    )
    assert problems(merged) == []


# ---- empty, nothing to serve --------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n", "--- # x\n...\n", "~\n", "null\n"])
def test_an_empty_configuration_is_an_error(text: str) -> None:
    assert problems(text) == [
        "sidecar.yaml: the configuration is empty (no listener with `listen`, no `outbound`: nothing to serve)"
    ]


@pytest.mark.parametrize(
    "text",
    [
        "pki: {}\n",
        "logging: {level: info}\n",
        "listeners: [{id: REQ, ssl: SSLCLI}]\n",  # requester-only: binds nothing
        "listeners: []\noutbound: []\n",
    ],
)
def test_nothing_to_serve_is_an_error(text: str) -> None:
    assert "nothing to serve: no listener with `listen` and no `outbound` entry" in problems(text)


def test_a_listener_with_other_problems_still_counts_as_serving() -> None:
    found = problems("listeners: [{id: 'bad id!', listen: 127.0.0.1:0, backend: 127.0.0.1:1}]\n")
    assert not any("nothing to serve" in line for line in found)


def test_not_a_mapping_at_the_top() -> None:
    assert problems("- a\n- b\n") == ["must be a mapping, got a list"]


# ---- line numbers ---------------------------------------------------------------------------


def test_semantic_errors_carry_the_line_of_their_path() -> None:
    text = VALID.replace("verify: required", "verify: sometimes").replace("backend: 127.0.0.1:1761", "backend: x")
    assert problems(text) == [
        "profiles[0].verify: must be one of none, optional, required, got 'sometimes' (line 9)",
        "listeners[0].backend: 'x' is not an address (expected host:port or [v6]:port) (line 14)",
    ]


def test_a_missing_key_points_at_its_mapping() -> None:
    text = VALID.replace("  - id: SSLSRV\n    direct: server\n", "  - id: SSLSRV\n")
    assert "profiles[0].direct: is required (line 5)" in problems(text)


def test_yaml_syntax_errors_give_file_and_line() -> None:
    found = problems("listeners: [\n  {id: PESITSSL\n")
    assert len(found) == 1 and found[0].startswith("sidecar.yaml:3: invalid YAML")


def test_tags_that_build_objects_are_refused() -> None:
    found = problems("listeners: !!python/object/apply:os.system ['true']\n")
    assert len(found) == 1 and "invalid YAML: could not determine a constructor" in found[0]


# ---- the schema is the dataclasses --------------------------------------------------------------


def test_allowed_keys_are_the_fields() -> None:
    internal = {"index", "source", "lines"}
    for cls in (Profile, Listener, Partner, Limits, Admin, Config):
        assert set(keys_of(cls)) == {f.name for f in dataclasses.fields(cls)} - internal
    assert keys_of(EncryptionEntry) == ("class", "encryption")  # `class` is a Python keyword


def test_choices_come_from_the_literals() -> None:
    assert choices_of(Listener, "identify") == ("none", "pesit", "certificate")
    assert choices_of(Listener, "proxy_protocol") == ("none", "v1", "v2")
    text = VALID.replace("    backend: 127.0.0.1:1761\n", "    backend: 127.0.0.1:1761\n    identify: maybe\n")
    assert problems(text) == ["listeners[0].identify: must be one of none, pesit, certificate, got 'maybe' (line 15)"]


def test_unknown_keys_list_the_schema() -> None:
    text = VALID.replace("    verify: required\n", "    verify: required\n    colour: blue\n")
    (line,) = problems(text)
    assert line.startswith("profiles[0].colour: unknown key (expected one of: id, direct, usercid, rootcid, verify,")


def test_defaults_come_from_the_fields() -> None:
    config = parse_config(VALID, SOURCE)
    assert config.limits == Limits()
    assert config.pki_warn_days == 30
    assert config.profiles[0].depth == 10
    text = VALID.replace("profiles:\n", "profiles:\n  - {id: SSLCLI, direct: client}\n")
    config = parse_config(text, SOURCE)
    assert config.profile("SSLCLI", "client") is not None
    assert config.profile("SSLCLI", "client").verify == "none"  # type: ignore[union-attr]
    assert config.profile("SSLSRV", "server").verify == "required"  # type: ignore[union-attr]


def test_verify_choices_follow_direct() -> None:
    text = VALID.replace("verify: required", "verify: enforced")
    assert problems(text) == ["profiles[0].verify: must be one of none, optional, required, got 'enforced' (line 9)"]
    client = VALID.replace("profiles:\n", "profiles:\n  - {id: SSLCLI, direct: client, verify: enforced}\n")
    assert problems(client) == []


def test_pki_warn_days_is_a_top_level_number() -> None:
    assert parse_config(VALID + "pki_warn_days: 7\n", SOURCE).pki_warn_days == 7
    assert problems(VALID + "pki_warn_days: soon\n") == ["pki_warn_days: must be an integer, got text 'soon' (line 15)"]


# ---- hostile input: refused, one line, no exception of the YAML library -------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (alias_bomb(), "refused: its aliases expand to more than 150,000 values"),
        ("listeners: &a [*a]\n", "refused: an alias refers to the node that contains it"),
        ("[" * 50_000 + "]" * 50_000, "invalid YAML"),
        ("x:\n" + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(60)), f"nested more than {MAX_DEPTH} levels"),
        ("a: '" + "x" * 100_000 + "'\n", "a value of 100,000 characters (at most 65,536)"),
        ("a: 1\n---\nb: 2\n", "a second YAML document"),
        ("x" * 3_000_000, "a configuration is at most 2,097,152"),
    ],
    ids=["alias-bomb", "recursive", "deep-flow", "deep-block", "long-scalar", "two-documents", "huge-file"],
)
def test_hostile_yaml_is_refused_in_one_bounded_line(text: str, expected: str) -> None:
    found = problems(text)
    assert len(found) == 1
    assert expected in found[0]
    assert len(found[0]) <= MAX_LINE


def test_a_long_key_or_value_gives_a_bounded_line() -> None:
    long_key = "k" * 50_000
    found = problems(VALID.replace("    verify: required\n", f"    verify: required\n    {long_key}: 1\n"))
    assert len(found) == 1 and len(found[0]) <= MAX_LINE
    found = problems(VALID.replace("backend: 127.0.0.1:1761", "backend: " + "h" * 50_000))
    assert len(found) == 1 and len(found[0]) <= MAX_LINE


def test_issue_lines_are_bounded_whatever_they_hold() -> None:
    issue = Issue("x" * 1000, "y\n" * 1000, line=12)
    assert len(str(issue)) <= MAX_LINE and "\n" not in str(issue) and str(issue).endswith("(line 12)")


def test_parse_config_raises_our_error_with_every_issue() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(VALID.replace("verify: required", "verify: x") + "limits: {idle_timeout: -1}\n", SOURCE)
    assert [issue.where for issue in caught.value.issues] == ["profiles[0].verify", "limits.idle_timeout"]


def test_user_classes_are_validated_once_by_the_policys_own_rule() -> None:
    # The configuration applies the check ClassPolicy makes: no second, stricter validator later.
    text = VALID + "user_classes:\n  - {name: P, address: 192.0.2.1/24}\n  - {name: '*'}\n  - {name: Q, address: x}\n"
    assert problems(text) == [
        "user_classes[0]: address '192.0.2.1/24' is not an IP address or CIDR: 192.0.2.1/24 has host bits set "
        "(line 16)",
        "user_classes[1]: '*' cannot be a class name, it is reserved for 'every class' (line 17)",
        "user_classes[2]: address 'x' is not an IP address or CIDR: 'x' does not appear to be an IPv4 or IPv6 "
        "network (line 18)",
    ]


def test_a_key_repeated_many_times_is_reported_once() -> None:
    text = VALID + "limits: {idle_timeout: 5, idle_timeout: 6, idle_timeout: 7}\n"
    assert problems(text) == ["limits.idle_timeout: given twice (lines 15 and 15): keep one"]


def test_the_list_of_problems_is_bounded() -> None:
    text = VALID + "limits: {" + ", ".join(f"k{i}: 1" for i in range(500)) + "}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, SOURCE)
    assert len(caught.value.issues) == 201
    assert str(caught.value.issues[-1]) == "300 more problems not shown"


def test_a_duration_that_zero_turns_off() -> None:
    text = VALID.replace("    backend: 127.0.0.1:1761\n", "    backend: 127.0.0.1:1761\n    backend_check: 0\n")
    assert parse_config(text, SOURCE).listeners[0].backend_check == 0.0
    assert problems(text.replace("backend_check: 0", "backend_check: -1")) == [
        "listeners[0].backend_check: must be a positive number of seconds, got -1 (line 15)"
    ]
