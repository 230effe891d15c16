"""Partner identification and partner checks (Transfer CFT server mode, SPEC §4.5). Pure.

After the listener-level checks, the partner is identified (PeSIT PI 3 or the certificate CN) and
its own rules apply in this order: listener in the partner's PROT list, CFTTCP VERIFY address check,
then the partner's DIRECT=SERVER profile used for additional checks (verify level, ciphlist,
dnuser, dnissuer; its usercid is ignored). A missing profile logs CFTT47W and continues, or
refuses when the listener says `missing_partner_profile: reject`.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..config import Partner
from ..tls.peer import TlsFacts
from .checks import CheckStep, ProfilePolicy, profile_steps
from .decision import Decision, Reason


@dataclass(frozen=True, slots=True)
class CftMessage:
    """A Transfer CFT message to log: id and text in CFT's V24 form."""

    msg_id: str
    text: str
    level: str = "warning"


def cftt15e(nrpart: str) -> CftMessage:
    return CftMessage("CFTT15E", f"CFTT15E NPART Not found <NPART={nrpart}>", "error")


def cfth22e(nrpart: str, diagi: int, host: str) -> CftMessage:
    return CftMessage("CFTH22E", f"CFTH22E NPART={nrpart} rejected DIAGI={diagi} <HOST={host}>", "error")


def cftt10e(partner_id: str, listener_id: str) -> CftMessage:
    return CftMessage("CFTT10E", f"CFTT10E PART={partner_id} PROT={listener_id} _ Protocol not authorized", "error")


def cftt47w(partner_id: str, ssl_id: str) -> CftMessage:
    text = f"CFTT47W _ No SSL security profile for additional checks <PART={partner_id} SSLID={ssl_id} DIRECT=SERVER>"
    return CftMessage("CFTT47W", text, "warning")


def cftt48e(partner_id: str, ssl_id: str, reason: str) -> CftMessage:
    text = f"CFTT48E _ Server Session rejected reason={reason} <PART={partner_id} SSL={ssl_id}>"
    return CftMessage("CFTT48E", text, "error")


@dataclass(frozen=True, slots=True)
class PartnerVerdict:
    decision: Decision
    steps: tuple[CheckStep, ...]
    messages: tuple[CftMessage, ...] = ()
    partner: Partner | None = None


@dataclass(frozen=True, slots=True)
class PartnerBook:
    """The partners of one snapshot, indexed once: NRPART -> partner."""

    by_nrpart: dict[str, Partner] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)  # partner id -> NRPASSW
    profiles: dict[str, ProfilePolicy] = field(default_factory=dict)  # partner id -> its server profile

    @classmethod
    def build(
        cls, partners: Iterable[Partner], passwords: dict[str, str], server_profiles: dict[str, ProfilePolicy]
    ) -> PartnerBook:
        partner_list = list(partners)
        return cls(
            by_nrpart={partner.nrpart: partner for partner in partner_list},
            passwords=passwords,
            profiles={p.id: server_profiles[p.ssl] for p in partner_list if p.ssl and p.ssl in server_profiles},
        )

    def find(self, nrpart: str) -> Partner | None:
        return self.by_nrpart.get(nrpart)

    def password_matches(self, partner: Partner, given: str | None) -> bool:
        expected = self.passwords.get(partner.id)
        if expected is None:
            return True
        return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def host_matches(peer_host: str, hosts: Iterable[str], length: int) -> bool:
    """CFTTCP VERIFY=n: the first n characters of the caller's address equal those of a HOST entry."""
    if length <= 0:
        return True
    prefix = peer_host[:length]
    return any(host[:length] == prefix for host in hosts)


def check_partner(
    book: PartnerBook,
    partner: Partner,
    *,
    listener_id: str,
    peer_host: str,
    facts: TlsFacts | None,
    missing_profile: str,
) -> PartnerVerdict:
    """Partner checks after identification, in CFT order; `facts` None = a plaintext session."""
    steps: list[CheckStep] = []
    messages: list[CftMessage] = []
    if partner.prot is not None and listener_id not in partner.prot:
        detail = f"listener {listener_id} is not in {partner.id}'s prot {list(partner.prot)}"
        steps.append(CheckStep("prot", "fail", detail, f"{partner.path}.prot"))
        decision = Decision.deny(Reason.PROT, detail, f"{partner.path}.prot")
        return PartnerVerdict(decision, tuple(steps), (cftt10e(partner.id, listener_id),), partner)
    steps.append(CheckStep("prot", "pass", f"listener {listener_id} allowed", f"{partner.path}.prot"))
    if partner.host_verify:
        if not host_matches(peer_host, partner.host, partner.host_verify):
            detail = (
                f"address {peer_host} does not match the first {partner.host_verify} characters of {list(partner.host)}"
            )
            steps.append(CheckStep("host", "fail", detail, f"{partner.path}.host_verify"))
            messages.append(cfth22e(partner.nrpart, 428, peer_host))
            decision = Decision.deny(Reason.HOST, detail, f"{partner.path}.host_verify")
            return PartnerVerdict(decision, tuple(steps), tuple(messages), partner)
        steps.append(CheckStep("host", "pass", f"{peer_host} matches", f"{partner.path}.host_verify"))
    if partner.ssl is None:
        steps.append(CheckStep("partner-ssl", "skip", "the partner names no SSL profile"))
        return PartnerVerdict(Decision.allow(), tuple(steps), tuple(messages), partner)
    policy = book.profiles.get(partner.id)
    if policy is None:
        messages.append(cftt47w(partner.id, partner.ssl))
        ref = f"{partner.path}.ssl"
        if missing_profile == "reject":
            detail = f"no DIRECT=SERVER profile {partner.ssl!r} for additional checks"
            steps.append(CheckStep("partner-ssl", "fail", detail, ref))
            return PartnerVerdict(
                Decision.deny(Reason.PARTNER_PROFILE, detail, ref), tuple(steps), tuple(messages), partner
            )
        steps.append(CheckStep("partner-ssl", "skip", f"profile {partner.ssl!r} missing: CFTT47W, continuing", ref))
        return PartnerVerdict(Decision.allow(), tuple(steps), tuple(messages), partner)
    if facts is None:
        # A plaintext session meets a partner profile: only `verify: required` can refuse it.
        if policy.verify == "required":
            detail = f"partner profile {partner.ssl} requires a verified client certificate; session is plaintext"
            steps.append(CheckStep("verify", "fail", detail, f"{policy.path}.verify"))
            messages.append(cftt48e(partner.id, partner.ssl, "verify"))
            return PartnerVerdict(Decision.deny(Reason.VERIFY, detail, f"{policy.path}.verify"), tuple(steps),
                                  tuple(messages), partner)  # fmt: skip
        return PartnerVerdict(Decision.allow(), tuple(steps), tuple(messages), partner)
    profile_checks = profile_steps(policy, facts, partner_checks=True)
    steps.extend(CheckStep(f"partner-{s.name}", s.outcome, s.detail, s.rule_ref) for s in profile_checks)
    failed = next((s for s in profile_checks if s.outcome == "fail"), None)
    if failed is not None:
        messages.append(cftt48e(partner.id, partner.ssl, failed.name.upper()))
        reason = {"verify": Reason.VERIFY, "ciphlist": Reason.CIPHLIST, "dnuser": Reason.DNUSER}.get(
            failed.name, Reason.DNISSUER
        )
        decision = Decision.deny(reason, f"partner {partner.id}: {failed.detail}", failed.rule_ref)
        return PartnerVerdict(decision, tuple(steps), tuple(messages), partner)
    return PartnerVerdict(Decision.allow(), tuple(steps), tuple(messages), partner)


def partner_from_certificate(book: PartnerBook, facts: TlsFacts) -> tuple[Partner | None, str | None]:
    """`identify: certificate`: the partner whose NRPART is the verified certificate's subject CN."""
    peer = facts.verified_peer
    if peer is None or peer.common_name is None:
        return None, None
    return book.find(peer.common_name), peer.common_name
