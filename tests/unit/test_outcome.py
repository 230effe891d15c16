"""Close outcomes and how they are counted: one word per event, in the close line and in the metrics."""

from __future__ import annotations

import pytest

from sidecar.outcome import CloseReason, Outcome
from sidecar.policy.decision import Decision, Reason
from sidecar.stats import Counters, Histogram


def test_every_policy_reason_is_a_close_reason_with_the_same_word() -> None:
    for reason in Reason:
        assert CloseReason(reason.value).value == reason.value
        assert Outcome.refused(Decision.deny(reason, "why", "rule")).reason.value == reason.value


@pytest.mark.parametrize(
    ("outcome", "family", "key"),
    [
        (Outcome("accept", CloseReason.EOF), None, None),
        (Outcome("accept", CloseReason.RESET, "peer reset"), None, None),
        (Outcome("accept", CloseReason.IDLE_TIMEOUT), "errors", "idle_timeout"),
        (Outcome("reject", CloseReason.MAX_CONNECTIONS), "errors", "max_connections"),
        (Outcome("reject", CloseReason.SHUTTING_DOWN), "errors", "shutting_down"),
        (Outcome.handshake_failed("verify", "certificate verify failed"), "handshake_failures", "verify"),
        (Outcome.handshake_failed("timeout", "no handshake in time"), "handshake_failures", "timeout"),
        (Outcome.refused(Decision.deny(Reason.SSLAUTH, "REVOKE", "sslauth.txt:2")), "rejected", "sslauth"),
        (Outcome("reject", CloseReason.IDENTIFICATION_TIMEOUT), "rejected", "identification_timeout"),
        (Outcome("reject", CloseReason.PROXY_MISSING, "no PROXY header in time"), "rejected", "proxy_missing"),
        (Outcome("reject", CloseReason.PROXY_UNTRUSTED), "rejected", "proxy_untrusted"),
        (Outcome("error", CloseReason.BACKEND_UNREACHABLE), "errors", "backend_unreachable"),
        (Outcome("reject", CloseReason.BACKEND_LOGON_REFUSED), "errors", "backend_logon_refused"),
        (Outcome("closed", CloseReason.SHUTDOWN), "errors", "shutdown"),
        (Outcome("closed", CloseReason.INTERNAL_ERROR), "errors", "internal_error"),
    ],
)
def test_each_outcome_is_counted_once_by_its_reason_and_in_its_family(
    outcome: Outcome, family: str | None, key: str | None
) -> None:
    counters = Counters()
    counters.record(outcome)
    assert counters.closed == {outcome.reason.value: 1}
    families = {"rejected": counters.rejected, "handshake_failures": counters.handshake_failures,
                "errors": counters.errors}  # fmt: skip
    for name, counted in families.items():
        assert counted == ({key: 1} if name == family else {}), name


def test_handshake_kinds_are_the_reason_after_its_prefix() -> None:
    for reason in CloseReason:
        if reason.value.startswith("handshake_"):
            outcome = Outcome.handshake_failed(reason.value.removeprefix("handshake_"), "")
            assert outcome.reason is reason and outcome.category == "handshake"


def test_handshake_histogram_buckets_are_cumulative_and_inclusive() -> None:
    histogram = Histogram(bounds=(0.01, 0.1))
    histogram.counts = [0, 0, 0]
    for value in (0.005, 0.01, 0.05, 3.0):
        histogram.observe(value)
    assert histogram.cumulative() == [("0.01", 2), ("0.1", 3), ("+Inf", 4)]
    assert histogram.total == pytest.approx(3.065)
