"""Tokens of the CFTUTIL/PKIUTIL command language (domain/CFTUTIL.md §2). Pure: text in, tokens out.

* Blanks are space, tab, CR and LF; a line end is an ordinary blank. Lines are counted on LF only,
  from 1, so a token's line is the one an editor shows.
* `/* … */` comments may span lines and do not nest; one left open is an error at the line where it
  starts (the rest of the text is the comment).
* Quoted strings `'…'` or `"…"`, the quote doubled inside (`'a ''b'' c'`). A string ends on its line:
  one left open is an error and lexing resumes on the next line. The typographic quotes ‘ ’ and “ ”
  (pasted from documentation) count as `'` and `"`; the token says so, so the caller can warn.
  CFTUTIL's scripting escapes (`/xhh`, `//` …) are not applied: they would corrupt paths and DNs.
* `(`, `)` and `,` stand alone. Everything else up to one of those, a blank, a quote or `/*` is a
  word; `=` is an ordinary character of a word (the parser splits `ID=X` where a name is expected,
  and keeps `O=ACME` whole where a value is).
* The continuation mark: a `-` that is the last non-blank of a line, outside quotes, after a blank or
  a comma, is skipped (Axway names `-` as the continuation character without saying more; since a
  line end is already a blank, skipping it is all it can mean).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Literal, NamedTuple

TokenKind = Literal["word", "quoted", "open", "close", "comma", "error"]

_SINGLE = "'‘’"
_DOUBLE = '"“”'
# Blanks within a line are absorbed by each token's match, so large exports cost one match per
# token and one per line end rather than one per blank run.
_TOKEN = re.compile(
    rf"""
    [ \t\r]*
    (?:
      (?P<newline>\n[ \t\r\n]*)
    | (?P<comment>/\*.*?\*/)
    | (?P<open_comment>/\*)
    | (?P<single>[{_SINGLE}](?:[^{_SINGLE}\n]|[{_SINGLE}]{{2}})*[{_SINGLE}])
    | (?P<double>[{_DOUBLE}](?:[^{_DOUBLE}\n]|[{_DOUBLE}]{{2}})*[{_DOUBLE}])
    | (?P<open_string>[{_SINGLE}{_DOUBLE}][^\n]*)
    | (?P<open>\()
    | (?P<close>\))
    | (?P<comma>,)
    | (?P<word>(?:[^ \t\r\n,()/{_SINGLE}{_DOUBLE}]|/(?!\*))+)
    | (?P<end>\Z)
    )
    """,
    re.VERBOSE | re.DOTALL,
)
_REST_OF_LINE_BLANK = re.compile(r"[ \t\r]*(?:\n|\Z)")


class Token(NamedTuple):
    kind: TokenKind
    text: str  # a quoted string's content, doubled quotes undone; an error token's message
    line: int
    quote: str = ""  # "'" or '"' for a quoted string
    curly: bool = False  # written with typographic quotes
    line_start: bool = False  # the first token on its line


def tokenize(text: str) -> Iterator[Token]:
    """The tokens of `text`, errors included as `error` tokens; never raises."""
    line = 1
    line_start = True
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        # The commonest kinds first: this loop runs once per token of exports of many megabytes.
        if kind == "word":
            value = match.group(kind)
            if value == "-":
                start = match.start(kind)
                if (start == 0 or text[start - 1] in " \t\r\n,") and _REST_OF_LINE_BLANK.match(text, match.end()):
                    continue  # the continuation mark
            yield Token("word", value, line, "", False, line_start)
        elif kind == "newline":
            line += match.group(kind).count("\n")
            line_start = True
            continue
        elif kind == "single" or kind == "double":
            value = match.group(kind)
            quote, curlies = ("'", "‘’") if kind == "single" else ('"', "“”")
            curly = curlies[0] in value or curlies[1] in value
            body = value[1:-1]
            if curly:
                body = body.translate({ord(c): quote for c in curlies})
            yield Token("quoted", body.replace(quote * 2, quote), line, quote, curly, line_start)
        elif kind == "comma":
            yield Token("comma", ",", line, "", False, line_start)
        elif kind == "open":
            yield Token("open", "(", line, "", False, line_start)
        elif kind == "close":
            yield Token("close", ")", line, "", False, line_start)
        elif kind == "comment":
            line += match.group(kind).count("\n")
            continue
        elif kind == "open_string":
            value = match.group(kind)
            message = f"quoted string {value[:40]!r} is not closed on its line"
            yield Token("error", message, line, "", False, line_start)
        elif kind == "open_comment":
            yield Token("error", "comment /* is never closed", line, "", False, line_start)
            return
        else:  # the end of the text
            return
        line_start = False
