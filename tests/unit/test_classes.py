"""SecureTransport user classes and encryption entries (SPEC 4.6, NOTES D)."""

from __future__ import annotations

import pytest

from sidecar.policy.classes import (
    ClassMatch,
    ClassPolicy,
    EncryptionMatch,
    EncryptionRule,
    UserClassRule,
)
from sidecar.policy.decision import Reason

POLICY = ClassPolicy(
    classes=(
        UserClassRule("Admins", user="admin?", address="10.0.0.0/8"),
        UserClassRule("Partners", user="PART*"),
        UserClassRule("Lan6", address="fd00::/8"),
        UserClassRule("Host", address="192.0.2.7"),
        UserClassRule("Anyone"),
    ),
    encryption=(
        EncryptionRule("Admins", required=False),
        EncryptionRule("Partners", required=True),
        EncryptionRule("Lan6", required=False),
        EncryptionRule("*", required=True),
    ),
)


@pytest.mark.parametrize(
    ("user", "address", "expected"),
    [
        ("admin1", "10.1.2.3", ClassMatch("Admins", 0, False)),
        ("admin1", "11.1.2.3", ClassMatch("Anyone", 4, False)),  # address outside the CIDR
        ("admin12", "10.1.2.3", ClassMatch("Anyone", 4, False)),  # `?` is exactly one character
        ("ADMIN1", "10.1.2.3", ClassMatch("Anyone", 4, False)),  # case-sensitive
        ("admin1", "::ffff:10.1.2.3", ClassMatch("Admins", 0, False)),  # IPv4-mapped IPv6
        ("admin1", None, ClassMatch("Anyone", 4, False)),  # unknown address: only rules without one
        ("admin1", "not-an-ip", ClassMatch("Anyone", 4, False)),
        ("PARTNER1", "203.0.113.9", ClassMatch("Partners", 1, False)),
        ("PART", None, ClassMatch("Partners", 1, False)),  # `*` may match nothing
        ("part1", None, ClassMatch("Anyone", 4, False)),
        ("x", "fd00::1", ClassMatch("Lan6", 2, False)),
        (None, "fd12:3456::1", ClassMatch("Lan6", 2, False)),  # no user: `*` still matches
        ("x", "fe80::1", ClassMatch("Anyone", 4, False)),
        ("x", "192.0.2.7", ClassMatch("Host", 3, False)),
        ("x", "192.0.2.8", ClassMatch("Anyone", 4, False)),
        (None, None, ClassMatch("Anyone", 4, False)),
    ],
)
def test_first_matching_class(user: str | None, address: str | None, expected: ClassMatch) -> None:
    assert POLICY.classify(user, address) == expected


def test_first_match_wins_over_later_rules() -> None:
    policy = ClassPolicy(
        classes=(UserClassRule("First", user="a*"), UserClassRule("Second", user="ab*")), encryption=()
    )
    assert policy.classify("abc", None) == ClassMatch("First", 0, False)


def test_user_none_never_matches_a_real_glob() -> None:
    policy = ClassPolicy(classes=(UserClassRule("Q", user="?*"), UserClassRule("Star", user="**")), encryption=())
    assert policy.classify(None, None) == ClassMatch("Star", 1, False)


def test_glob_special_characters_are_literal() -> None:
    policy = ClassPolicy(classes=(UserClassRule("Dots", user="a.b[1]+"),), encryption=())
    assert policy.classify("a.b[1]+", None).name == "Dots"
    assert policy.classify("axb1", None).name is None


def test_no_class_when_nothing_matches() -> None:
    policy = ClassPolicy(classes=(UserClassRule("Only", user="x"),), encryption=())
    assert policy.classify("y", "10.0.0.1") == ClassMatch(None, None, False)


def test_explicit_class_wins() -> None:
    assert POLICY.classify("admin1", "10.1.2.3", explicit_class="Custom") == ClassMatch("Custom", None, True)


def test_ipv4_mapped_network_in_rule_matches_plain_ipv4() -> None:
    policy = ClassPolicy(classes=(UserClassRule("Mapped", address="::ffff:10.0.0.0/104"),), encryption=())
    assert policy.classify(None, "10.9.9.9").name == "Mapped"
    assert policy.classify(None, "::ffff:10.9.9.9").name == "Mapped"
    assert policy.classify(None, "11.0.0.1").name is None


@pytest.mark.parametrize(
    ("user_class", "expected"),
    [
        ("Admins", EncryptionMatch(False, 0)),
        ("Partners", EncryptionMatch(True, 1)),
        ("Custom", EncryptionMatch(True, 3)),  # falls to `*`
        (None, EncryptionMatch(True, 3)),  # no class: only `*` entries
    ],
)
def test_encryption_entry(user_class: str | None, expected: EncryptionMatch) -> None:
    assert POLICY.encryption_for(user_class) == expected


def test_star_entry_first_shadows_the_rest() -> None:
    policy = ClassPolicy(
        classes=(), encryption=(EncryptionRule("*", required=False), EncryptionRule("A", required=True))
    )
    assert policy.encryption_for("A") == EncryptionMatch(False, 0)


def test_no_entry_is_optional() -> None:
    policy = ClassPolicy(classes=(), encryption=(EncryptionRule("A", required=True),))
    assert policy.encryption_for("B") == EncryptionMatch(False, None)
    assert policy.encryption_for(None) == EncryptionMatch(False, None)
    decision, match, encryption = policy.decide(encrypted=False, user="u", address="10.0.0.1")
    assert decision.allowed
    assert decision.rule_ref is None
    assert (match.name, encryption) == (None, EncryptionMatch(False, None))


def test_plaintext_required_is_denied() -> None:
    decision, match, encryption = POLICY.decide(encrypted=False, user="PARTNER1", address="203.0.113.9")
    assert not decision.allowed
    assert decision.reason is Reason.ENCRYPTION_REQUIRED
    assert decision.rule_ref == "encryption[1]"
    assert "Partners" in decision.detail
    assert "plaintext" in decision.detail
    assert match == ClassMatch("Partners", 1, False)
    assert encryption == EncryptionMatch(True, 1)


def test_tls_satisfies_required() -> None:
    decision, _, encryption = POLICY.decide(encrypted=True, user="PARTNER1", address="203.0.113.9")
    assert decision.allowed
    assert decision.reason is None
    assert decision.rule_ref == "encryption[1]"
    assert encryption.required


def test_plaintext_optional_is_allowed() -> None:
    decision, match, _ = POLICY.decide(encrypted=False, user="admin1", address="10.1.2.3")
    assert decision.allowed
    assert match.name == "Admins"
    assert decision.rule_ref == "encryption[0]"


def test_explicit_class_drives_the_decision() -> None:
    decision, match, _ = POLICY.decide(encrypted=False, user="admin1", address="10.1.2.3", explicit_class="Lan6")
    assert decision.allowed
    assert match == ClassMatch("Lan6", None, True)
    decision, _, _ = POLICY.decide(encrypted=False, user="admin1", address="10.1.2.3", explicit_class="Other")
    assert decision.reason is Reason.ENCRYPTION_REQUIRED
    assert decision.rule_ref == "encryption[3]"


def test_plaintext_without_class_hits_star_entry() -> None:
    policy = ClassPolicy(classes=(UserClassRule("A", user="a"),), encryption=(EncryptionRule("*", required=True),))
    decision, match, _ = policy.decide(encrypted=False, user=None, address=None)
    assert match.name is None
    assert decision.reason is Reason.ENCRYPTION_REQUIRED
    assert "no class" in decision.detail


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (UserClassRule("Bad", address="10.0.0.0/33"), r"user_classes\[0\]: address '10.0.0.0/33'"),
        (UserClassRule("Bad", address="10.1.2.3/8"), "host bits set"),
        (UserClassRule("Bad", address="ten.0.0.1"), "not an IP address or CIDR"),
        (UserClassRule("Bad", address=""), "not an IP address or CIDR"),
        (UserClassRule("Bad", user=""), "user pattern must not be empty"),
        (UserClassRule(""), "name must not be empty"),
        (UserClassRule("*"), "reserved"),
    ],
)
def test_bad_rules_are_refused_at_construction(rule: UserClassRule, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClassPolicy(classes=(rule,), encryption=())


def test_empty_encryption_class_is_refused() -> None:
    with pytest.raises(ValueError, match=r"encryption\[0\]"):
        ClassPolicy(classes=(), encryption=(EncryptionRule("", required=True),))


def test_policy_is_a_frozen_value() -> None:
    policy = ClassPolicy(classes=[UserClassRule("A")], encryption=[EncryptionRule("*", True)])  # type: ignore[arg-type]
    assert policy.classes == (UserClassRule("A"),)
    assert policy == ClassPolicy(classes=(UserClassRule("A"),), encryption=(EncryptionRule("*", True),))
    with pytest.raises(AttributeError):
        policy.classes = ()  # type: ignore[misc]
