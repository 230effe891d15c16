"""import-cft: the examples of domain/CFTUTIL.md §11 and one table per rule of §2-§8."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.cftimport import import_cft, lexer, mapping, parser, report
from sidecar.cftimport.mapping import map_commands
from sidecar.cftimport.parser import ListValue, Scalar, parse_commands
from tests.support.cftexport import EXAMPLE_A, EXAMPLE_B, EXAMPLE_C, EXAMPLE_D, EXPECTED_A, REPORT_A

OUTPUT = Path("/srv/sidecar/sidecar.yaml")


def run(*texts: str, backend: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """Import texts named a.cft, b.cft … (or t.cft for one text after BASE); the tree and the report."""
    sources = [(f"{chr(ord('a') + i)}.cft", text) for i, text in enumerate(texts)]
    result = import_cft(sources, backend=backend, output=OUTPUT)
    assert not result.problems, result.problems
    assert result.yaml_text is not None
    tree = yaml.safe_load(result.yaml_text)
    assert tree == result.tree or (tree is None and result.tree == {})
    return result.tree, [str(note) for note in result.notes]


def same(actual: Any, expected: Any) -> None:
    """Equal, key order included (the YAML is written in the order of CFTUTIL.md §7)."""
    assert json.dumps(actual, indent=1) == json.dumps(expected, indent=1)


TLS10_12 = {"min": "tls1.0", "max": "tls1.2"}


def test_example_a_hand_written() -> None:
    tree, notes = run(EXAMPLE_A)
    same(tree, yaml.safe_load(EXPECTED_A))
    assert notes == REPORT_A


def test_example_b_cftext_style() -> None:
    imported = map_commands(parse_commands(EXAMPLE_B, "b.cft").commands)
    same(imported.tree["profiles"], [{
        "id": "SSLOUT", "direct": "client", "usercid": "OURCERT", "rootcid": ["CBROOT"], "verify": "required",
        "ciphlist": [49199, 60], "version": TLS10_12, "depth": 9, "dnuser": ["O=Central Bank/OU=Clearing"],
        "keyext": "verify",
    }])  # fmt: skip
    same(imported.tree["pki"], {"OURCERT": {"cert": "pki/OURCERT.pem", "key": "pki/OURCERT.key"},
                                "CBROOT": {"cert": "pki/CBROOT.pem"}})  # fmt: skip
    assert [str(note) for note in imported.notes] == ["b.cft:1: ignored: CFTSSL SSLOUT/client: TRACE=0"]


def test_example_c_mode_and_quoting() -> None:
    tree, notes = run(EXAMPLE_A, EXAMPLE_C)
    same(tree["profiles"][2:], [
        {"id": "CHK1", "direct": "server", "verify": "required", "ciphlist": [156, 157], "version": TLS10_12,
         "depth": 9},
        {"id": "CHK1", "direct": "client", "verify": "none", "ciphlist": [157, 156], "version": TLS10_12,
         "depth": 9, "parm": "a 'quoted' word"},
    ])  # fmt: skip
    same(tree["partners"][1], {"id": "VIGO", "nrpart": "Vigo", "nrpassw": "ABC", "ssl": "CHK1", "prot": ["PTLS"]})
    assert notes == [*REPORT_A, "b.cft:5: warning: CFTPART OLDP: MODE=DELETE: not defined before: nothing deleted"]


def test_example_d_pkiext_output() -> None:
    tree, notes = run(EXAMPLE_A, EXAMPLE_D)
    same(tree["pki"], {
        "BRCERT": {"cert": "pki/BRCERT.pem", "key": "pki/BRCERT.key"},
        "BANKROOT": {"cert": "pki/ROOT0001"},
        "BANKSUB": {"cert": "pki/BANKSUB.pem"},
    })  # fmt: skip
    assert notes == [
        *REPORT_A,
        "b.cft:4: warning: PKICER BRCERT: IFORM=PKCS12: sidecar reads PEM or DER files: extract its certificate "
        "and key from pki/brcert.p12 to pki/BRCERT.pem and pki/BRCERT.key",
        "b.cft:4: warning: PKICER BRCERT: IKPASSW: the key password is not imported (CFT reads it from "
        "/run/secrets/p12pass): set pki.BRCERT.key_password_file",
    ]


# --------------------------------------------------------------------------------------------
# Lexical rules and syntax (§2, §3)


def shapes(text: str) -> list[tuple[str, list[tuple[str, Any]]]]:
    parsed = parse_commands(text, "t.cft")
    assert parsed.problems == ()
    return [(c.name, [(p.name, p.value) for p in c.params]) for c in parsed.commands]


def bare(text: str) -> Scalar:
    return Scalar(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # case-insensitive names; in name position a word ends at `=`, in value position `=` is a character
        ("cftssl id=x, Direct = server", [("CFTSSL", [("ID", bare("x")), ("DIRECT", bare("server"))])]),
        ("CFTSSL DNUSER = O=ACME/CN=x", [("CFTSSL", [("DNUSER", bare("O=ACME/CN=x"))])]),
        ("CFTSSL DNUSER=O=ACME", [("CFTSSL", [("DNUSER", bare("O=ACME"))])]),
        ("CFTSSL ID =X", [("CFTSSL", [("ID", bare("X"))])]),
        # quotes, the quote doubled inside; the other quote is an ordinary character
        ("C P = 'a ''b'' c'", [("C", [("P", Scalar("a 'b' c", "'"))])]),
        ('C P = "say ""hi"" it\'s"', [("C", [("P", Scalar('say "hi" it\'s', '"'))])]),
        ("C P = ''", [("C", [("P", Scalar("", "'"))])]),
        # comments anywhere outside quotes, spanning lines, the CFTEXT commented-out parameter
        ("C /* x\n y */ P = 1 /* z */, Q = '/* not a comment */'",
         [("C", [("P", bare("1")), ("Q", Scalar("/* not a comment */", "'"))])]),
        ("C P = 1,\n /* Q = '',*/\n R = 2", [("C", [("P", bare("1")), ("R", bare("2"))])]),
        # lists over lines, CFTEXT's ( 'A',↵ 'B'), items without commas, the empty list
        ("C L = ( 'A',\n 'B')", [("C", [("L", ListValue((Scalar("A", "'"), Scalar("B", "'"))))])]),
        ("C L = (a b)", [("C", [("L", ListValue((bare("a"), bare("b"))))])]),
        ("C L = ()", [("C", [("L", ListValue(()))])]),
        # commas optional between parameters, a stray one before the next command
        ("C P = 1 Q = 2,\nD R = 3", [("C", [("P", bare("1")), ("Q", bare("2"))]), ("D", [("R", bare("3"))])]),
        ("C P = 1,\n,\nD", [("C", [("P", bare("1"))]), ("D", [])]),
        # the continuation mark: the last non-blank of a line after a blank or a comma
        ("C P = 1, -\n  Q = 2", [("C", [("P", bare("1")), ("Q", bare("2"))])]),
        ("C P = 1 -  \r\n  Q = 2", [("C", [("P", bare("1")), ("Q", bare("2"))])]),
        ("C P = a-\n Q = b-c", [("C", [("P", bare("a-")), ("Q", bare("b-c"))])]),
        ("C P = - , Q = 2", [("C", [("P", bare("-")), ("Q", bare("2"))])]),
        # bare values keep = / % : . * ? # @ &
        ("C P = %uconf:a.b%/x?y*#@&", [("C", [("P", bare("%uconf:a.b%/x?y*#@&"))])]),
        # a name not followed by `=` starts a command
        ("PKIUTIL PKICER ID = X", [("PKIUTIL", []), ("PKICER", [("ID", bare("X"))])]),
    ],
)  # fmt: skip
def test_lexical_and_syntax_rules(text: str, expected: list[tuple[str, list[tuple[str, Any]]]]) -> None:
    assert shapes(text) == expected


def test_typographic_quotes_are_read_as_quotes() -> None:
    parsed = parse_commands("C P = ‘a’, Q = “b”", "t.cft")
    assert [p.value for p in parsed.commands[0].params] == [Scalar("a", "'"), Scalar("b", '"')]
    assert all(isinstance(p.value, Scalar) and p.value.curly for p in parsed.commands[0].params)


def test_lines_are_those_of_an_editor() -> None:
    parsed = parse_commands("/* one\ntwo */\r\nCFTSSL ID = X,\n\n  DEPTH = '3'\nCFTPART ID=P", "t.cft")
    assert [(c.name, c.line) for c in parsed.commands] == [("CFTSSL", 3), ("CFTPART", 6)]
    assert [p.line for p in parsed.commands[0].params] == [3, 5]


ONLY = "(CFTUTIL comments are only /* … */)"


@pytest.mark.parametrize(
    ("text", "errors"),
    [
        ("* a comment?\nCFTSSL ID=X", [f"t.cft:1: error: expected a command name, got '*' {ONLY}"]),
        ("CFTSSL ID=X\n# note\nCFTPART ID=Y", [f"t.cft:2: error: expected a parameter name, got '#' {ONLY}"]),
        ("CFTSSL ID=X\n// note", [f"t.cft:2: error: expected a parameter name, got '//' {ONLY}"]),
        ("CFTSSL ID='X\n  DEPTH=3", ["t.cft:1: error: quoted string \"'X\" is not closed on its line"]),
        ("CFTSSL ID=X /* open\n\n", ["t.cft:1: error: comment /* is never closed"]),
        ("CFTSSL ROOTCID=(A,\n B", ["t.cft:1: error: ROOTCID: list opened with '(' is never closed"]),
        ("CFTSSL ROOTCID=(A, (B))", ["t.cft:1: error: ROOTCID: lists do not nest"]),
        ("ID = X", ["t.cft:1: error: parameter 'ID' outside a command (expected a command name)"]),
        ("CFTSSL ID =", ["t.cft:1: error: ID: a value is expected after '='"]),
        ("CFTSSL ID = )", ["t.cft:1: error: ID: a value is expected after '=', got ')'"]),
        ("CFTSSL 'X'", ["t.cft:1: error: expected a parameter name, got the quoted string 'X'"]),
        # every error is listed, reading resumes at the next command line
        ("* one\nCFTSSL ID=X, 9=1\n  DEPTH = 3\nCFTPART ID='P\nCFTTCP ID=P, HOST=(A",
         ["t.cft:1: error: expected a command name, got '*' (CFTUTIL comments are only /* … */)",
          "t.cft:2: error: expected a parameter name, got '9=1'",
          "t.cft:4: error: quoted string \"'P\" is not closed on its line",
          "t.cft:5: error: HOST: list opened with '(' is never closed"]),
    ],
)  # fmt: skip
def test_syntax_errors_are_listed_with_file_and_line(text: str, errors: list[str]) -> None:
    assert [str(problem) for problem in parse_commands(text, "t.cft").problems] == errors


def test_a_file_with_errors_gives_no_configuration() -> None:
    result = import_cft([("a.cft", EXAMPLE_A), ("b.cft", "CFTSSL ID='X")])
    assert result.yaml_text is None and result.notes == ()
    assert [str(p) for p in result.problems] == ['b.cft:1: error: quoted string "\'X" is not closed on its line']


def test_rendered_commands_parse_back() -> None:
    parsed = parse_commands(EXAMPLE_A + EXAMPLE_B + EXAMPLE_C, "t.cft")
    again = parse_commands(parser.render_commands(parsed.commands), "r.cft")
    assert [(c.name, [(p.name, p.value) for p in c.params]) for c in again.commands] == [
        (c.name, [(p.name, p.value) for p in c.params]) for c in parsed.commands
    ]


# --------------------------------------------------------------------------------------------
# Mapping rules (§4-§8). BASE gives one TLS listener with its backend; the text under test is t.cft.

BASE = """\
CFTNET  ID=N0, HOST=INADDR_ANY
CFTPROT ID=PLAIN, TYPE=PESIT, NET=N0, SAP=1761
CFTPROT ID=TLS, TYPE=PESIT, NET=N0, SAP=1762, SSL=SRV
CFTSSL  ID=SRV, DIRECT=SERVER, USERCID=ME, ROOTCID=CA, CIPHLIST=(49199)
"""


def on_base(text: str, backend: str | None = None) -> tuple[dict[str, Any], list[str]]:
    sources = [("a.cft", BASE), ("t.cft", text)]
    result = import_cft(sources, backend=backend, output=OUTPUT)
    assert not result.problems, result.problems
    return result.tree, [str(note) for note in result.notes if note.file == "t.cft"]


def profile(tree: dict[str, Any], ident: str, direct: str = "server") -> dict[str, Any]:
    return next(p for p in tree["profiles"] if p["id"] == ident and p["direct"] == direct)


def test_mode_replace_does_not_merge_and_keeps_the_first_position() -> None:
    tree, notes = on_base("CFTSSL ID=P1, DIRECT=CLIENT, CIPHLIST=(156), DNUSER='CN=a'\n"
                          "CFTSSL ID=P2, DIRECT=CLIENT, CIPHLIST=(156)\n"
                          "CFTSSL ID=P1, DIRECT=CLIENT, CIPHLIST=(157)")  # fmt: skip
    assert [p["id"] for p in tree["profiles"]] == ["SRV", "P1", "P2"]
    same(profile(tree, "P1", "client"),
         {"id": "P1", "direct": "client", "verify": "none", "ciphlist": [157], "version": TLS10_12,
          "depth": 9})  # fmt: skip
    assert notes == []


def test_mode_create_keeps_the_first_and_delete_then_define_moves_to_the_end() -> None:
    tree, notes = on_base("CFTSSL ID=P1, DIRECT=CLIENT, CIPHLIST=(156)\n"
                          "CFTSSL ID=P1, DIRECT=CLIENT, CIPHLIST=(157), MODE=CREATE\n"
                          "CFTSSL ID=SRV, DIRECT=SERVER, MODE=DELETE\n"
                          "CFTSSL ID=SRV, DIRECT=SERVER, USERCID=ME, ROOTCID=CA, CIPHLIST=(49200)\n"
                          "CFTSSL ID=GONE, DIRECT=SERVER, MODE=delete\n"
                          "CFTSSL ID=X, DIRECT=SERVER, MODE=UPDATE")  # fmt: skip
    assert [(p["id"], p["ciphlist"]) for p in tree["profiles"]] == [("P1", [156]), ("SRV", [49200])]
    assert notes == [
        "t.cft:2: error: CFTSSL P1/client: MODE=CREATE: already defined at t.cft:1: the first definition is kept",
        "t.cft:5: warning: CFTSSL GONE/server: MODE=DELETE: not defined before: nothing deleted",
        "t.cft:6: error: CFTSSL X/server: MODE=UPDATE: not REPLACE, CREATE or DELETE: skipped",
    ]


def test_cfttcp_is_keyed_by_id_and_class() -> None:
    tree, notes = on_base("CFTPART ID=P, PROT=TLS\n"
                          "CFTTCP ID=P, HOST=10.0.0.1\n"
                          "CFTTCP ID=P, CLASS=2, HOST=10.0.0.2\n"
                          "CFTTCP ID=P, CLASS=2, MODE=DELETE\n"
                          "CFTTCP ID=P, CLASS=3, HOST=10.0.0.3")  # fmt: skip
    assert tree["partners"] == [{"id": "P", "prot": ["TLS"], "host": ["10.0.0.1"]}]
    assert notes == ["t.cft:5: skipped: CFTTCP P/CLASS=3: CLASS=3 is not the class of P's listener"]


def test_the_partners_cfttcp_is_the_one_of_its_listeners_class() -> None:
    text = ("CFTNET ID=N2, HOST=10.1.1.1, CLASS=2\n"
            "CFTPROT ID=TLS2, TYPE=PESIT, NET=N2, SAP=1764, SSL=SRV\n"
            "CFTPART ID=P, PROT=(TLS2, TLS)\n"
            "CFTTCP ID=P, HOST=10.0.0.1\n"
            "CFTTCP ID=P, CLASS=2, HOST=10.0.0.2, VERIFY=7")  # fmt: skip
    tree, notes = on_base(text)
    assert tree["listeners"][1] == {"id": "TLS2", "listen": "10.1.1.1:1764", "ssl": "SRV",
                                    "backend": "127.0.0.1:1761", "identify": "pesit"}  # fmt: skip
    assert tree["partners"] == [{"id": "P", "prot": ["TLS2", "TLS"], "host": ["10.0.0.2"], "host_verify": 7}]
    assert notes == ["t.cft:4: skipped: CFTTCP P: CLASS=1 is not the class of P's listener"]


def test_direct_absent_is_client_with_a_warning() -> None:
    tree, notes = on_base("CFTSSL ID=C1, CIPHLIST=(49199)")
    assert profile(tree, "C1", "client")["verify"] == "none"
    assert notes == ["t.cft:1: warning: CFTSSL C1/client: DIRECT absent: CLIENT assumed (CFT's default)"]


@pytest.mark.parametrize(
    ("text", "listen", "notes"),
    [
        ("UCONFSET ID=my.sap, VALUE=2762\nCFTPROT ID=T2, NET=N0, TYPE=PESIT, SAP=%uconf:MY.SAP%, SSL=SRV",
         "0.0.0.0:2762", []),
        ("UCONFSET ID=my.sap, VALUE=2762\nUCONFSET ID=my.sap, VALUE=2763\n"
         "CFTPROT ID=T2, NET=N0, TYPE=PESIT, SAP='%uconf:my.sap%', SSL=SRV", "0.0.0.0:2763", []),
        ("CFTPROT ID=T2, NET=N0, TYPE=PESIT, SAP=%uconf:samples.pesitssl_sap.value%, SSL=SRV", "0.0.0.0:1762",
         ["t.cft:1: warning: CFTPROT T2: SAP: %uconf:samples.pesitssl_sap.value% is not set in the input: "
          "installer default 1762"]),
        ("CFTPROT ID=T2, NET=N0, TYPE=PESIT, SAP=%uconf:nope%, SSL=SRV", None,
         ["t.cft:1: error: CFTPROT T2: SAP: %uconf:nope% is not set in the input: SAP left out"]),
        ("CFTPROT ID=T2, NET=N0, TYPE=PESIT, SAP=%env:PORT%, SSL=SRV", None,
         ["t.cft:1: error: CFTPROT T2: SAP: %env:PORT% cannot be read here: SAP left out"]),
        # SAP forms: a port, a cft-N service name, `#` + hex ASCII
        ("CFTPROT ID=T2, NET=N0, TYPE=PESIT, SAP=cft-3, SSL=SRV", "0.0.0.0:1764", []),
        ("CFTPROT ID=T2, NET=N0, TYPE=PESIT, SAP=#31373632, SSL=SRV", "0.0.0.0:1762", []),
        ("CFTPROT ID=T2, NET=N0, TYPE=PESIT, SAP=pesit, SSL=SRV", None,
         ["t.cft:1: error: CFTPROT T2: SAP=pesit: not a port or a known service name (cft-0 … cft-7): left out"]),
        ("CFTPROT ID=T2, NET=N0, TYPE=PESIT, SAP=#zz, SSL=SRV", None,
         ["t.cft:1: error: CFTPROT T2: SAP=#zz: not hexadecimal ASCII: left out"]),
    ],
)  # fmt: skip
def test_references_and_sap_forms(text: str, listen: str | None, notes: list[str]) -> None:
    tree, got = on_base(text)
    listener = tree["listeners"][1]
    assert listener.get("listen") == listen
    assert got == notes


def test_active_protocols_follow_cftparm_prot() -> None:
    text = ("CFTPARM ID=IDPARM0, PROT=(PLAIN, TLS)\n"
            "CFTPARM ID=OTHER, PROT=(TLS3)\n"
            "CFTPROT ID=TLS3, TYPE=PESIT, NET=N0, SAP=1765, SSL=SRV")  # fmt: skip
    tree, notes = on_base(text)
    assert [listener["id"] for listener in tree["listeners"]] == ["TLS"]
    assert notes == [
        "t.cft:1: skipped: CFTPARM IDPARM0: no equivalent in sidecar; its PROT list selects the protocols: "
        "(PLAIN, TLS)",
        "t.cft:2: skipped: CFTPARM OTHER: not the active CFTPARM (IDPARM0)",
        "t.cft:3: skipped: CFTPROT TLS3: not in the PROT list of CFTPARM IDPARM0: not active",
    ]
    tree, _ = on_base("UCONFSET ID=cft.param_id, VALUE=other\n" + text)
    assert [listener["id"] for listener in tree["listeners"]] == ["TLS3"]
    tree, _ = on_base("UCONFSET ID=cft.param_id, VALUE=missing\n" + text)
    assert [listener["id"] for listener in tree["listeners"]] == ["TLS"]


@pytest.mark.parametrize(
    ("text", "listener", "notes"),
    [
        ("CFTPROT ID=S, TYPE=SFTP, NET=N0, SAP=1763, SSL=SRV", None,
         ["t.cft:1: skipped: CFTPROT S: TYPE=SFTP is SSH, not TLS: not proxied"]),
        ("CFTPROT ID=R, TYPE=PESIT, NET=N0, SSL=CLI\nCFTSSL ID=CLI, DIRECT=CLIENT, CIPHLIST=(49199)",
         {"id": "R", "ssl": "CLI"}, []),
        ("CFTPROT ID=O, TYPE=ODETTE, NET=N0, SAP=3305, SSL=SRV\nCFTPROT ID=OP, TYPE=ODETTE, NET=N0, SAP=3306",
         {"id": "O", "listen": "0.0.0.0:3305", "ssl": "SRV", "backend": "127.0.0.1:3306", "identify": "none"},
         ["t.cft:2: skipped: CFTPROT OP: plaintext (no SSL): the backend of O"]),
        ("CFTPROT ID=T6, NET=N6, SAP=1762, SSL=SRV\nCFTNET ID=N6, HOST=IN6ADDR_ANY\n"
         "CFTPROT ID=P6, TYPE=PESIT, NET=N6, SAP=1761",
         {"id": "T6", "listen": "[::]:1762", "ssl": "SRV", "identify": "pesit"},
         ["t.cft:1: warning: CFTPROT T6: TYPE absent: PESIT assumed",
          "t.cft:1: error: CFTPROT T6: no backend: several plaintext CFTPROTs of TYPE=PESIT could be it (PLAIN, P6): "
          "give it with --backend HOST:PORT",
          "t.cft:1: error: CFTPROT T6: listeners[1].backend: is required for a listener with `listen`",
          "t.cft:3: skipped: CFTPROT P6: plaintext (no SSL): nothing to proxy"]),
        ("CFTPROT ID=T7, TYPE=PESIT, NET=N7, SAP=1762, SSL=SRV\nCFTNET ID=N7, HOST=10.0.0.9, CALL=OUT, MAXCNX=9",
         {"id": "T7", "ssl": "SRV"},
         ["t.cft:1: warning: CFTPROT T7: NET=N7 has CALL=OUT: requester only, no listen",
          "t.cft:2: ignored: CFTNET N7: CALL=OUT, MAXCNX=9"]),
        ("CFTPROT ID=T8, TYPE=PESIT, SAP=1762, SSL=NOPE, DYNAM=YES",
         {"id": "T8", "listen": "0.0.0.0:1762", "ssl": "NOPE", "backend": "127.0.0.1:1761", "identify": "pesit"},
         ["t.cft:1: warning: CFTPROT T8: NET absent: listening on every IPv4 address (0.0.0.0)",
          "t.cft:1: error: CFTPROT T8: SSL=NOPE: no CFTSSL ID=NOPE DIRECT=SERVER (CFT refuses to start: CFTP20F)",
          "t.cft:1: ignored: CFTPROT T8: DYNAM=YES"]),
    ],
)  # fmt: skip
def test_listeners(text: str, listener: dict[str, Any] | None, notes: list[str]) -> None:
    tree, got = on_base(text)
    if listener is None:
        assert len(tree["listeners"]) == 1
    else:
        same(tree["listeners"][1], listener)
    assert got == notes


def test_backend_from_a_specific_host_or_given() -> None:
    text = "CFTNET ID=N0, HOST=192.0.2.5"
    tree, _ = on_base(text)
    assert tree["listeners"][0]["listen"] == "192.0.2.5:1762"
    assert tree["listeners"][0]["backend"] == "192.0.2.5:1761"
    result = import_cft([("a.cft", BASE)], backend="[::1]:7000")
    assert result.tree["listeners"][0]["backend"] == "[::1]:7000"
    assert [str(note) for note in result.notes] == [
        "a.cft:2: skipped: CFTPROT PLAIN: plaintext (no SSL): nothing to proxy"
    ]


def test_no_backend_is_an_error_and_the_loader_says_so_too() -> None:
    tree, notes = run("CFTPROT ID=T, TYPE=PESIT, SAP=1762, SSL=S\n"
                      "CFTSSL ID=S, DIRECT=SERVER, USERCID=ME, ROOTCID=CA, CIPHLIST=(49199)")  # fmt: skip
    assert "backend" not in tree["listeners"][0]
    assert notes == [
        "a.cft:1: warning: CFTPROT T: NET absent: listening on every IPv4 address (0.0.0.0)",
        "a.cft:1: error: CFTPROT T: no backend: no plaintext CFTPROT (without SSL) of TYPE=PESIT with a SAP: "
        "give it with --backend HOST:PORT",
        "a.cft:1: error: CFTPROT T: listeners[0].backend: is required for a listener with `listen`",
    ]


@pytest.mark.parametrize(
    ("written", "direct", "ciphlist", "notes"),
    [
        ("(47, 156, 49199, 4865, 53, 60)", "SERVER", [49199, 156, 60, 47, 53, 4865], []),
        ("(47, 156, 49199)", "CLIENT", [47, 156, 49199], []),
        ("('10', '49199', '4', '5')", "SERVER", [49199],
         ["t.cft:1: warning: CFTSSL X/server: CIPHLIST: 10, 4, 5 dropped (NULL, RC4, DES or 3DES)"]),
        ("(10)", "CLIENT", None,
         ["t.cft:1: warning: CFTSSL X/client: CIPHLIST: 10 dropped (NULL, RC4, DES or 3DES): none left, "
          "sidecar's default list applies"]),
        ("( '')", "CLIENT", None,
         ["t.cft:1: warning: CFTSSL X/client: CIPHLIST absent (mandatory in CFT): sidecar's default list applies"]),
        ("49199", "SERVER", [49199], []),
    ],
)  # fmt: skip
def test_ciphlist(written: str, direct: str, ciphlist: list[int] | None, notes: list[str]) -> None:
    tree, got = on_base(f"CFTSSL ID=X, DIRECT={direct}, CIPHLIST={written}")
    assert profile(tree, "X", direct.lower()).get("ciphlist") == ciphlist
    assert got == notes


@pytest.mark.parametrize(
    ("uconf", "version", "expected", "notes"),
    [
        ("", "TLSV1", TLS10_12, []),
        ("", "tlsv1comp", TLS10_12, []),
        ("UCONFSET ID=cft.ssl.version_min, VALUE=tls_1.2\nUCONFSET ID=cft.ssl.version_max, VALUE=tls_1.3\n", "",
         {"min": "tls1.2", "max": "tls1.3"}, []),
        ("", "SSLV3", TLS10_12, ["t.cft:1: warning: CFTSSL X/client: VERSION=SSLV3: SSL 3.0 is not available: "
                                 "tls1.0 is the lowest"]),
        ("UCONFSET ID=cft.ssl.version_min, VALUE=ssl_3.0\n", "", TLS10_12,
         ["t.cft:2: warning: CFTSSL X/client: UCONF cft.ssl.version_min=ssl_3.0: SSL 3.0 is not available, "
          "tls1.0 used"]),
    ],
)  # fmt: skip
def test_version(uconf: str, version: str, expected: dict[str, str], notes: list[str]) -> None:
    text = f"{uconf}CFTSSL ID=X, DIRECT=CLIENT, CIPHLIST=(49199)" + (f", VERSION={version}" if version else "")
    tree, got = on_base(text)
    assert profile(tree, "X", "client")["version"] == expected
    assert got == notes


@pytest.mark.parametrize(
    ("written", "depth", "notes"),
    [
        ("", 9, []),
        (", DEPTH='10'", 9, []),
        (", DEPTH=3", 2, []),
        (", DEPTH=2", 1, []),
        (", DEPTH=1", 1,
         ["t.cft:1: warning: CFTSSL X/client: DEPTH=1: translated to depth 1, which also admits one intermediate CA"]),
        (", DEPTH=0", 0, []),
        (", DEPTH=11", 9, ["t.cft:1: error: CFTSSL X/client: DEPTH=11: not a number from 0 to 10: left out"]),
    ],
)  # fmt: skip
def test_depth_counts_intermediates_only(written: str, depth: int, notes: list[str]) -> None:
    tree, got = on_base(f"CFTSSL ID=X, DIRECT=CLIENT, CIPHLIST=(49199){written}")
    assert profile(tree, "X", "client")["depth"] == depth
    assert got == notes


@pytest.mark.parametrize(
    ("written", "dnuser", "notes"),
    [
        ("('O=A/CN=x', \"CN=y\")", ["O=A/CN=x", "CN=y"], []),
        ("'(\"O=Bank\" AND ! \"OU=Lille\")'", '("O=Bank" AND ! "OU=Lille")', []),
        ("'(CN=a, CN=b)'", ["CN=a", "CN=b"], []),
        ("'CN=a , CN=b'", ["CN=a", "CN=b"], []),
        ("'/O=ACME Corp/CN=x'", "/O=ACME Corp/CN=x", []),
        ("cn=partner", "CN=PARTNER",
         ["t.cft:1: warning: CFTSSL X/client: DNUSER: written without quotes, so CFTUTIL stores it in upper case: "
          "imported so"]),
    ],
)  # fmt: skip
def test_dnuser_forms(written: str, dnuser: Any, notes: list[str]) -> None:
    tree, got = on_base(f"CFTSSL ID=X, DIRECT=CLIENT, CIPHLIST=(49199), DNUSER={written}")
    assert profile(tree, "X", "client")["dnuser"] == dnuser
    assert got == notes


def test_profile_keywords_and_ignored_parameters() -> None:
    tree, notes = on_base("CFTSSL ID=X, DIRECT=SERVER, VERIFY=ENFORCED, CIPHLIST=(49199), KEYEXT=verify, "
                          "CACHE=YES, PARM='Some Text', COMMENT=hello, PASSW=secret, TRACE=255, CERFNAME=c, "
                          "INTERCID=(I1, I2), ORIGIN=COPILOT, TRACE=3")  # fmt: skip
    same(profile(tree, "X"), {"id": "X", "direct": "server", "verify": "required", "ciphlist": [49199],
                              "version": TLS10_12, "depth": 9, "keyext": "verify", "session_tickets": True,
                              "parm": "Some Text", "comment": "HELLO"})  # fmt: skip
    assert notes == [
        "t.cft:1: warning: CFTSSL X/server: TRACE given twice (lines 1 and 1): the last wins",
        "t.cft:1: warning: CFTSSL X/server: VERIFY=ENFORCED on a server profile: required",
        "t.cft:1: ignored: CFTSSL X/server: PASSW=***, TRACE=3, CERFNAME=C, INTERCID=(I1, I2)",
    ]


@pytest.mark.parametrize(
    ("text", "partners", "notes"),
    [
        ("CFTPART ID=P, PROT=*, SAP=(1762)", [{"id": "P", "prot": ["*"], "sap": 1762}], []),
        ("CFTPART ID=P, PROT=(X, T*), SAP=(1, 2)", [{"id": "P", "prot": ["TLS"], "sap": 2}],
         ["t.cft:1: warning: CFTPART P: PROT X not proxied"]),
        ("CFTPART ID=P, PROT=(PLAIN)", [], ["t.cft:1: warning: CFTPART P: PROT PLAIN not proxied",
                                           "t.cft:1: warning: CFTPART P: no PROT entry names an imported listener: "
                                           "partner not imported"]),
        ("CFTPART ID=P", [{"id": "P"}],
         ["t.cft:1: warning: CFTPART P: PROT absent: the partner may arrive on every listener"]),
        ("CFTPART ID=P, PROT=TLS, STATE=NOACTIVE", [],
         ["t.cft:1: warning: CFTPART P: STATE=NOACTIVE: partner not imported"]),
        ("CFTPART ID=P, PROT=TLS, NRPASSW='****', NSPASSW=x, STATE=ACTIVEBOTH, SSL=NONE",
         [{"id": "P", "ssl": "NONE", "prot": ["TLS"]}],
         ["t.cft:1: warning: CFTPART P: NRPASSW is masked (only '*'): left out, set nrpassw or nrpassw_file by hand",
          "t.cft:1: warning: CFTPART P: SSL=NONE: no such CFTSSL",
          "t.cft:1: ignored: CFTPART P: NSPASSW=***, STATE=ACTIVEBOTH"]),
        ("CFTTCP ID=Q, HOST=h", [], ["t.cft:1: warning: CFTTCP Q: no CFTPART Q: not imported"]),
        ("CFTPART ID=P, PROT=TLS\nCFTTCP ID=P, HOST=(a.example, ' b '), VERIFY='0', CNXIN=2",
         [{"id": "P", "prot": ["TLS"], "host": ["a.example", "b"]}], ["t.cft:2: ignored: CFTTCP P: CNXIN=2"]),
    ],
)  # fmt: skip
def test_partners(text: str, partners: list[dict[str, Any]], notes: list[str]) -> None:
    tree, got = on_base(text)
    same(tree.get("partners", []), partners)
    assert got == notes


def test_a_client_usercid_substituted_per_partner_cannot_be_imported() -> None:
    tree, notes = on_base("CFTSSL ID=C, DIRECT=CLIENT, USERCID=&PART, CIPHLIST=(49199)")
    assert "usercid" not in profile(tree, "C", "client")
    assert notes == ["t.cft:1: error: CFTSSL C/client: USERCID=&PART: substituted per partner by CFT: "
                     "cannot be imported: left out"]  # fmt: skip


def test_a_partner_for_every_listener_when_there_is_none() -> None:
    result = import_cft([("t.cft", "CFTPART ID=P, PROT=*\nCFTTCP ID=P, HOST=h")])
    assert result.tree == {"partners": [{"id": "P", "prot": ["*"], "host": ["h"]}]}


def test_pki_entries_from_pkicer_and_pkientity() -> None:
    text = ("CFTSSL ID=C, DIRECT=CLIENT, USERCID=OWN, ROOTCID=(CA, GROUP), CIPHLIST=(49199)\n"
            "PKICER ID=OWN, INAME=certs/own.pem, IFORM=PEM, IKNAME=certs/own.key, IKFORM=PKCS8, PKIPASSW=x, "
            "STATE=INACT\n"
            "PKICER ID=CA, INAME='certs/ca.der', IFORM=DER\n"
            "PKIENTITY ID=GROUP, CERTIFICATES=\"('R1','R2')\"\n"
            "PKICER ID=UNUSED, INAME=x.pem")  # fmt: skip
    tree, notes = on_base(text)
    same(tree["pki"], {
        "ME": {"cert": "pki/ME.pem", "key": "pki/ME.key"},
        "CA": {"cert": "certs/ca.der"},
        "OWN": {"cert": "certs/own.pem", "key": "certs/own.key"},
        "GROUP": {"cert": "pki/GROUP.pem"},
    })  # fmt: skip
    assert notes == [
        "t.cft:2: warning: PKICER OWN: STATE=INACT: inactive in CFT, imported anyway",
        "t.cft:2: ignored: PKICER OWN: PKIPASSW=***",
        "t.cft:4: warning: PKIENTITY GROUP: a group of CAs (R1, R2): put their certificates in pki/GROUP.pem",
        "t.cft:5: skipped: PKICER UNUSED: named by no imported CFTSSL USERCID or ROOTCID",
    ]


def test_other_commands_are_skipped_and_pasted_program_names_ignored() -> None:
    _, notes = on_base("CFTUTIL\nCFTSEND ID=FLOW, FNAME=x\nCFTLOG\nUCONFSET ID=a, VALUE=b\nCFTUTIL CFTEXT TYPE=ALL")
    assert notes == [
        "t.cft:2: skipped: CFTSEND FLOW: no equivalent in sidecar",
        "t.cft:3: skipped: CFTLOG: no equivalent in sidecar",
        "t.cft:5: skipped: CFTEXT: no equivalent in sidecar",
    ]


def test_identifiers_are_upper_cased_and_nrpart_keeps_case_in_double_quotes_only() -> None:
    tree, _ = on_base("cftpart id='p1', prot=('tls'), nrpart='Mixed', nrpassw=\"Pw\"")
    assert tree["partners"] == [{"id": "P1", "nrpart": "MIXED", "nrpassw": "Pw", "prot": ["TLS"]}]


def test_the_loaders_findings_point_at_the_cft_command() -> None:
    tree, notes = on_base("CFTPROT ID=T2, TYPE=PESIT, NET=N0, SAP=1764, SSL=NOKEY\n"
                          "CFTSSL ID=NOKEY, DIRECT=SERVER, ROOTCID=CA, CIPHLIST=(49199)\n"
                          "CFTPART ID='P#1', PROT=T2")  # fmt: skip
    assert tree["partners"][0]["id"] == "P#1"  # written as is
    assert notes == [
        "t.cft:2: error: CFTSSL NOKEY/server: profiles[1].usercid: is mandatory for a server profile used by "
        "listeners[1]",
        "t.cft:3: error: CFTPART P#1: partners[0].id: 'P#1' is not a valid identifier (letters, digits, _ . -; "
        "at most 32)",
    ]


def test_everything_in_the_input_is_accounted_for() -> None:
    """Every non-empty parameter of an imported object is either mapped or on its `ignored` line."""
    _, notes = run(EXAMPLE_A.replace("prof = any", "prof = any, rto = 10, disct = 30"))
    assert "a.cft:4: ignored: CFTPROT PTLS: PROF=ANY, RTO=10, DISCT=30" in notes


def test_the_core_imports_no_io_module() -> None:
    for module in (lexer, parser, mapping, report):
        tree = ast.parse(Path(module.__file__ or "").read_text(encoding="utf-8"))
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}  # fmt: skip
        imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not imported & {"asyncio", "ssl", "socket", "aiohttp", "OpenSSL", "uvloop", "os", "subprocess"}


def test_ids_that_yaml_would_misread_stay_strings() -> None:
    result = import_cft([("t.cft", "CFTSSL ID=NO, DIRECT=CLIENT, CIPHLIST=(49199), USERCID=1762, ROOTCID=(ON, null)")])
    assert result.yaml_text is not None
    assert "id: 'NO'" in result.yaml_text and "usercid: '1762'" in result.yaml_text
    assert yaml.safe_load(result.yaml_text) == result.tree
    assert list(result.tree["pki"]) == ["1762", "ON", "NULL"]
