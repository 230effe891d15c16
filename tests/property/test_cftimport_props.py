"""import-cft under hypothesis: any text gives commands or syntax problems, and an import of what
parses gives a configuration and a report, never an exception; rendered commands parse back."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.cftimport import import_cft
from sidecar.cftimport.parser import Command, ListValue, Param, Scalar, parse_commands, render_commands

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

pieces = st.sampled_from(
    ["CFTSSL", "CFTPROT", "CFTPART", "CFTTCP", "CFTNET", "CFTPARM", "PKICER", "PKIENTITY", "UCONFSET", "CFTSEND",
     "cftutil", "PKIUTIL", " ID", "ID=", " DIRECT", "SERVER", "client", " MODE", "REPLACE", "CREATE", "DELETE",
     " USERCID", " ROOTCID", " CIPHLIST", " VERIFY", " DEPTH", " DNUSER", " DNISSUER", " VERSION", " SAP", " SSL",
     " NET", " PROT", " TYPE", " HOST", " CLASS", " NRPART", " NRPASSW", " STATE", " INAME", " IFORM", " IKNAME",
     " VALUE", " CERTIFICATES", " KEYEXT", " CACHE", "=", " = ", ",", ", ", "(", ")", "'", "''", '"', "‘", "”",
     "/*", "*/", " -\n", "\n", "\r\n", " ", "\t", "*", "#", "//", "%uconf:", "%env:", "%", "cft-2", "#31373632",
     "1762", "'10'", "49199", "4", "TLSV1", "SSLV3", "PESIT", "SFTP", "INADDR_ANY", "IN6ADDR_ANY", "CALL",
     "OUT", "NOACTIVE", "P*", "?", " PROT=*", "'(\"O=A\" AND \"CN=b\")'", "'CN=a, CN=b'", "PKCS12", "@/f",
     "X", "y1", "z_2", "&PART"]
)  # fmt: skip
grammar_texts = st.lists(pieces | st.text(max_size=3), max_size=40).map("".join)


def check_import(text: str) -> None:
    parsed = parse_commands(text, "t.cft")
    for problem in parsed.problems:
        assert problem.file == "t.cft" and 1 <= problem.line <= text.count("\n") + 1
    result = import_cft([("t.cft", text)])
    assert (result.yaml_text is None) == bool(parsed.problems)
    if result.yaml_text is not None:
        loaded = yaml.safe_load(result.yaml_text)
        assert loaded == result.tree
        for note in result.notes:
            assert note.level in ("error", "warning", "ignored", "skipped")
            assert "\n" not in str(note) or "\n" in text


@SETTINGS
@given(st.text(max_size=200))
def test_any_text_gives_a_value(text: str) -> None:
    check_import(text)


@SETTINGS
@given(grammar_texts)
def test_grammar_like_text_gives_a_value(text: str) -> None:
    check_import(text)


names = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,8}", fullmatch=True).map(str.upper)
bare_text = st.from_regex(r"[A-Za-z0-9=%:.*?#@&_/-]{1,12}", fullmatch=True).filter(
    lambda text: "/*" not in text and text != "-" and not text.startswith("=")
)
quoted_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n‘’“”"), max_size=15)
scalars = st.builds(Scalar, bare_text) | st.builds(Scalar, quoted_text, st.sampled_from(["'", '"']))
values = scalars | st.builds(ListValue, st.lists(scalars, max_size=4).map(tuple))


@st.composite
def commands(draw: st.DrawFn) -> Command:
    params = draw(st.lists(st.builds(Param, names, values, st.just(0)), max_size=5))
    return Command(draw(names), tuple(params), "t.cft", 0)


def shape(command: Command) -> tuple[str, list[tuple[str, Any]]]:
    return command.name, [(param.name, param.value) for param in command.params]


@SETTINGS
@given(st.lists(commands(), max_size=6))
def test_rendered_commands_parse_back(written: list[Command]) -> None:
    parsed = parse_commands(render_commands(written), "r.cft")
    assert parsed.problems == ()
    assert [shape(c) for c in parsed.commands] == [shape(c) for c in written]


# Objects made of the names and values the mapping reads, so that its rules (not only the parser)
# meet odd combinations: missing keys, wrong keywords, masks, references, SAP forms, MODE orders.
object_names = st.sampled_from(
    ["CFTSSL", "CFTPROT", "CFTNET", "CFTPART", "CFTTCP", "CFTPARM", "PKICER", "PKIENTITY", "UCONFSET", "CFTSEND"]
)
param_names = st.sampled_from(
    ["ID", "ID", "DIRECT", "MODE", "USERCID", "ROOTCID", "CIPHLIST", "VERIFY", "VERSION", "DEPTH", "DNUSER",
     "DNISSUER", "KEYEXT", "CACHE", "PARM", "PASSW", "TYPE", "SAP", "NET", "SSL", "HOST", "CLASS", "CALL", "PROT",
     "NRPART", "NRPASSW", "STATE", "INAME", "IFORM", "IKNAME", "IKFORM", "IKPASSW", "IDATA", "CERTIFICATES",
     "VALUE", "TRACE"]
)  # fmt: skip
words = st.sampled_from(
    ["A", "B", "P1", "SRV", "CLIENT", "SERVER", "REPLACE", "CREATE", "DELETE", "NONE", "REQUIRED", "ENFORCED",
     "TLSV1", "SSLV3", "0", "1", "3", "10", "11", "49199", "10", "4", "47", "PESIT", "ODETTE", "SFTP",
     "INADDR_ANY", "IN6ADDR_ANY", "::1", "10.0.0.1", "OUT", "NOACTIVE", "*", "P*", "?", "1762", "cft-1",
     "#31373632", "#zz", "%uconf:samples.pesitssl_sap.value%", "%uconf:x%", "%env:Y%", "&PART", "PEM", "DER",
     "PKCS12", "@/f", "YES", "NO", "(A, B)", '("O=A" AND "CN=b")', "CN=a, CN=b", "cft.param_id",
     "cft.ssl.version_min", "tls_1.3", "ssl_3.0", "", " ", "x#y"]
)  # fmt: skip
object_scalars = st.builds(Scalar, words, st.sampled_from(["", "'", '"']))
object_values = object_scalars | st.builds(ListValue, st.lists(object_scalars, max_size=3).map(tuple))


@st.composite
def cft_objects(draw: st.DrawFn) -> Command:
    params = draw(st.lists(st.builds(Param, param_names, object_values, st.just(0)), max_size=8))
    return Command(draw(object_names), tuple(params), "t.cft", 0)


@SETTINGS
@given(st.lists(cft_objects(), max_size=12))
def test_any_objects_import_to_a_value(objects: list[Command]) -> None:
    text = render_commands(objects)
    result = import_cft([("t.cft", text)])
    assert result.problems == (), text
    assert yaml.safe_load(result.yaml_text or "") == result.tree
