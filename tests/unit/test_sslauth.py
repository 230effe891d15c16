"""SSLAUTH files: the four examples of the TIBCO documentation, then every rule of the grammar."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.x509 import ObjectIdentifier
from cryptography.x509.oid import NameOID

from sidecar.errors import RuleFileError
from sidecar.policy.sslauth import NameCriterion, RuleSet, Statement, load_sslauth, parse_sslauth
from sidecar.tls.peer import PeerCert
from tests.unit._peers import make_peer

C, ST, L, ORG, OU, CN = (
    NameOID.COUNTRY_NAME,
    NameOID.STATE_OR_PROVINCE_NAME,
    NameOID.LOCALITY_NAME,
    NameOID.ORGANIZATION_NAME,
    NameOID.ORGANIZATIONAL_UNIT_NAME,
    NameOID.COMMON_NAME,
)
NOON = datetime(2010, 1, 4, 12, 0)

MARKETING = make_peer([(C, "US"), (ORG, "TIBCO"), (OU, "Marketing"), (CN, "ann")])
SALES = make_peer([(C, "US"), (ORG, "TIBCO"), (OU, "Sales"), (CN, "bob")])
JOE = make_peer([(C, "US"), (ST, "NY"), (L, "New York"), (ORG, "ACME"), (OU, "Dept1"), (CN, "Joe Smith")])
JOHN = make_peer([(C, "US"), (ST, "NY"), (L, "New York"), (ORG, "ACME"), (OU, "Dept1"), (CN, "John Smith")])


def parse(text: str) -> RuleSet:
    return parse_sslauth(text, "sslauth.txt")


def verdict(text: str, cert: PeerCert | None, now: datetime = NOON) -> tuple[bool, str | None]:
    result = parse(text).evaluate(cert, now)
    return result.allowed, result.rule_ref


# --- the four examples of the TIBCO document, exactly as written -------------------------------

EXAMPLE_1 = "Accept /OU=Marketing/O=TIBCO revoke"
EXAMPLE_2 = "REVOKE /SN=987654 REVOKE /SN=12:34:56 ACCEPT"
EXAMPLE_3 = "Accept /OU=ACCT*/O=ACME revoke"
EXAMPLE_4 = "Accept /CN=Joe*, /L=New York, /ST=NY, /C=US, /OU=Dept1, /O=ACME, /SDATE=20081201, /EDATE=20091130 revoke"


def test_example_1_marketing_of_tibco_only() -> None:
    assert verdict(EXAMPLE_1, MARKETING) == (True, "sslauth.txt:1")
    assert verdict(EXAMPLE_1, SALES) == (False, "sslauth.txt:1")
    other_company = make_peer([(ORG, "ACME"), (OU, "Marketing")])
    assert verdict(EXAMPLE_1, other_company) == (False, "sslauth.txt:1")
    rules = parse(EXAMPLE_1)
    assert [s.action for s in rules.statements] == ["ACCEPT", "REVOKE"]
    assert rules.evaluate(MARKETING, NOON).detail == "ACCEPT at sslauth.txt:1 matched /OU=Marketing/O=TIBCO"
    assert rules.evaluate(SALES, NOON).detail == "REVOKE at sslauth.txt:1 matched every certificate (no criteria)"


@pytest.mark.parametrize(
    ("serial", "allowed"),
    [(0x987654, False), (0x123456, False), (123456, True), (987654, True), (0x1234567, True), (1, True)],
)
def test_example_2_two_revoked_serials(serial: int, allowed: bool) -> None:
    result = parse(EXAMPLE_2).evaluate(make_peer([(CN, "x")], serial), NOON)
    assert result.allowed is allowed
    assert result.rule_ref == "sslauth.txt:1"


def test_example_2_detail() -> None:
    result = parse(EXAMPLE_2).evaluate(make_peer([(CN, "x")], 0x123456), NOON)
    assert result.detail == "REVOKE at sslauth.txt:1 matched /SN=123456"


@pytest.mark.parametrize(
    ("subject", "allowed"),
    [
        ([(ORG, "ACME"), (OU, "ACCT")], True),
        ([(ORG, "ACME"), (OU, "ACCTPAYABLE")], True),
        ([(ORG, "ACME"), (OU, "ACCT Receivable")], True),
        ([(ORG, "ACME"), (OU, "ACC")], False),
        ([(ORG, "ACME"), (OU, "acct")], False),  # case-sensitive
        ([(ORG, "ACME"), (OU, "XACCT")], False),
        ([(ORG, "ACME Corp"), (OU, "ACCT")], False),  # /O is exact, not a prefix
        ([(OU, "ACCT")], False),
    ],
)
def test_example_3_prefix_on_ou(subject: list[tuple[ObjectIdentifier, str]], allowed: bool) -> None:
    assert verdict(EXAMPLE_3, make_peer(subject)) == (allowed, "sslauth.txt:1")


@pytest.mark.parametrize(
    ("now", "allowed", "detail"),
    [
        (datetime(2008, 11, 30, 23, 59), False, "/SDATE=20081201 is after today 2008-11-30"),
        (datetime(2008, 12, 1, 0, 0), True, "matched"),  # first day
        (datetime(2009, 6, 15, 12, 0), True, "matched"),
        (datetime(2009, 11, 30, 23, 59), True, "matched"),  # last day
        (datetime(2009, 12, 1, 0, 0), False, "/EDATE=20091130 is before today 2009-12-01"),
        (datetime(2010, 1, 4, 9, 0), False, "/EDATE=20091130 is before today 2010-01-04"),
    ],
)
def test_example_4_date_window(now: datetime, allowed: bool, detail: str) -> None:
    result = parse(EXAMPLE_4).evaluate(JOE, now)
    assert (result.allowed, result.rule_ref) == (allowed, "sslauth.txt:1")
    assert detail in result.detail
    assert result.detail.startswith("ACCEPT at sslauth.txt:1")


def test_example_4_others_rejected_by_the_final_revoke() -> None:
    inside = datetime(2009, 6, 15, 12, 0)
    assert verdict(EXAMPLE_4, JOHN, inside) == (False, "sslauth.txt:1")
    assert parse(EXAMPLE_4).evaluate(JOHN, inside).detail.startswith("REVOKE at sslauth.txt:1")
    joe_in_boston = make_peer([(C, "US"), (ST, "NY"), (L, "Boston"), (ORG, "ACME"), (OU, "Dept1"), (CN, "Joe")])
    assert verdict(EXAMPLE_4, joe_in_boston, inside) == (False, "sslauth.txt:1")


def test_example_4_parsed_values() -> None:
    accept = parse(EXAMPLE_4).statements[0]
    assert accept.names == (
        NameCriterion("CN", "Joe", prefix=True),
        NameCriterion("L", "New York"),
        NameCriterion("ST", "NY"),
        NameCriterion("C", "US"),
        NameCriterion("OU", "Dept1"),
        NameCriterion("O", "ACME"),
    )
    assert (accept.start_date, accept.end_date) == (date(2008, 12, 1), date(2009, 11, 30))


# --- layout: statements per line, continuation, comments, spaces -------------------------------


def test_several_statements_per_line_and_refs() -> None:
    text = "REVOKE /CN=bob, ACCEPT /OU=Marketing\n\nreject\n"
    rules = parse(text)
    assert [(s.action, s.line) for s in rules.statements] == [("REVOKE", 1), ("ACCEPT", 1), ("REVOKE", 3)]
    assert verdict(text, SALES) == (False, "sslauth.txt:1")
    assert verdict(text, MARKETING) == (True, "sslauth.txt:1")
    assert verdict(text, JOE) == (False, "sslauth.txt:3")


def test_continuation_lines() -> None:
    text = "* header\nREVOKE /CN=nobody\nACCEPT /CN=Joe*,\n   /L=New York,\n# note inside\n\n   /O=ACME\nREVOKE\n"
    rules = parse(text)
    assert [s.line for s in rules.statements] == [2, 3, 8]
    accept = rules.statements[1]
    assert [n.attribute for n in accept.names] == ["CN", "L", "O"]
    assert verdict(text, JOE) == (True, "sslauth.txt:3")
    assert verdict(text, MARKETING) == (False, "sslauth.txt:8")


def test_statement_starting_on_a_continued_line() -> None:
    text = "ACCEPT /OU=Sales,\n  /O=TIBCO, REVOKE /OU=Marketing\nACCEPT"
    rules = parse(text)
    assert [(s.action, s.line) for s in rules.statements] == [("ACCEPT", 1), ("REVOKE", 2), ("ACCEPT", 3)]
    assert verdict(text, MARKETING) == (False, "sslauth.txt:2")
    assert verdict(text, SALES) == (True, "sslauth.txt:1")


def test_comments_and_blank_lines() -> None:
    text = "* comment in column 1\n   # hash comment\n\n  \t\n#ACCEPT\n*REVOKE\nREVOKE /OU=Sales\r\n"
    rules = parse(text)
    assert len(rules.statements) == 1
    assert rules.statements[0].line == 7
    assert rules.statements[0].names == (NameCriterion("OU", "Sales"),)


def test_star_not_in_column_1_is_not_a_comment() -> None:
    with pytest.raises(RuleFileError) as caught:
        parse("ACCEPT\n * not a comment\n")
    assert caught.value.line == 2


@pytest.mark.parametrize(
    "text",
    [
        "ACCEPT /L=New York/O=ACME",
        "ACCEPT /L=New York /O=ACME",
        "ACCEPT /L=New York, /O=ACME",
        "ACCEPT /L=New York   ,/O=ACME   ",
        "accept/L=New York/O=ACME",
        "AcCePt /L=  New York  ,,  /O=ACME",
    ],
)
def test_separators_and_spaces_in_values(text: str) -> None:
    assert parse(text).statements == (
        Statement(action="ACCEPT", names=(NameCriterion("L", "New York"), NameCriterion("O", "ACME"))),
    )


def test_value_ends_at_a_keyword_word_only() -> None:
    rules = parse("ACCEPT /O=Acceptance Corp /OU=x, revoke /CN=y")
    assert rules.statements[0].names == (NameCriterion("O", "Acceptance Corp"), NameCriterion("OU", "x"))
    assert rules.statements[1].names == (NameCriterion("CN", "y"),)
    assert parse("ACCEPT /O=REJECTED").statements[0].names == (NameCriterion("O", "REJECTED"),)


@pytest.mark.parametrize(
    "text",
    [
        "ACCEPT /O=Bank Accept Ltd",
        "REVOKE /O=We Accept /OU=x",
        "ACCEPT /L=New York reject /CN=y",
        "ACCEPT /USER=joe REVOKE /CN=y",
        "ACCEPT /CN=x,\n /O=Big Reject Co",
    ],
)
def test_a_keyword_word_inside_a_value_is_an_error(text: str) -> None:
    # Followed by more text, the word could be part of a name or start a statement: refused, never
    # silently read as a new statement (a bare ACCEPT there would admit everyone).
    with pytest.raises(RuleFileError) as caught:
        parse(text)
    assert "a value cannot contain the word" in caught.value.message
    assert "end the value with ','" in caught.value.message


def test_a_keyword_ending_the_line_after_a_value_is_a_statement() -> None:
    # TIBCO's own examples: `Accept /OU=Marketing/O=TIBCO revoke`, and after a serial any keyword.
    assert [s.action for s in parse("ACCEPT /O=x revoke").statements] == ["ACCEPT", "REVOKE"]
    assert [s.action for s in parse("REVOKE /SN=1 ACCEPT /CN=y").statements] == ["REVOKE", "ACCEPT"]
    assert [s.action for s in parse("REVOKE /SDATE=20100101 ACCEPT /CN=y").statements] == ["REVOKE", "ACCEPT"]


def test_every_bad_line_is_reported() -> None:
    text = "ACCEPT /cn=a\nACCEPT /CN=ok\nREVOKE /XYZ=1\n\nACCEPT /SN=zz\nACCEPT /O=We Accept Co\nACCEPT /STIME=0800\n"
    with pytest.raises(RuleFileError) as caught:
        parse(text)
    assert [(p.file, p.line) for p in caught.value.problems] == [
        ("sslauth.txt", 1), ("sslauth.txt", 3), ("sslauth.txt", 5), ("sslauth.txt", 6), ("sslauth.txt", 7),
    ]  # fmt: skip
    assert str(caught.value).splitlines()[0] == "sslauth.txt:1: parameters must be uppercase: /cn"


def test_a_broken_entry_does_not_report_its_continuation_lines_twice() -> None:
    with pytest.raises(RuleFileError) as caught:
        parse("ACCEPT /cn=a,\n /O=fine,\n /L=x\nACCEPT /C=toolong*x")
    assert [p.line for p in caught.value.problems] == [1, 4]


def test_problems_are_bounded_per_file() -> None:
    with pytest.raises(RuleFileError) as caught:
        parse("ACCEPT /cn=x\n" * 1000)
    assert len(caught.value.problems) == 101
    assert "only 100 shown" in caught.value.problems[-1].message


def test_value_may_contain_a_slash_not_followed_by_a_parameter() -> None:
    rules = parse("ACCEPT /O=A/B Corp /OU=R/D 1")
    assert rules.statements[0].names == (NameCriterion("O", "A/B Corp"), NameCriterion("OU", "R/D 1"))


# --- matching --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attribute", "oid", "value"),
    [
        ("CN", CN, "Joe Smith"),
        ("OU", OU, "Dept1"),
        ("O", ORG, "ACME"),
        ("L", L, "New York"),
        ("ST", ST, "NY"),
        ("C", C, "US"),
    ],
)
def test_prefix_on_each_dn_field(attribute: str, oid: ObjectIdentifier, value: str) -> None:
    cert = make_peer([(oid, value)])
    assert verdict(f"ACCEPT /{attribute}={value[:-1]}* REVOKE", cert) == (True, "sslauth.txt:1")
    assert verdict(f"ACCEPT /{attribute}={value}* REVOKE", cert) == (True, "sslauth.txt:1")
    assert verdict(f"ACCEPT /{attribute}={value[:-1]} REVOKE", cert)[0] is False  # exact without *
    assert verdict(f"ACCEPT /{attribute}={value.lower()}* REVOKE", cert)[0] is False  # case-sensitive
    assert verdict(f"ACCEPT /{attribute}={value}x* REVOKE", cert)[0] is False
    assert verdict(f"ACCEPT /{attribute}=* REVOKE", cert)[0] is True
    assert verdict(f"ACCEPT /{attribute}=* REVOKE", make_peer([(NameOID.SURNAME, "s")]))[0] is False


@pytest.mark.parametrize(
    "written", ["987654", "98:76:54", "0x987654", "0X987654", "00987654", "0:98:76:54", "98 76 54", "0x00987654"]
)
def test_serial_forms(written: str) -> None:
    assert parse(f"REVOKE /SN={written}").statements[0].serial == 0x987654
    assert verdict(f"REVOKE /SN={written}", make_peer([(CN, "x")], 0x987654))[0] is False
    assert verdict(f"REVOKE /SN={written}", make_peer([(CN, "x")], 987654))[0] is True


def test_serial_lowercase_hex() -> None:
    assert parse("REVOKE /SN=ab:cd:ef").statements[0].serial == 0xABCDEF
    assert verdict("REVOKE /SN=abcdef", make_peer([(CN, "x")], 0xABCDEF))[0] is False


def test_multi_valued_attribute() -> None:
    two_units = make_peer([(ORG, "ACME"), (OU, "Sales"), (OU, "Dept1")])
    assert verdict("ACCEPT /OU=Dept1 REVOKE", two_units)[0] is True
    assert verdict("ACCEPT /OU=Sales REVOKE", two_units)[0] is True
    assert verdict("ACCEPT /OU=Dep* REVOKE", two_units)[0] is True
    assert verdict("ACCEPT /OU=Marketing REVOKE", two_units)[0] is False


def test_all_criteria_must_match() -> None:
    cert = make_peer([(ORG, "ACME"), (CN, "Joe")], 0x10)
    assert verdict("ACCEPT /O=ACME /CN=Joe /SN=10 REVOKE", cert)[0] is True
    assert verdict("ACCEPT /O=ACME /CN=Joe /SN=11 REVOKE", cert)[0] is False
    assert verdict("ACCEPT /O=ACME /CN=Jim /SN=10 REVOKE", cert)[0] is False


def test_user_carried_on_accept() -> None:
    text = "ACCEPT /CN=Joe* /USER=JOEBATCH\nACCEPT /USER=OTHER /CN=John*"
    result = parse(text).evaluate(JOE, NOON)
    assert (result.allowed, result.rule_ref, result.user) == (True, "sslauth.txt:1", "JOEBATCH")
    assert result.detail == "ACCEPT at sslauth.txt:1 matched /CN=Joe* (user JOEBATCH)"
    assert parse(text).evaluate(JOHN, NOON).user == "OTHER"
    assert parse("ACCEPT /USER=batch user").statements[0].user == "batch user"


def test_user_not_given_on_revoke() -> None:
    result = parse("REVOKE /CN=Joe* /USER=X").evaluate(JOE, NOON)
    assert (result.allowed, result.user) == (False, None)


def test_no_hit_accepts() -> None:
    result = parse("REVOKE /O=Nope\nREVOKE /SN=1234").evaluate(JOE, NOON)
    assert result == parse("").evaluate(JOE, NOON)
    assert (result.allowed, result.rule_ref, result.user) == (True, None, None)
    assert result.detail == "no statement matched: accepted"


def test_no_certificate_accepts() -> None:
    result = parse("REVOKE").evaluate(None, NOON)
    assert (result.allowed, result.rule_ref) == (True, None)
    assert result.detail == "no verified client certificate: SSLAUTH not applied"


@pytest.mark.parametrize("text", ["", "\n\n", "* only a comment\n# and another\n"])
def test_empty_file_accepts_all(text: str) -> None:
    rules = parse(text)
    assert rules.statements == ()
    assert rules.evaluate(JOE, NOON).allowed is True


def test_first_hit_decides_even_when_its_window_rejects() -> None:
    text = "ACCEPT /CN=Joe* /EDATE=20091231\nACCEPT"
    result = parse(text).evaluate(JOE, NOON)
    assert (result.allowed, result.rule_ref) == (False, "sslauth.txt:1")


# --- date and time windows on the day itself --------------------------------------------------

DAY = "20100104"


@pytest.mark.parametrize(
    ("text", "now", "allowed", "failure"),
    [
        (f"ACCEPT /SDATE={DAY} /STIME=1200", time(11, 59), False, "/STIME=1200 is later than now 11:59"),
        (f"ACCEPT /SDATE={DAY} /STIME=1200", time(12, 0), True, None),
        (f"ACCEPT /SDATE={DAY} /STIME=1200", time(12, 0, 59), True, None),
        (f"ACCEPT /SDATE={DAY} /STIME=1200", time(12, 1), True, None),
        (f"ACCEPT /SDATE={DAY}", time(0, 0), True, None),
        ("ACCEPT /SDATE=20100103 /STIME=2359", time(0, 0), True, None),  # STIME only on that day
        ("ACCEPT /SDATE=20100105 /STIME=0000", time(23, 59), False, "/SDATE=20100105 is after today 2010-01-04"),
        (f"ACCEPT /EDATE={DAY} /ETIME=1200", time(11, 59), True, None),
        (f"ACCEPT /EDATE={DAY} /ETIME=1200", time(12, 0), True, None),
        (f"ACCEPT /EDATE={DAY} /ETIME=1200", time(12, 0, 59), True, None),
        (f"ACCEPT /EDATE={DAY} /ETIME=1200", time(12, 1), False, "/ETIME=1200 is earlier than now 12:01"),
        (f"ACCEPT /EDATE={DAY}", time(23, 59), True, None),
        ("ACCEPT /EDATE=20100105 /ETIME=0000", time(23, 59), True, None),  # ETIME only on that day
        ("ACCEPT /EDATE=20100103 /ETIME=2359", time(0, 0), False, "/EDATE=20100103 is before today 2010-01-04"),
        (f"ACCEPT /SDATE={DAY} /STIME=0800 /EDATE={DAY} /ETIME=1700", time(8, 0), True, None),
        (f"ACCEPT /SDATE={DAY} /STIME=0800 /EDATE={DAY} /ETIME=1700", time(17, 0), True, None),
        (f"ACCEPT /SDATE={DAY} /STIME=0800 /EDATE={DAY} /ETIME=1700", time(7, 59), False, "/STIME=0800"),
        (f"ACCEPT /SDATE={DAY} /STIME=0800 /EDATE={DAY} /ETIME=1700", time(17, 1), False, "/ETIME=1700"),
    ],
)
def test_window_on_the_day(text: str, now: time, allowed: bool, failure: str | None) -> None:
    result = parse(text).evaluate(JOE, datetime.combine(date(2010, 1, 4), now))
    assert (result.allowed, result.rule_ref) == (allowed, "sslauth.txt:1")
    if failure is not None:
        assert failure in result.detail


def test_window_on_a_revoke_rejects_too() -> None:
    result = parse("REVOKE /CN=Joe* /SDATE=20200101\nACCEPT").evaluate(JOE, NOON)
    assert (result.allowed, result.rule_ref) == (False, "sslauth.txt:1")
    assert result.detail == "REVOKE at sslauth.txt:1: /SDATE=20200101 is after today 2010-01-04"


def test_aware_now_uses_its_own_date() -> None:
    late_utc = datetime(2009, 11, 30, 23, 30, tzinfo=UTC)
    assert parse(EXAMPLE_4).evaluate(JOE, late_utc).allowed is True
    assert parse(EXAMPLE_4).evaluate(JOE, late_utc.astimezone(timezone(timedelta(hours=2)))).allowed is False


# --- errors: file and line ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("ACCEPT /XYZ=1", 1, "unknown parameter /XYZ"),
        ("* c\nACCEPT /CN=a\nACCEPT /cn=Joe", 3, "parameters must be uppercase: /cn"),
        ("ACCEPT /Cn=Joe", 1, "parameters must be uppercase: /Cn"),
        ("ACCEPT /O=ACME/cn=Joe", 1, "parameters must be uppercase: /cn"),
        ("ACCEPT /O=ACME/XYZ=1", 1, "unknown parameter /XYZ"),
        ("\nACCEPT /SDATE=20090230", 2, "/SDATE=20090230: not a real date"),
        ("ACCEPT /EDATE=200911300", 1, "/EDATE=200911300: expected a date as ccyymmdd"),
        ("ACCEPT /EDATE=2009113", 1, "expected a date as ccyymmdd"),
        ("ACCEPT /SDATE=2009-11-30", 1, "expected a date as ccyymmdd"),
        ("ACCEPT /SDATE=00000101", 1, "not a real date"),
        ("ACCEPT /SDATE=20091301", 1, "not a real date"),
        ("ACCEPT /SDATE=20090101 /STIME=2400", 1, "expected a time as hhmm"),
        ("ACCEPT /SDATE=20090101 /STIME=1260", 1, "expected a time as hhmm"),
        ("ACCEPT /SDATE=20090101 /STIME=930", 1, "expected a time as hhmm"),
        ("ACCEPT /SN=98*", 1, "generic * is not allowed on /SN"),
        ("ACCEPT /SDATE=2009*", 1, "generic * is not allowed on /SDATE"),
        ("ACCEPT /EDATE=20090101 /ETIME=12*", 1, "generic * is not allowed on /ETIME"),
        ("ACCEPT /USER=ab*", 1, "generic * is not allowed on /USER"),
        ("ACCEPT /SN=12:34:5G", 1, "/SN=12:34:5G: a serial number is hexadecimal"),
        ("ACCEPT /SN=0x", 1, "a serial number is hexadecimal"),
        ("ACCEPT /SN=1_000", 1, "a serial number is hexadecimal"),
        ("ACCEPT /CN=Jo*e", 1, "* is only allowed at the end"),
        ("ACCEPT /OU=**", 1, "* is only allowed at the end"),
        ("ACCEPT /CN=a,\n /O=x /CN=b", 2, "/CN given twice in the statement of line 1"),
        ("ACCEPT /CN=a, REVOKE /CN=a /CN=b", 1, "/CN given twice"),
        ("ACCEPT\nACCEPT /STIME=0800", 2, "/STIME needs /SDATE"),
        ("ACCEPT /ETIME=0800,\n\n/O=x", 1, "/ETIME needs /EDATE"),
        ("ACCEPT /O=x,\n/ETIME=0800", 2, "/ETIME needs /EDATE"),
        ("ACCEPT /CN=x\nhello world", 2, "unexpected text 'hello'"),
        ("ACCEPTED /CN=x", 1, "unexpected text 'ACCEPTED'"),
        ("ACCEPT CN=x", 1, "unexpected text 'CN=x'"),
        ("ACCEPT\n/CN=x", 2, "/CN outside a statement"),
        ("/CN=x ACCEPT", 1, "/CN outside a statement"),
        ("ACCEPT /CN=", 1, "empty value for /CN"),
        ("ACCEPT /CN=   , /O=x", 1, "empty value for /CN"),
        ("ACCEPT /CN= REVOKE", 1, "empty value for /CN"),
        ("ACCEPT /CN x", 1, "expected /PARAMETER=value"),
        ("ACCEPT // comment", 1, "expected /PARAMETER=value"),
    ],
)
def test_errors(text: str, line: int, message: str) -> None:
    with pytest.raises(RuleFileError) as caught:
        parse(text)
    assert (caught.value.file, caught.value.line) == ("sslauth.txt", line)
    assert message in caught.value.message
    assert str(caught.value) == f"sslauth.txt:{line}: {caught.value.message}"


# --- rendering, loading ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        EXAMPLE_1,
        EXAMPLE_2,
        EXAMPLE_3,
        EXAMPLE_4,
        "ACCEPT /CN=a,\n/USER=x y /SDATE=20100104 /STIME=0800 /EDATE=20101231 /ETIME=2359\nREJECT /O=A/B",
        "",
    ],
)
def test_render_round_trips(text: str) -> None:
    rules = parse(text)
    assert parse(rules.render()) == rules


def test_render_shape_and_line_numbers_ignored() -> None:
    rules = parse("\n\nREVOKE /SN=00:98:76:54 reject\naccept /OU=ACCT*/O=ACME /USER=u1")
    assert rules.render() == "REVOKE /SN=987654\nREVOKE\nACCEPT /OU=ACCT*, /O=ACME, /USER=u1\n"
    assert [s.line for s in parse(rules.render()).statements] == [1, 2, 3]
    assert parse(rules.render()) == rules


def test_load_sslauth(tmp_path: Path) -> None:
    path = tmp_path / "SSLAuth.cfg"
    path.write_bytes("\ufeff* rules\r\nAccept /OU=Marketing/O=TIBCO revoke\r\n".encode())
    rules = load_sslauth(path)
    assert rules.filename == str(path)
    assert rules.evaluate(MARKETING, NOON).rule_ref == f"{path}:2"
    assert load_sslauth(str(path)) == rules


def test_load_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.cfg"
    with pytest.raises(RuleFileError) as caught:
        load_sslauth(missing)
    assert (caught.value.file, caught.value.line) == (str(missing), 0)
    assert "cannot read" in caught.value.message

    latin1 = tmp_path / "latin1.cfg"
    latin1.write_bytes(b"ACCEPT /O=x\nACCEPT /L=Montr\xe9al\n")
    with pytest.raises(RuleFileError) as caught:
        load_sslauth(latin1)
    assert (caught.value.line, caught.value.message) == (2, "not valid UTF-8 text")

    bad = tmp_path / "bad.cfg"
    bad.write_text("ACCEPT\nACCEPT /cn=x\n", encoding="utf-8")
    with pytest.raises(RuleFileError, match=r"bad\.cfg:2: parameters must be uppercase: /cn$"):
        load_sslauth(bad)
