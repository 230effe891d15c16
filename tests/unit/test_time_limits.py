"""When an accepted session stops holding by itself: the deciding SSLAUTH ACCEPT's window end and the
client certificate's notAfter, whichever comes first (SPEC §8.3, `expired_live`). Pure."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta, timezone

import pytest
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.policy.checks import ProfilePolicy
from sidecar.policy.classes import ClassPolicy
from sidecar.policy.partners import PartnerBook
from sidecar.policy.sslauth import Statement, parse_sslauth
from sidecar.policy.verdict import SessionFacts, SessionPolicy, TimeLimit, judge
from sidecar.tls.peer import PeerCert, TlsFacts

from ._peers import make_peer

PARIS = make_peer([(NameOID.ORGANIZATION_NAME, "ACME"), (NameOID.COMMON_NAME, "PARIS")], serial=0x1234)
CET = timezone(timedelta(hours=1))
NOW = datetime(2026, 12, 7, 14, 30, 20, tzinfo=CET)


@pytest.mark.parametrize(
    ("end_date", "end_time", "expected"),
    [
        (None, None, None),
        # /EDATE alone: the whole day is inside.
        (date(2026, 12, 7), None, datetime(2026, 12, 8, 0, 0, tzinfo=CET)),
        # /ETIME: its whole minute is inside (14:30:59 passes /ETIME=1430).
        (date(2026, 12, 7), time(14, 30), datetime(2026, 12, 7, 14, 31, tzinfo=CET)),
        (date(2026, 12, 31), time(23, 59), datetime(2027, 1, 1, 0, 0, tzinfo=CET)),
    ],
)
def test_window_end(end_date: date | None, end_time: time | None, expected: datetime | None) -> None:
    statement = Statement(action="ACCEPT", end_date=end_date, end_time=end_time)
    assert statement.window_end(NOW) == expected
    if expected is not None:  # the instant is the first one the window check refuses
        assert statement.window_failure(expected - timedelta(seconds=1)) is None
        assert statement.window_failure(expected) is not None


def _tls(peer: PeerCert | None, verified: bool = True) -> TlsFacts:
    return TlsFacts("TLSv1.3", "TLS_AES_128_GCM_SHA256", 4865, peer, verified)


def time_limit(policy: SessionPolicy, tls: TlsFacts | None, now: datetime) -> TimeLimit | None:
    """The time limit of the verdict on a session with these facts."""
    return judge(policy, SessionFacts(tls, "127.0.0.1"), now).time_limit


def _policy(rules: str | None) -> SessionPolicy:
    profile = ProfilePolicy(profile_id="SSLSRV", path="profiles[0]", direct="server", verify="required",
                            allowed_codes=frozenset({4865}))  # fmt: skip
    return SessionPolicy(
        listener_id="PESITSSL", identify="none", missing_partner_profile="warn", profile=profile,
        sslauth=parse_sslauth(rules, "sslauth.txt") if rules is not None else None,
        partners=PartnerBook(), classes=ClassPolicy((), ()),
    )  # fmt: skip


NOT_AFTER_LATER = replace(PARIS, not_after=datetime(2027, 1, 1, tzinfo=UTC))
NOT_AFTER_SOONER = replace(PARIS, not_after=datetime(2026, 12, 7, 13, 45, tzinfo=UTC))  # 14:45 CET


@pytest.mark.parametrize(
    ("rules", "peer", "at", "kind", "rule"),
    [
        # No file, or a file without /EDATE: the certificate alone.
        (None, NOT_AFTER_LATER, datetime(2027, 1, 1, tzinfo=UTC), "certificate", None),
        ("ACCEPT /CN=PARIS\n", NOT_AFTER_LATER, datetime(2027, 1, 1, tzinfo=UTC), "certificate", None),
        # The deciding ACCEPT's window ends first.
        ("ACCEPT /CN=PARIS /EDATE=20261207 /ETIME=1500\n", NOT_AFTER_LATER,
         datetime(2026, 12, 7, 15, 1, tzinfo=CET), "sslauth", "sslauth.txt:1"),
        # ... unless the certificate ends before it.
        ("ACCEPT /CN=PARIS /EDATE=20261207 /ETIME=1500\n", NOT_AFTER_SOONER,
         NOT_AFTER_SOONER.not_after, "certificate", None),
        # Only the deciding statement counts: a later one with a window does not.
        ("ACCEPT /CN=PARIS\nACCEPT /O=ACME /EDATE=20261207\n", NOT_AFTER_LATER,
         datetime(2027, 1, 1, tzinfo=UTC), "certificate", None),
        ("ACCEPT /O=ACME /EDATE=20261208\nACCEPT /CN=PARIS /EDATE=20261207\n", NOT_AFTER_LATER,
         datetime(2026, 12, 9, tzinfo=CET), "sslauth", "sslauth.txt:1"),
    ],
)  # fmt: skip
def test_time_limit_is_the_earliest_of_the_deciding_window_and_not_after(
    rules: str | None, peer: PeerCert, at: datetime, kind: str, rule: str | None
) -> None:
    policy = _policy(rules)
    verdict = judge(policy, SessionFacts(_tls(peer), "127.0.0.1"), NOW)
    limit = verdict.time_limit
    assert verdict.accepted and limit is not None
    assert (limit.at, limit.kind, limit.rule) == (at, kind, rule)


@pytest.mark.parametrize(
    ("tls", "rules"),
    [
        (None, "ACCEPT /EDATE=20261207\n"),  # plaintext
        (_tls(PARIS, verified=False), "ACCEPT /EDATE=20261207\n"),  # tolerated, unverified: never an identity
    ],
)
def test_no_identity_no_time_limit(tls: TlsFacts | None, rules: str) -> None:
    assert time_limit(_policy(rules), tls, NOW) is None


def test_a_refused_verdict_has_no_time_limit() -> None:
    policy = _policy("ACCEPT /CN=PARIS /EDATE=20261207 /ETIME=1400\n")
    verdict = judge(policy, SessionFacts(_tls(PARIS), "127.0.0.1"), NOW)
    assert not verdict.decision.allowed and verdict.time_limit is None
    # Refused by the partner steps after the listener steps accepted: no time limit either.
    by_partner = replace(_policy("ACCEPT /CN=PARIS /EDATE=20261207 /ETIME=1500\n"), identify="certificate")
    verdict = judge(by_partner, SessionFacts(_tls(PARIS), "127.0.0.1"), NOW)
    assert verdict.decision.reason == "unknown_partner" and verdict.time_limit is None


def test_a_naive_now_is_the_servers_local_time() -> None:
    naive = NOW.replace(tzinfo=None)
    limit = time_limit(_policy("ACCEPT /CN=PARIS /EDATE=20261207 /ETIME=1500\n"), _tls(NOT_AFTER_LATER), naive)
    assert limit is not None and limit.at == datetime(2026, 12, 7, 15, 1).astimezone()


@settings(max_examples=300, deadline=None)
@given(
    end=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31)),
    with_time=st.booleans(),
    near=st.timedeltas(min_value=timedelta(minutes=-3), max_value=timedelta(minutes=3)),
    far=st.timedeltas(min_value=timedelta(days=-2), max_value=timedelta(days=2)),
    close_to_the_end=st.booleans(),
)
def test_the_window_end_is_the_first_instant_the_window_check_refuses(
    end: datetime, with_time: bool, near: timedelta, far: timedelta, close_to_the_end: bool
) -> None:
    end_time = time(end.hour, end.minute) if with_time else None
    statement = Statement(action="ACCEPT", end_date=end.date(), end_time=end_time)
    # Around the last minute the SPEC allows (/ETIME, or 23:59 of /EDATE), or anywhere within two days.
    last_minute = datetime.combine(end.date(), end_time or time(23, 59))
    now = last_minute + (near if close_to_the_end else far)
    window_end = statement.window_end(now)
    assert window_end is not None
    assert (statement.window_failure(now) is None) == (now < window_end)
