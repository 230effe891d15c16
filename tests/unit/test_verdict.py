"""The session verdict (policy.verdict) over in-memory facts: decision tables, no sockets.

The identity boundary is pinned here, where it is decided: a certificate that did not verify
(tolerated under `verify: optional`) never matches SSLAUTH, never gets a /USER, never names a
partner, never chooses a user class and never reaches the PROXY v2 identity TLVs.
"""

from __future__ import annotations

import struct
from datetime import datetime
from itertools import product
from typing import Literal

import pytest
from cryptography.x509.oid import NameOID

from sidecar.config import Partner
from sidecar.outcome import CloseReason
from sidecar.pesit import DIAG_BAD_IDENTIFICATION, DIAG_UNAUTHORIZED_REQUESTER
from sidecar.policy.checks import ProfilePolicy
from sidecar.policy.classes import ClassPolicy, EncryptionRule, UserClassRule
from sidecar.policy.decision import Reason
from sidecar.policy.dn import compile_dn_patterns
from sidecar.policy.partners import PartnerBook
from sidecar.policy.sslauth import parse_sslauth
from sidecar.policy.verdict import PesitClaim, SessionFacts, SessionPolicy, judge, judge_listener, judge_server
from sidecar.proxy import proxyproto
from sidecar.tls.peer import PeerCert, TlsFacts, VerifyError

from ._peers import make_peer

NOW = datetime(2026, 12, 7, 12, 0).astimezone()
TLS13_AES128 = 4865
PARIS_CERT = make_peer([(NameOID.ORGANIZATION_NAME, "ACME"), (NameOID.COMMON_NAME, "PARIS")], serial=0x1234)

Cert = Literal["verified", "unverified", "absent"]
CERTS: tuple[Cert, ...] = ("verified", "unverified", "absent")


def tls(cert: Cert, peer: PeerCert = PARIS_CERT) -> TlsFacts:
    return TlsFacts(
        tls_version="TLSv1.3",
        cipher_name="TLS_AES_128_GCM_SHA256",
        cipher_code=TLS13_AES128,
        peer=None if cert == "absent" else peer,
        verified=cert == "verified",
        verify_errors=() if cert == "verified" else (VerifyError(0, 20, "unable to get local issuer certificate"),),
    )


def profile(verify: str = "optional", path: str = "profiles[0]", **extra: object) -> ProfilePolicy:
    return ProfilePolicy(
        profile_id="SSLSRV",
        path=path,
        direct="server",
        verify=verify,
        allowed_codes=frozenset({TLS13_AES128}),
        **extra,  # type: ignore[arg-type]
    )


PARIS = Partner(id="PARIS", nrpart="PARIS", user_class=None, index=0)
LOCKED = Partner(id="LOCKED", nrpart="LOCKED", ssl="SSLSTRICT", index=1)
FROMNET = Partner(id="FROMNET", nrpart="FROMNET", host=("192.0.2.10",), host_verify=9, index=2)
ONLYOTHER = Partner(id="ONLYOTHER", nrpart="ONLYOTHER", prot=("OTHER",), index=3)
BOOK = PartnerBook.build(
    [PARIS, LOCKED, FROMNET, ONLYOTHER],
    {"LOCKED": "s3cret"},
    {
        "SSLSTRICT": profile(
            "required", "profiles[1]", dnuser=compile_dn_patterns(["O=Elsewhere"], "profiles[1].dnuser")
        )
    },
)
CLASSES = ClassPolicy(
    (UserClassRule(name="Partners", user="PAR*"),),
    (EncryptionRule(user_class="Partners", required=True),),
)
SSLAUTH = parse_sslauth("ACCEPT /CN=PARIS /USER=PARUSER\nREVOKE\n", "sslauth.txt")


def policy(
    identify: Literal["none", "pesit", "certificate"] = "none",
    verify: str = "optional",
    *,
    sslauth: bool = True,
    missing: Literal["warn", "reject"] = "warn",
) -> SessionPolicy:
    return SessionPolicy(
        listener_id="PESITSSL",
        identify=identify,
        missing_partner_profile=missing,
        profile=profile(verify),
        sslauth=SSLAUTH if sslauth else None,
        partners=BOOK,
        classes=CLASSES,
    )


def facts(cert: Cert, claim: str | None = None, password: str | None = None, host: str = "127.0.0.1") -> SessionFacts:
    return SessionFacts(tls(cert), host, PesitClaim(claim, password) if claim is not None else None)


# --- the identity boundary: certificate × identify × verify ----------------------------------------


@pytest.mark.parametrize(
    ("cert", "identify", "verify"), list(product(CERTS, ("none", "certificate", "pesit"), ("optional", "required")))
)
def test_only_a_verified_certificate_is_an_identity(cert: Cert, identify: str, verify: str) -> None:
    claim = "PARIS" if identify == "pesit" else None
    verdict = judge(policy(identify, verify), facts(cert, claim), NOW)  # type: ignore[arg-type]
    if verify == "required" and cert != "verified":
        assert (verdict.decision.allowed, verdict.decision.reason) == (False, Reason.VERIFY)
        assert verdict.user is None and verdict.partner is None and verdict.identity is None
        return
    if cert == "verified":
        assert verdict.accepted, verdict
        assert verdict.identity is PARIS_CERT
        assert verdict.user == "PARUSER"  # SSLAUTH matched the verified certificate
        assert verdict.partner is PARIS if identify != "none" else verdict.partner is None
        assert verdict.user_class == "Partners"  # user = NRPART or the verified CN
        return
    # Tolerated (verify: optional) or no certificate: never an identity.
    assert verdict.identity is None
    assert verdict.user is None, "an unverified certificate matched SSLAUTH and got a /USER"
    sslauth_step = next(step for step in verdict.steps if step.name == "sslauth")
    assert sslauth_step.rule_ref != "sslauth.txt:1"
    if identify == "certificate":
        assert (verdict.decision.reason, verdict.partner) == (Reason.UNKNOWN_PARTNER, None)
        assert "no verified certificate" in verdict.decision.detail
    elif identify == "pesit":
        assert verdict.accepted and verdict.partner is PARIS  # named by the CONNECT, not by the certificate
        assert verdict.user_class == "Partners"
    else:
        assert verdict.accepted and verdict.partner is None
        assert verdict.user_class is None, "an unverified certificate's CN chose a user class"


@pytest.mark.parametrize("cert", CERTS)
def test_proxy_v2_identity_tlvs_carry_only_the_verified_certificate(cert: Cert) -> None:
    verdict = judge(policy(), facts(cert), NOW)
    header = proxyproto.encode_v2(
        ("127.0.0.1", 1), ("127.0.0.1", 2), tls(cert), identity=verdict.identity, partner=None, user=verdict.user
    )
    types = _tlv_types(header)
    assert (proxyproto.TLV_SUBJECT in types) is (cert == "verified")
    assert (proxyproto.TLV_SERIAL in types) is (cert == "verified")
    assert (proxyproto.TLV_USER in types) is (cert == "verified")


def _tlv_types(header: bytes) -> set[int]:
    length = struct.unpack("!H", header[14:16])[0]
    body = header[16 + 12 : 16 + length]  # after the IPv4 address block
    types = set()
    while body:
        kind, size = struct.unpack("!BH", body[:3])
        types.add(kind)
        body = body[3 + size :]
    return types


# --- steps 5–6: identification, partner checks, encryption ------------------------------------------


@pytest.mark.parametrize(
    ("claim", "password", "host", "reason", "diagnostic", "msg_id"),
    [
        ("NOBODY", None, "127.0.0.1", Reason.UNKNOWN_PARTNER, DIAG_BAD_IDENTIFICATION, "CFTT15E"),
        ("LOCKED", None, "127.0.0.1", Reason.BAD_PASSWORD, DIAG_BAD_IDENTIFICATION, "CFTH22E"),
        ("LOCKED", "wrong", "127.0.0.1", Reason.BAD_PASSWORD, DIAG_BAD_IDENTIFICATION, "CFTH22E"),
        ("LOCKED", "s3cret", "127.0.0.1", Reason.DNUSER, DIAG_UNAUTHORIZED_REQUESTER, "CFTT48E"),
        ("FROMNET", None, "127.0.0.1", Reason.HOST, DIAG_UNAUTHORIZED_REQUESTER, "CFTH22E"),
        ("ONLYOTHER", None, "127.0.0.1", Reason.PROT, DIAG_UNAUTHORIZED_REQUESTER, "CFTT10E"),
    ],
)
def test_pesit_refusals_say_what_to_answer_and_log(
    claim: str, password: str | None, host: str, reason: Reason, diagnostic: int, msg_id: str
) -> None:
    verdict = judge(policy("pesit"), facts("verified", claim, password, host), NOW)
    assert (verdict.decision.allowed, verdict.decision.reason) == (False, reason)
    assert verdict.pesit_diagnostic == diagnostic
    assert [message.msg_id for message in verdict.messages] == [msg_id]
    assert CloseReason(reason.value)  # every policy reason is a close reason, same word


def test_a_partner_from_the_right_address_passes_host_verify() -> None:
    verdict = judge(policy("pesit"), facts("verified", "FROMNET", host="192.0.2.10"), NOW)
    assert verdict.accepted and verdict.partner is FROMNET


def test_certificate_identification_refusals_have_no_pesit_diagnostic() -> None:
    stranger = make_peer([(NameOID.COMMON_NAME, "NOBODY")])
    verdict = judge(policy("certificate", sslauth=False), SessionFacts(tls("verified", stranger), "127.0.0.1"), NOW)
    assert verdict.decision.reason == Reason.UNKNOWN_PARTNER and verdict.pesit_diagnostic is None


def test_pesit_without_a_claim_is_pending_not_accepted() -> None:
    first = judge_listener(policy("pesit"), tls("verified"), NOW)
    assert first.decision.allowed and first.pending_identification and not first.accepted
    whole = judge(policy("pesit"), facts("verified"), NOW)
    assert whole.pending_identification and not whole.accepted
    assert whole.steps[-1].name == "partner" and whole.steps[-1].outcome == "skip"


def test_judge_finishes_from_the_listener_stage_without_redoing_it() -> None:
    first = judge_listener(policy("pesit"), tls("verified"), NOW)
    finished = judge(policy("pesit"), facts("verified", "PARIS"), NOW, listener=first)
    assert finished.accepted and finished.user == "PARUSER" and finished.partner is PARIS
    assert finished.steps[: len(first.steps)] == first.steps


def test_plaintext_session_skips_tls_checks_and_meets_the_encryption_rule() -> None:
    verdict = judge(policy("pesit"), SessionFacts(None, "127.0.0.1", PesitClaim("PARIS", None)), NOW)
    assert verdict.decision.reason == Reason.ENCRYPTION_REQUIRED
    assert verdict.pesit_diagnostic == DIAG_UNAUTHORIZED_REQUESTER
    assert verdict.steps[0].name == "tls" and verdict.steps[0].outcome == "skip"
    anonymous = judge(policy("none"), SessionFacts(None, "127.0.0.1"), NOW)
    assert anonymous.accepted and anonymous.user_class is None


def test_a_plaintext_session_cannot_be_identified_by_certificate() -> None:
    verdict = judge(policy("certificate", sslauth=False), SessionFacts(None, "127.0.0.1"), NOW)
    assert verdict.decision.reason == Reason.UNKNOWN_PARTNER and verdict.partner is None
    assert verdict.decision.detail == "no verified certificate"


def test_missing_partner_profile_warns_or_rejects() -> None:
    book = PartnerBook.build([Partner(id="NICE", nrpart="NICE", ssl="GONE")], {}, {})
    warn = judge(
        SessionPolicy(listener_id="L", identify="pesit", missing_partner_profile="warn", profile=profile(),
                      sslauth=None, partners=book, classes=CLASSES),
        facts("verified", "NICE"), NOW,
    )  # fmt: skip
    assert warn.accepted and [m.msg_id for m in warn.messages] == ["CFTT47W"]
    reject = judge(
        SessionPolicy(listener_id="L", identify="pesit", missing_partner_profile="reject", profile=profile(),
                      sslauth=None, partners=book, classes=CLASSES),
        facts("verified", "NICE"), NOW,
    )  # fmt: skip
    assert reject.decision.reason == Reason.PARTNER_PROFILE and reject.pesit_diagnostic == DIAG_UNAUTHORIZED_REQUESTER


def test_sslauth_refusal_stops_before_identification() -> None:
    stranger = make_peer([(NameOID.COMMON_NAME, "LYON")])
    verdict = judge(
        policy("pesit"), SessionFacts(tls("verified", stranger), "127.0.0.1", PesitClaim("PARIS", None)), NOW
    )
    assert verdict.decision.reason == Reason.SSLAUTH and verdict.decision.rule_ref == "sslauth.txt:2"
    assert verdict.partner is None and verdict.pesit_diagnostic is None


def test_server_verdict_in_client_mode() -> None:
    client_profile = ProfilePolicy(
        profile_id="SSLCLI", path="profiles[2]", direct="client", verify="required", allowed_codes=frozenset({4865})
    )
    assert judge_server(client_profile, tls("verified")).accepted
    refused = judge_server(client_profile, tls("unverified"))
    assert refused.decision.reason == Reason.VERIFY and refused.identity is None


# --- verdicts remembered per policy (the same facts, the same verdict) -------------------------------


@pytest.mark.parametrize("sslauth", [False, True])
def test_the_same_facts_get_the_remembered_verdict_without_a_date_window(sslauth: bool) -> None:
    judged = policy("pesit", sslauth=sslauth)
    first = judge_listener(judged, tls("verified"), NOW)
    assert judge_listener(judged, tls("verified"), NOW) is first
    whole = judge(judged, facts("verified", "PARIS"), NOW, listener=first)
    assert judge(judged, facts("verified", "PARIS"), NOW, listener=first) is whole
    # Any difference in what a verdict is judged on is another verdict: a fresh judgement.
    assert judge(judged, facts("verified", "PARIS", host="192.0.2.99"), NOW) is not whole
    assert judge(judged, facts("unverified", "PARIS"), NOW).identity is None
    assert judge(judged, facts("verified", "NOBODY"), NOW).decision.reason == Reason.UNKNOWN_PARTNER
    # A fresh policy (a new snapshot) remembers nothing of the old one's verdicts.
    again = policy("pesit", sslauth=sslauth)
    assert judge(again, facts("verified", "PARIS"), NOW) is not whole
    assert judge(again, facts("verified", "PARIS"), NOW) == whole


def test_an_sslauth_date_window_is_judged_at_every_session() -> None:
    windowed = parse_sslauth("ACCEPT /CN=PARIS /SDATE=20261207 /STIME=1200 /EDATE=20261207 /ETIME=1300\n", "w.txt")
    judged = SessionPolicy(listener_id="PESITSSL", identify="none", missing_partner_profile="warn",
                           profile=profile(), sslauth=windowed, partners=BOOK, classes=CLASSES)  # fmt: skip
    assert windowed.dated and not SSLAUTH.dated
    inside, after = NOW.replace(hour=12, minute=30), NOW.replace(hour=13, minute=30)
    assert judge(judged, facts("verified"), inside).decision.allowed
    assert not judge(judged, facts("verified"), after).decision.allowed
    assert judge(judged, facts("verified"), inside).decision.allowed
    assert not judged._verdicts


def test_remembered_verdicts_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from sidecar.policy import verdict as module

    monkeypatch.setattr(module, "VERDICTS_KEPT", 3)
    judged = policy("none", sslauth=False)
    for number in range(10):
        judge(judged, facts("verified", host=f"192.0.2.{number}"), NOW)
        assert len(judged._verdicts) <= 3
