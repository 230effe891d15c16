"""Transfer CFT DNUSER / DNISSUER patterns: grammar, compilation, matching.

Pure: no I/O. A pattern is compiled once, when the configuration snapshot is built; matching is
plain substring tests on precomputed operands.

What CFT documents (domain/NOTES.md A.6): the pattern must be *contained* in the certificate DN
(case-sensitive), `'C=UK,O=Axway'` means "contains C=UK OR contains O=Axway", a list means OR,
and the extended form `("s1" Op "s2")` / `("s1" Op ! "s2")` with Op = OR/OU or AND/ET.

Grammar of one pattern text (a YAML list of texts is the OR of all of them):

    pattern   := item ("," item)*             alternatives: any one must hold
    item      := term | "(" group ")"
    group     := term (separator term)*
    separator := "," | OR | OU | AND | ET      operator words are case-insensitive
    term      := ["!"] operand                 "!" negates: the DN must not contain the operand
    operand   := quoted | bare
    quoted    := a text between double quotes (" and the smart quotes “ ” „ are all accepted, and
                 any of them closes); it keeps its commas and parentheses
    bare      := the text up to the next "," "(" ")" or quote

Choices where CFT is silent:
* CFT defines only a binary operator, so there is no precedence to follow. A group may chain
  more than two operands, but all its separators must be of one kind: OR-like ("," OR OU) or
  AND-like (AND ET). Mixing them is an error; write the OR as separate items instead:
  `("a" AND "b"), "c"`. Groups do not nest.
* A bare operand must not contain a stand-alone word OR/OU/AND/ET (any case): otherwise
  `(a AND b)` would silently become a test for the text "a AND b". Quote such operands.
* "!" is accepted at the start of any term, the first one and top-level ones included.
* A whole text wrapped in single quotes (`'C=UK,O=Axway'`, as written for CFTUTIL) is unwrapped.
* An empty or blank value means "no check", as an empty DNUSER does in CFT; an empty operand
  inside a pattern is an error.
* Operands are normalised: blanks next to "/" and "=" are removed (the CFT example
  `C=FR/O= Axway/ OU=MFT Demonstration` is `C=FR/O=Axway/OU=MFT Demonstration`) and the ends
  are trimmed. Case is kept. Operands cannot contain a quote character of any kind.

The compiled form is a disjunction of conjunctions: `DnPattern.alternatives` (OR) of
`DnAlternative.terms` (AND). An OR group is flattened into one alternative per term.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from sidecar.errors import DnPatternError

_QUOTES = frozenset('"“”„')
_OR_WORDS = frozenset({"OR", "OU"})
_AND_WORDS = frozenset({"AND", "ET"})
_OPERATOR_WORDS = _OR_WORDS | _AND_WORDS
_BARE_OPERAND_STOP = frozenset(",()") | _QUOTES
# `\s` on str patterns is exactly str.isspace(), the same set strip() removes.
_BLANKS_AROUND_SEPARATOR = re.compile(r"\s*([/=])\s*")


def normalize_operand(text: str) -> str:
    """Remove blanks next to '/' and '=' and at both ends; keep everything else (case included)."""
    return _BLANKS_AROUND_SEPARATOR.sub(r"\1", text).strip()


@dataclass(frozen=True, slots=True)
class DnTerm:
    """One containment test: the DN contains `text` (or, when negated, does not)."""

    text: str  # already normalised
    negated: bool = False

    def holds(self, dn_text: str) -> bool:
        return (self.text in dn_text) != self.negated

    def render(self) -> str:
        return f'! "{self.text}"' if self.negated else f'"{self.text}"'

    def describe(self) -> str:
        return f'does not contain "{self.text}"' if self.negated else f'contains "{self.text}"'


@dataclass(frozen=True, slots=True)
class DnAlternative:
    """Terms that must all hold (AND)."""

    terms: tuple[DnTerm, ...]

    def holds(self, dn_text: str) -> bool:
        return all(term.holds(dn_text) for term in self.terms)

    def render(self) -> str:
        if len(self.terms) == 1 and not self.terms[0].negated:
            return self.terms[0].render()
        return "(" + " AND ".join(term.render() for term in self.terms) + ")"

    def describe(self) -> str:
        return " and ".join(term.describe() for term in self.terms)

    def summary(self) -> str:
        """Short form for a list of alternatives that all failed."""
        parts = [("not " if term.negated else "") + f'"{term.text}"' for term in self.terms]
        return parts[0] if len(parts) == 1 else "(" + " and ".join(parts) + ")"


VERDICTS_KEPT = 1024  # distinct DNs remembered per pattern


@dataclass(frozen=True, slots=True)
class DnPattern:
    """A compiled DNUSER/DNISSUER value: true when any alternative holds."""

    alternatives: tuple[DnAlternative, ...]
    # The texts as configured, for messages; two patterns that test the same thing are equal
    # whatever their spelling, which is what makes render() round-trip.
    source: tuple[str, ...] = field(default=(), compare=False)
    # verdict() per DN already seen: partners come back with the same certificate all day.
    _verdicts: dict[str, tuple[bool, str]] = field(default_factory=dict, init=False, compare=False, repr=False)

    def matches(self, dn_text: str) -> bool:
        return any(alternative.holds(dn_text) for alternative in self.alternatives)

    def verdict(self, dn_text: str) -> tuple[bool, str]:
        """(matches, explanation) for one DN, remembered for the DNs seen last (at most VERDICTS_KEPT)."""
        known = self._verdicts.get(dn_text)
        if known is None:
            known = (self.matches(dn_text), self.explain(dn_text))
            if len(self._verdicts) >= VERDICTS_KEPT:
                self._verdicts.clear()
            self._verdicts[dn_text] = known
        return known

    def explain(self, dn_text: str) -> str:
        for number, alternative in enumerate(self.alternatives, start=1):
            if alternative.holds(dn_text):
                return f"{alternative.describe()} (alternative {number})"
        return "no alternative matched: " + ", ".join(alt.summary() for alt in self.alternatives)

    def render(self) -> str:
        return ", ".join(alternative.render() for alternative in self.alternatives)


def compile_dn_patterns(value: str | Sequence[str] | None, where: str = "") -> DnPattern | None:
    """Compile a DNUSER/DNISSUER value (one text or a list of texts, OR-ed); None = no check.

    Raises DnPatternError naming `where` (and the list index) and the character position.
    """
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        texts: tuple[str, ...] = (value,)
        labels: tuple[str, ...] = (where,)
    elif isinstance(value, list | tuple):
        texts = tuple(value)
        labels = tuple(f"{where}[{index}]" for index in range(len(texts)))
    else:
        raise DnPatternError(_located(where, f"expected a text or a list of texts, got {type(value).__name__}"))
    if not texts:
        return None
    alternatives: list[DnAlternative] = []
    for text, label in zip(texts, labels, strict=True):
        if not isinstance(text, str):
            raise DnPatternError(_located(label, f"expected a text, got {type(text).__name__}"))
        try:
            alternatives.extend(_Parser(text).pattern())
        except DnPatternError as exc:
            raise DnPatternError(_located(label, str(exc))) from None
    return DnPattern(tuple(alternatives), texts)


def _located(where: str, message: str) -> str:
    return f"{where}: {message}" if where else message


class _Parser:
    """Recursive descent over one pattern text; errors give the 1-based character position."""

    __slots__ = ("end", "pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.end = len(text)
        stripped = text.strip()
        if len(stripped) >= 2 and stripped[0] == stripped[-1] == "'":
            # CFTUTIL quoting around the whole value: scan inside it, positions stay true.
            self.pos = text.index("'") + 1
            self.end = text.rindex("'")

    def fail(self, message: str, at: int | None = None) -> NoReturn:
        position = self.pos if at is None else at
        raise DnPatternError(f"{message} (at character {position + 1})")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < self.end else ""

    def skip_blanks(self) -> None:
        while self.pos < self.end and self.text[self.pos].isspace():
            self.pos += 1

    def read_word(self) -> str:
        start = self.pos
        while self.pos < self.end and self.text[self.pos].isalpha():
            self.pos += 1
        return self.text[start : self.pos]

    def snippet(self) -> str:
        return repr(self.text[self.pos : min(self.end, self.pos + 20)])

    def pattern(self) -> list[DnAlternative]:
        self.skip_blanks()
        if self.pos >= self.end:
            self.fail("empty pattern")
        alternatives: list[DnAlternative] = []
        while True:
            self.skip_blanks()
            after_group = self.peek() == "("
            if after_group:
                alternatives.extend(self.group())
            else:
                alternatives.append(DnAlternative((self.term(),)))
            self.skip_blanks()
            if self.pos >= self.end:
                return alternatives
            if self.peek() == ",":
                self.pos += 1
                continue
            if self.peek() == ")":
                self.fail("')' without a matching '('")
            if after_group:
                self.fail(f"unexpected text after the closing parenthesis: {self.snippet()}")
            word_start = self.pos
            word = self.read_word()
            if word.isascii() and word.upper() in _OPERATOR_WORDS:
                self.fail(f'operator {word} needs parentheses, e.g. ("a" {word} "b")', at=word_start)
            self.pos = word_start
            self.fail(f"expected ',' or the end after an operand, found {self.snippet()}")

    def group(self) -> list[DnAlternative]:
        opened_at = self.pos
        self.pos += 1  # "("
        self.skip_blanks()
        if self.peek() == ")":
            self.fail("empty parentheses", at=opened_at)
        terms = [self.term()]
        kinds: set[str] = set()
        while True:
            self.skip_blanks()
            if self.pos >= self.end:
                self.fail("missing ')' for this '('", at=opened_at)
            separator_at = self.pos
            char = self.peek()
            if char == ")":
                self.pos += 1
                break
            if char == ",":
                self.pos += 1
                kinds.add("OR")
            elif char == "(":
                self.fail("nested parentheses are not supported")
            else:
                word = self.read_word()
                if not word:
                    self.fail(f"expected AND, ET, OR, OU, ',' or ')' after an operand, found {self.snippet()}")
                if not word.isascii() or word.upper() not in _OPERATOR_WORDS:
                    self.fail(f"unknown operator {word!r} (use AND, ET, OR or OU)", at=separator_at)
                kinds.add("AND" if word.upper() in _AND_WORDS else "OR")
            if len(kinds) > 1:
                self.fail(
                    "AND and OR mixed in one parenthesis: there is no precedence to apply; "
                    'write the OR as separate items, e.g. ("a" AND "b"), "c"',
                    at=separator_at,
                )
            terms.append(self.term())
        if kinds == {"AND"}:
            return [DnAlternative(tuple(terms))]
        return [DnAlternative((term,)) for term in terms]

    def term(self) -> DnTerm:
        self.skip_blanks()
        negated = self.peek() == "!"
        if negated:
            self.pos += 1
            self.skip_blanks()
            if self.peek() == "!":
                self.fail("double negation '! !'")
        return DnTerm(self.operand(), negated)

    def operand(self) -> str:
        char = self.peek()
        if char in _QUOTES:
            opened_at = self.pos
            content_start = self.pos + 1
            close = next((i for i in range(content_start, self.end) if self.text[i] in _QUOTES), -1)
            if close < 0:
                self.fail("unterminated quote", at=opened_at)
            self.pos = close + 1
            operand = normalize_operand(self.text[content_start:close])
            if not operand:
                self.fail("empty quoted operand", at=opened_at)
            return operand
        if char == "(":
            self.fail("unexpected '(': groups cannot be nested or negated")
        if not char or char in ",)":
            self.fail("missing operand")
        start = self.pos
        while self.pos < self.end and self.text[self.pos] not in _BARE_OPERAND_STOP:
            self.pos += 1
        operand = normalize_operand(self.text[start : self.pos])
        for word in operand.split():
            if word.isascii() and word.upper() in _OPERATOR_WORDS:
                self.fail(
                    f"unquoted operand {operand!r} contains the operator word {word}: "
                    'quote each operand, e.g. ("a" AND "b"), or quote the whole text',
                    at=start,
                )
        return operand
