"""DNUSER / DNISSUER patterns: the Transfer CFT examples, the extended syntax, every malformed shape."""

from __future__ import annotations

import pytest

from sidecar.errors import DnPatternError
from sidecar.policy.dn import DnAlternative, DnPattern, DnTerm, compile_dn_patterns, normalize_operand

CFT_DEMO = "/C=FR/O=Axway/OU=MFT Demonstration/CN=x"
ACME = "/C=US/ST=NY/L=New York/O=ACME/OU=Dept1/CN=partner1"
UK = "/C=UK/O=Other/CN=y"
AXWAY_UK = "/C=DE/O=Axway/CN=z"
ISSUER = "/C=US/O=ACME Trust/OU=Issuing CA 2/CN=ACME Issuing CA"


def compiled(value: str | list[str]) -> DnPattern:
    pattern = compile_dn_patterns(value)
    assert pattern is not None
    return pattern


@pytest.mark.parametrize(
    ("value", "dn", "expected"),
    [
        # CFT doc: "the remote certificate DN must contain this string", blanks near / and = ignored
        ("C=FR/O= Axway/ OU=MFT Demonstration", CFT_DEMO, True),
        ("C=FR/O= Axway/ OU=MFT Demonstration", "/C=FR/O=Axway/OU=MFT Demo/CN=x", False),
        ("C=FR/O= Axway/ OU=MFT Demonstration", "/C=GB/O=Axway/OU=MFT Demonstration", False),
        ("  O = Axway ", CFT_DEMO, True),
        # CFT doc: 'C=UK,O=Axway' = contains C=UK OR contains O=Axway
        ("C=UK,O=Axway", UK, True),
        ("C=UK,O=Axway", AXWAY_UK, True),
        ("C=UK,O=Axway", ACME, False),
        ("'C=UK,O=Axway'", AXWAY_UK, True),  # the CFTUTIL quoting around the whole value
        # a YAML list is an OR
        (["O=ACME", "OU=Paris"], ACME, True),
        (["O=Nope", "OU=Dept1"], ACME, True),
        (["O=Nope", "OU=Paris"], ACME, False),
        # old 2.4 list syntax
        ("(O=Nope, OU=Dept1)", ACME, True),
        ("(O=Nope, OU=Paris)", ACME, False),
        # extended syntax
        ('("O=ACME" AND "OU=Dept1")', ACME, True),
        ('("O=ACME" AND "OU=Paris")', ACME, False),
        ('("O=ACME" ET "OU=Dept1")', ACME, True),
        ('("O=ACME" et "OU=Paris")', ACME, False),
        ('("O=Nope" OR "OU=Dept1")', ACME, True),
        ('("O=Nope" OU "OU=Dept1")', ACME, True),
        ('("O=Nope" ou "OU=Paris")', ACME, False),
        ('("O=Nope" OR ! "OU=Paris")', ACME, True),  # not Paris
        ('("O=Nope" OR ! "OU=Dept1")', ACME, False),
        ('("O=ACME" AND ! "OU=Dept1")', ACME, False),
        ('("O=ACME" AND !"OU=Paris")', ACME, True),
        ('(! "O=Nope" AND "CN=partner1")', ACME, True),  # leading ! on the first operand
        ('("C=US" AND "O=ACME" AND "CN=partner1")', ACME, True),  # chains
        ('("C=US" AND "O=ACME" AND "CN=partner2")', ACME, False),
        ('("C=FR" OR "O=Nope" OR "CN=partner1")', ACME, True),
        ("(“O=ACME” AND “OU=Dept1”)", ACME, True),  # smart quotes from the docs
        ('"L=New York", "O=Nope"', ACME, True),
        ('"O=ACME, Inc"', "/C=US/O=ACME, Inc/CN=q", True),  # a quoted operand keeps its comma
        ('"O=ACME, Inc"', ACME, False),
        ('("O=ACME" AND "OU=Dept1"), "CN=other"', "/CN=other", True),
        # matching is case-sensitive
        ("o=acme", ACME, False),
        ("O=ACME", ACME, True),
        ('("o=acme" OR "ou=dept1")', ACME, False),
        # an issuer DN is tested the same way (choosing subject or issuer is the caller's business)
        ("O=ACME Trust/OU=Issuing CA 2", ISSUER, True),
        ('("CN=ACME Issuing CA" AND ! "O=ACME/")', ISSUER, True),
        ("CN=ACME Root", ISSUER, False),
    ],
)
def test_matches(value: str | list[str], dn: str, expected: bool) -> None:
    assert compiled(value).matches(dn) is expected


@pytest.mark.parametrize(
    ("text", "alternatives"),
    [
        ("C=FR/O= Axway/ OU=MFT Demonstration", (("C=FR/O=Axway/OU=MFT Demonstration",),)),
        ("C=UK,O=Axway", (("C=UK",), ("O=Axway",))),
        ('("a" AND "b")', (("a", "b"),)),
        ('("a" OR ! "b")', (("a",), ("!b",))),
        ('(! "a" ET "b" and "c")', (("!a", "b", "c"),)),
        ("(a, b ,c)", (("a",), ("b",), ("c",))),
        ('"  x  y  "', (("x  y",),)),
        ('" O = A / OU = B "', (("O=A/OU=B",),)),
        ('("a" OR "b"), ("c" AND "d")', (("a",), ("b",), ("c", "d"))),
        ("O=Yahoo!", (("O=Yahoo!",),)),  # '!' inside a bare operand is text
        ("! O=x", (("!O=x",),)),
    ],
)
def test_compiled_form(text: str, alternatives: tuple[tuple[str, ...], ...]) -> None:
    def term(spec: str) -> DnTerm:
        return DnTerm(spec[1:], negated=True) if spec.startswith("!") else DnTerm(spec)

    expected = tuple(DnAlternative(tuple(term(spec) for spec in alt)) for alt in alternatives)
    assert compiled(text).alternatives == expected


@pytest.mark.parametrize("value", [None, [], (), "", "   "])
def test_no_pattern_means_no_check(value: str | list[str] | None) -> None:
    assert compile_dn_patterns(value) is None


def test_source_is_kept_and_ignored_by_equality() -> None:
    one = compiled("C=UK,O=Axway")
    two = compiled(['"C=UK"', "O = Axway"])
    assert one.source == ("C=UK,O=Axway",)
    assert two.source == ('"C=UK"', "O = Axway")
    assert one == two


@pytest.mark.parametrize(
    "value",
    [
        "C=UK,O=Axway",
        ["O=ACME", "OU=Paris"],
        '("a" OR ! "b")',
        '(! "a" AND "b"), "c, d", x',
        "(“O=ACME” ET “OU=Dept1”)",
    ],
)
def test_render_round_trips(value: str | list[str]) -> None:
    pattern = compiled(value)
    assert compile_dn_patterns(pattern.render()) == pattern


def test_render_shape() -> None:
    assert compiled('("a" ou ! "b") , (c, "d" ) ,("e" et "f")').render() == '"a", (! "b"), "c", "d", ("e" AND "f")'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('"O=ACME', "unterminated quote"),
        ('("O=ACME" AND "OU=x)', "unterminated quote"),
        ('("a" AND "b"', "missing ')'"),
        ("(a, b", "missing ')'"),
        ("a)", "')' without a matching '('"),
        ('("a") "b"', "after the closing parenthesis"),
        ('("a" AND "b") x', "after the closing parenthesis"),
        ('("a" XOR "b")', "unknown operator 'XOR'"),
        ('("a" ANDOR "b")', "unknown operator"),
        ('("a" "b")', "expected AND, ET, OR, OU"),
        ('("a" AND "b" OR "c")', "AND and OR mixed"),
        ('("a" OR "b" ET "c")', "AND and OR mixed"),
        ('("a", "b" AND "c")', "AND and OR mixed"),
        ('("a" AND "b", "c")', "AND and OR mixed"),
        ('(("a" AND "b"))', "nested or negated"),
        ('("a" AND ("b"))', "nested or negated"),
        ('("a" ("b"))', "nested parentheses"),
        ('!("a" AND "b")', "nested or negated"),
        ("()", "empty parentheses"),
        ('""', "empty quoted operand"),
        ('"  "', "empty quoted operand"),
        ('("a" AND "")', "empty quoted operand"),
        ("a,,b", "missing operand"),
        ("a,", "missing operand"),
        (",a", "missing operand"),
        ('("a" AND )', "missing operand"),
        ('("a" AND', "missing operand"),
        ("!", "missing operand"),
        ("!!a", "double negation"),
        ('"a" AND "b"', "operator AND needs parentheses"),
        ('"a" ou "b"', "operator ou needs parentheses"),
        ('"a" "b"', "expected ',' or the end"),
        ('"a"b', "expected ',' or the end"),
        ("(a AND b)", "contains the operator word AND"),
        ("O=ACME and OU=x", "contains the operator word and"),
        ("(a OR b)", "contains the operator word OR"),
        ("O=ACME (Europe)", "expected ',' or the end"),  # unquoted parentheses
        ("''", "empty pattern"),
    ],
)
def test_malformed(text: str, message: str) -> None:
    with pytest.raises(DnPatternError) as caught:
        compile_dn_patterns(text)
    assert message in str(caught.value)
    assert "(at character " in str(caught.value)


def test_error_names_where_and_list_index() -> None:
    with pytest.raises(DnPatternError, match=r"^profiles\[1\]\.dnuser\[1\]: unterminated quote \(at character 1\)$"):
        compile_dn_patterns(["O=ACME", '"x'], "profiles[1].dnuser")
    with pytest.raises(DnPatternError, match=r"^profiles\[1\]\.dnuser: missing '\)'"):
        compile_dn_patterns("(a", "profiles[1].dnuser")
    with pytest.raises(DnPatternError, match=r"^dnuser\[0\]: empty pattern"):
        compile_dn_patterns([""], "dnuser")


@pytest.mark.parametrize("value", [42, [42], ["ok", None], b"O=ACME"])
def test_not_text(value: object) -> None:
    with pytest.raises(DnPatternError, match="expected a text"):
        compile_dn_patterns(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "dn", "explanation"),
    [
        (["O=Nope", "O=ACME"], ACME, 'contains "O=ACME" (alternative 2)'),
        ("C=UK,O=Axway", AXWAY_UK, 'contains "O=Axway" (alternative 2)'),
        (["O=ACME", "OU=Paris"], UK, 'no alternative matched: "O=ACME", "OU=Paris"'),
        ('("O=ACME" AND ! "OU=Paris")', ACME, 'contains "O=ACME" and does not contain "OU=Paris" (alternative 1)'),
        ('("O=x" OR ! "OU=Paris")', ACME, 'does not contain "OU=Paris" (alternative 2)'),
        (
            '("O=ACME" AND ! "OU=Dept1"), "CN=z"',
            ACME,
            'no alternative matched: ("O=ACME" and not "OU=Dept1"), "CN=z"',
        ),
        ('("O=x" OR ! "OU=Dept1")', ACME, 'no alternative matched: "O=x", not "OU=Dept1"'),
    ],
)
def test_explain(value: str | list[str], dn: str, explanation: str) -> None:
    assert compiled(value).explain(dn) == explanation


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("C=FR/O= Axway/ OU=MFT Demonstration", "C=FR/O=Axway/OU=MFT Demonstration"),
        ("  a  ", "a"),
        ("O =\tACME / OU = x y", "O=ACME/OU=x y"),
        ("a b", "a b"),
    ],
)
def test_normalize_operand(raw: str, normalised: str) -> None:
    assert normalize_operand(raw) == normalised


def test_verdicts_are_remembered_per_dn_and_the_memory_is_bounded() -> None:
    from sidecar.policy.dn import VERDICTS_KEPT

    pattern = compile_dn_patterns(['("O=ACME" AND "OU=Paris")', "CN=LYON"])
    assert pattern is not None
    first = pattern.verdict("/C=US/O=ACME/OU=Paris/CN=PARIS")
    assert first == (True, 'contains "O=ACME" and contains "OU=Paris" (alternative 1)')
    assert pattern.verdict("/C=US/O=ACME/OU=Paris/CN=PARIS") is first  # remembered, not recomputed
    assert pattern.verdict("/C=US/O=ACME/CN=LYON") == (True, 'contains "CN=LYON" (alternative 2)')
    for number in range(VERDICTS_KEPT * 2):
        assert pattern.verdict(f"/CN=other{number}")[0] is False
    assert len(pattern._verdicts) <= VERDICTS_KEPT
    assert pattern == compile_dn_patterns(['("O=ACME" AND "OU=Paris")', "CN=LYON"])  # memory is not identity
