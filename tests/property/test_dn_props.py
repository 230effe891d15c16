"""DN patterns under hypothesis: our error or a value, never a crash; render() round-trips."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.errors import DnPatternError
from sidecar.policy.dn import DnAlternative, DnPattern, DnTerm, compile_dn_patterns, normalize_operand

QUOTES = '"“”„'

# Pieces of the grammar, so that random texts often come close to valid ones.
pieces = st.sampled_from(
    ["(", ")", '"', "“", "”", ",", "!", " ", "'", " AND ", " OR ", " ET ", " OU ", " and ", " XOR ", "O=ACME",
     "/", "=", " / ", " = ", "OU=Dept 1", "C=US", "x"]
)  # fmt: skip
grammar_texts = st.lists(pieces | st.text(max_size=3), max_size=12).map("".join)
any_texts = st.text() | grammar_texts

operands = (
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=QUOTES), min_size=1, max_size=20)
    .map(normalize_operand)
    .filter(bool)
)
terms = st.builds(DnTerm, operands, st.booleans())
alternatives = st.lists(terms, min_size=1, max_size=4).map(lambda found: DnAlternative(tuple(found)))
patterns = st.lists(alternatives, min_size=1, max_size=5).map(lambda found: DnPattern(tuple(found)))


def compile_or_error(value: str | list[str]) -> DnPattern | None:
    try:
        return compile_dn_patterns(value, "dnuser")
    except DnPatternError as exc:
        assert str(exc).startswith("dnuser")
        return None


@settings(max_examples=300, deadline=None)
@given(any_texts)
def test_any_text_gives_a_pattern_or_our_error(text: str) -> None:
    pattern = compile_or_error(text)
    if pattern is not None:
        assert compile_dn_patterns(pattern.render()) == pattern
        assert pattern.source == (text,)


@settings(max_examples=100, deadline=None)
@given(st.lists(any_texts, max_size=4))
def test_any_list_gives_a_pattern_or_our_error(texts: list[str]) -> None:
    pattern = compile_or_error(texts)
    if pattern is not None:
        assert compile_dn_patterns(pattern.render()) == pattern


@settings(max_examples=300, deadline=None)
@given(patterns)
def test_generated_patterns_round_trip(pattern: DnPattern) -> None:
    assert compile_dn_patterns(pattern.render()) == pattern


@settings(max_examples=300, deadline=None)
@given(patterns, st.text())
def test_matching_never_raises_and_explain_agrees(pattern: DnPattern, dn_text: str) -> None:
    matched = pattern.matches(dn_text)
    explanation = pattern.explain(dn_text)
    assert explanation.startswith("no alternative matched") is not matched


@settings(max_examples=200, deadline=None)
@given(patterns, st.integers(min_value=0, max_value=4), st.text(max_size=10))
def test_a_dn_holding_an_alternative_matches(pattern: DnPattern, index: int, filler: str) -> None:
    alternative = pattern.alternatives[index % len(pattern.alternatives)]
    dn_text = filler.join(term.text for term in alternative.terms if not term.negated)
    if all(term.text not in dn_text for term in alternative.terms if term.negated):
        assert pattern.matches(dn_text)


@settings(max_examples=200, deadline=None)
@given(patterns, st.lists(st.text(max_size=30), min_size=1, max_size=6))
def test_remembered_verdicts_are_the_computed_ones(pattern: DnPattern, dn_texts: list[str]) -> None:
    """The per-DN memory never changes an answer, whatever the order DNs come in, repeats included."""
    for dn_text in dn_texts + dn_texts[::-1]:
        assert pattern.verdict(dn_text) == (pattern.matches(dn_text), pattern.explain(dn_text))
