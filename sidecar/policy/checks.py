"""Checks of a CFTSSL profile on a finished handshake (SPEC §4.3), as a pure function.

Order: authentication level (verify), negotiated suite in ciphlist, dnuser, dnissuer, keyext, crl.
Every check yields a `CheckStep`; the first failing one decides. `sidecar explain` prints the steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ..config import ClientVerify
from ..tls.peer import PeerCert, TlsFacts
from .decision import Decision, Reason
from .dn import DnPattern

Outcome = Literal["pass", "fail", "skip"]


@dataclass(frozen=True, slots=True)
class CheckStep:
    name: str  # "verify", "ciphlist", "dnuser", … ; also "sslauth", "partner", "prot", … upstream
    outcome: Outcome
    detail: str
    rule_ref: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfilePolicy:
    """The compiled, pure part of a profile: what is checked after the handshake."""

    profile_id: str
    path: str  # "profiles[2]", for rule references
    direct: Literal["server", "client"]
    verify: ClientVerify  # none | optional | required | enforced (the last one for client profiles only)
    allowed_codes: frozenset[int]
    dnuser: DnPattern | None = None
    dnissuer: DnPattern | None = None
    keyext: bool = False
    revoked: frozenset[tuple[str, int]] | None = None  # (issuer one-line DN, serial); None: no CRL


def _step_verify(policy: ProfilePolicy, facts: TlsFacts) -> CheckStep:
    ref = f"{policy.path}.verify"
    if policy.verify in ("required", "enforced") and policy.direct == "server":
        if facts.verified_peer is None:
            why = "no client certificate" if facts.peer is None else _errors(facts)
            return CheckStep("verify", "fail", f"verify: {policy.verify} needs a verified certificate: {why}", ref)
        return CheckStep("verify", "pass", "client certificate verified", ref)
    if policy.direct == "client" and policy.verify in ("required", "enforced"):
        if facts.verified_peer is None:
            return CheckStep("verify", "fail", f"server certificate not verified: {_errors(facts)}", ref)
        if policy.verify == "enforced" and facts.client_cert_requested is False:
            return CheckStep(
                "verify", "fail", "verify: enforced but the server did not request a client certificate", ref
            )
        return CheckStep("verify", "pass", "server certificate verified", ref)
    if facts.peer is None:
        return CheckStep("verify", "pass", f"verify: {policy.verify}: no certificate presented", ref)
    if not facts.verified:
        return CheckStep("verify", "pass", f"verify: {policy.verify}: certificate not verified ({_errors(facts)})", ref)
    return CheckStep("verify", "pass", "certificate verified", ref)


def _errors(facts: TlsFacts) -> str:
    return "; ".join(str(error) for error in facts.verify_errors) or "verification failed"


def _step_ciphlist(policy: ProfilePolicy, facts: TlsFacts) -> CheckStep:
    ref = f"{policy.path}.ciphlist"
    if facts.cipher_code in policy.allowed_codes:
        return CheckStep("ciphlist", "pass", f"{facts.cipher_code} ({facts.cipher_name}) is in the list", ref)
    return CheckStep(
        "ciphlist", "fail", f"negotiated {facts.cipher_code} ({facts.cipher_name}) is not in the list", ref
    )


def _step_dn(name: str, pattern: DnPattern | None, dn: str | None, path: str) -> CheckStep:
    ref = f"{path}.{name}"
    if pattern is None:
        return CheckStep(name, "skip", "not configured")
    if dn is None:
        return CheckStep(name, "fail", "no verified certificate to check", ref)
    matched, explanation = pattern.verdict(dn)
    return CheckStep(name, "pass" if matched else "fail", f"{dn}: {explanation}", ref)


def keyext_problem(cert: PeerCert, peer_role: Literal["client", "server"]) -> str | None:
    """CFT KEYEXT=VERIFY on the peer's certificate; None when acceptable.

    An absent KeyUsage or ExtendedKeyUsage extension means "no restriction" (RFC 5280 §4.2.1.3,
    §4.2.1.12); a present one must allow the peer's role.
    """
    if cert.version < 3:
        return f"certificate is X.509 v{cert.version}, v3 is required"
    wanted_eku = "clientAuth" if peer_role == "client" else "serverAuth"
    eku = cert.extended_key_usage
    if eku is not None and wanted_eku not in eku and "anyExtendedKeyUsage" not in eku:
        return f"extended key usage {sorted(eku)} lacks {wanted_eku}"
    usages = {"digital_signature", "key_agreement"}
    if peer_role == "server":
        usages.add("key_encipherment")
    if cert.key_usage is not None and not usages & cert.key_usage:
        return f"key usage {sorted(cert.key_usage)} allows none of {sorted(usages)}"
    return None


def _step_keyext(policy: ProfilePolicy, peer: PeerCert | None) -> CheckStep:
    ref = f"{policy.path}.keyext"
    if not policy.keyext:
        return CheckStep("keyext", "skip", "keyext: none")
    if peer is None:
        return CheckStep("keyext", "fail", "no verified certificate to check", ref)
    role: Literal["client", "server"] = "client" if policy.direct == "server" else "server"
    problem = keyext_problem(peer, role)
    if problem:
        return CheckStep("keyext", "fail", problem, ref)
    return CheckStep("keyext", "pass", f"key usage fits a TLS {role}", ref)


def _step_crl(policy: ProfilePolicy, peer: PeerCert | None) -> CheckStep:
    ref = f"{policy.path}.crl"
    if policy.revoked is None:
        return CheckStep("crl", "skip", "no CRL configured")
    if peer is None:
        return CheckStep("crl", "skip", "no verified certificate")
    if (peer.issuer, peer.serial) in policy.revoked:
        return CheckStep("crl", "fail", f"serial {peer.serial_hex} of {peer.issuer} is revoked", ref)
    return CheckStep("crl", "pass", f"serial {peer.serial_hex} not revoked", ref)


_REASONS = {
    "verify": Reason.VERIFY,
    "ciphlist": Reason.CIPHLIST,
    "dnuser": Reason.DNUSER,
    "dnissuer": Reason.DNISSUER,
    "keyext": Reason.KEYEXT,
    "crl": Reason.REVOKED,
}


def profile_steps(policy: ProfilePolicy, facts: TlsFacts, *, partner_checks: bool = False) -> list[CheckStep]:
    """Every check of the profile in SPEC order, stopping after the first failure.

    `partner_checks`: the profile is a partner's (CFTPART SSL=) additional check: verify, ciphlist,
    dnuser and dnissuer only (SPEC §4.5).
    """
    peer = facts.verified_peer
    steps: list[CheckStep] = []
    candidates: list[Callable[[], CheckStep]] = [
        lambda: _step_verify(policy, facts),
        lambda: _step_ciphlist(policy, facts),
        lambda: _step_dn("dnuser", policy.dnuser, peer.subject if peer else None, policy.path),
        lambda: _step_dn("dnissuer", policy.dnissuer, peer.issuer if peer else None, policy.path),
    ]
    if not partner_checks:
        candidates += [lambda: _step_keyext(policy, peer), lambda: _step_crl(policy, peer)]
    for make_step in candidates:
        step = make_step()
        steps.append(step)
        if step.outcome == "fail":
            break
    return steps


def decide(steps: list[CheckStep]) -> Decision:
    """The Decision of a list of steps: the first failure, else allowed."""
    for step in steps:
        if step.outcome == "fail":
            return Decision.deny(_REASONS.get(step.name, Reason.PROTOCOL), step.detail, step.rule_ref)
    return Decision.allow()
