"""SSLAUTH files under hypothesis: our error or a rule set, never a crash; render() round-trips."""

from __future__ import annotations

import re
from datetime import datetime, time

from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.errors import RuleFileError
from sidecar.policy.sslauth import NAME_KEYS, NameCriterion, RuleSet, Statement, parse_sslauth
from sidecar.tls.peer import PeerCert
from tests.unit._peers import make_peer

FILENAME = "SSLAuth.cfg"

pieces = st.sampled_from(
    ["ACCEPT", "accept", "REVOKE", "Reject", " ", "  ", ",", "\n", "\r\n", "*", "#", "/", "=",
     "/CN=", "/OU=", "/O=", "/L=", "/ST=", "/C=", "/SN=", "/SDATE=", "/STIME=", "/EDATE=", "/ETIME=",
     "/USER=", "/cn=", "/XYZ=", "Joe", "New York", "ACME*", "12:34:56", "0x1F", "20091130", "20090230",
     "0800", "2400", "*x"]
)  # fmt: skip
grammar_texts = st.lists(pieces | st.text(max_size=3), max_size=20).map("".join)

# What a value cannot hold (see the module docstring): a `,` or `*` (prefix `*` is added apart),
# a line break, `/word=`, blanks at its ends, a statement keyword after a blank.
_PARAMETER_SHAPE = re.compile(r"/[A-Za-z][A-Za-z0-9]*=")
_KEYWORD_AFTER_BLANK = re.compile(r"\s(accept|revoke|reject)", re.IGNORECASE)


def is_plain_value(text: str) -> bool:
    return (
        bool(text)
        and text == text.strip()
        and not _PARAMETER_SHAPE.search(text)
        and not _KEYWORD_AFTER_BLANK.search(text)
    )


values = (
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=",*\n"), min_size=1, max_size=15)
    .map(str.strip)
    .filter(is_plain_value)
)
names = st.builds(NameCriterion, st.sampled_from(NAME_KEYS), values, st.just(False)) | st.builds(
    NameCriterion, st.sampled_from(NAME_KEYS), values | st.just(""), st.just(True)
)
minutes = st.builds(time, st.integers(0, 23), st.integers(0, 59))


@st.composite
def statements(draw: st.DrawFn) -> Statement:
    start_date = draw(st.none() | st.dates())
    end_date = draw(st.none() | st.dates())
    return Statement(
        action=draw(st.sampled_from(["ACCEPT", "REVOKE"])),
        names=tuple(draw(st.lists(names, max_size=6, unique_by=lambda name: name.attribute))),
        serial=draw(st.none() | st.integers(min_value=0, max_value=2**160)),
        start_date=start_date,
        start_time=None if start_date is None else draw(st.none() | minutes),
        end_date=end_date,
        end_time=None if end_date is None else draw(st.none() | minutes),
        user=draw(st.none() | values),
    )


rule_sets = st.lists(statements(), max_size=6).map(lambda found: RuleSet(FILENAME, tuple(found)))

PEERS = (
    make_peer([(NameOID.COUNTRY_NAME, "US"), (NameOID.ORGANIZATION_NAME, "ACME"), (NameOID.COMMON_NAME, "Joe")], 7),
    make_peer([(NameOID.ORGANIZATIONAL_UNIT_NAME, "a"), (NameOID.ORGANIZATIONAL_UNIT_NAME, "b")], 0x123456),
    None,
)


@settings(max_examples=300, deadline=None)
@given(st.text() | grammar_texts)
def test_any_text_gives_a_rule_set_or_our_error(text: str) -> None:
    try:
        rules = parse_sslauth(text, FILENAME)
    except RuleFileError as exc:
        assert exc.file == FILENAME
        assert 1 <= exc.line <= text.count("\n") + 1
        return
    assert parse_sslauth(rules.render(), FILENAME) == rules
    assert all(1 <= statement.line <= text.count("\n") + 1 for statement in rules.statements)


@settings(max_examples=200, deadline=None)
@given(rule_sets)
def test_generated_rule_sets_round_trip(rules: RuleSet) -> None:
    assert parse_sslauth(rules.render(), FILENAME) == rules


@settings(max_examples=150, deadline=None)
@given(rule_sets, st.sampled_from(PEERS), st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
def test_evaluation_never_raises(rules: RuleSet, peer: PeerCert | None, now: datetime) -> None:
    parsed = parse_sslauth(rules.render(), FILENAME)
    result = parsed.evaluate(peer, now)
    if result.rule_ref is None:
        assert result.allowed
        assert result.user is None
    else:
        line = int(result.rule_ref.rpartition(":")[2])
        assert result.rule_ref.startswith(FILENAME + ":")
        assert any(statement.line == line for statement in parsed.statements)
    if not result.allowed:
        assert result.user is None


# ---- the statement index decides exactly as a first-to-last scan ---------------------------------

_VALUES = st.sampled_from(["A", "AB", "B", "PARIS"])
_INDEX_NAMES = st.lists(
    st.builds(NameCriterion, st.sampled_from(["CN", "OU", "O"]), _VALUES, st.booleans()),
    max_size=3,
    unique_by=lambda criterion: criterion.attribute,
)
_INDEX_STATEMENTS = st.lists(
    st.builds(
        Statement,
        action=st.sampled_from(["ACCEPT", "REVOKE"]),
        names=_INDEX_NAMES.map(tuple),
        serial=st.one_of(st.none(), st.sampled_from([1, 2])),
    ),
    max_size=12,
)
_CERTS = st.builds(
    lambda cn, ou, second_ou, serial: make_peer(
        [(NameOID.COMMON_NAME, cn), (NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
         (NameOID.ORGANIZATIONAL_UNIT_NAME, second_ou)],
        serial,
    ),
    _VALUES, _VALUES, _VALUES, st.sampled_from([1, 2, 3]),
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(_INDEX_STATEMENTS, _CERTS)
def test_indexed_evaluation_equals_a_linear_scan(statements: list[Statement], cert: PeerCert) -> None:
    rules = RuleSet("f.txt", tuple(Statement(**{**_fields(s), "line": i + 1}) for i, s in enumerate(statements)))
    first_hit = next((s for s in rules.statements if s.hits(cert)), None)
    result = rules.evaluate(cert, datetime(2026, 1, 1, 12, 0))
    if first_hit is None:
        assert result.allowed and result.rule_ref is None
    else:
        assert result.rule_ref == f"f.txt:{first_hit.line}"
        assert result.allowed == (first_hit.action == "ACCEPT")


def _fields(statement: Statement) -> dict[str, object]:
    return {name: getattr(statement, name) for name in Statement.__dataclass_fields__}
