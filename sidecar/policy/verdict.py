"""The session verdict: SPEC §1 steps 3–6 as one pure function of facts.

    judge(policy, facts, now) -> Verdict

`policy` is what one listener's sessions are judged by (its profile, SSLAUTH file, the partner book
and the user classes of one snapshot); `facts` is what the connection established: the TLS facts
(None for a plaintext session), the peer address, and what identification read (the PeSIT CONNECT's
requester and password). The verdict carries the decision, every step with PASS/FAIL/SKIP and the
rule that decided it, the partner, the SSLAUTH /USER, the Transfer CFT messages to log and the PeSIT
diagnostic to answer. The proxy reads bytes, calls this and does what it says; `sidecar explain` calls
the same function and prints the steps.

The proxy needs the listener steps (3–4) before it reads a byte of the session (a refused certificate
must not get to send a CONNECT), and the partner steps (5–6) after the CONNECT: `judge_listener` is
the first half, `judge` with its result (`listener=`) finishes the second without doing the first
again. Called alone, `judge` does both.

A verdict that accepts also says until when it holds by itself (`Verdict.time_limit`): the end of
the deciding SSLAUTH ACCEPT's /EDATE//ETIME window or the client certificate's notAfter, whichever
comes first. `time_limit` computes the same without the whole verdict, for a session that starts
relaying (`live.LivePolicy` arms one timer at that instant and judges the session again then).

The identity boundary is drawn here and only here: a certificate that did not verify (tolerated
under `verify: optional`) is never an identity. SSLAUTH, `identify: certificate`, the user of the
class rules and the identity handed to the backend (`Verdict.identity`) all read
`TlsFacts.verified_peer`, never `peer`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from ..config import Identify, MissingPartnerProfile, Partner
from ..pesit import DIAG_BAD_IDENTIFICATION, DIAG_UNAUTHORIZED_REQUESTER
from ..tls.peer import PeerCert, TlsFacts
from .checks import CheckStep, ProfilePolicy, decide, profile_steps
from .classes import ClassPolicy
from .decision import Decision, Reason
from .partners import CftMessage, PartnerBook, cfth22e, cftt15e, check_partner
from .sslauth import RuleSet

VERDICTS_KEPT = 1024  # distinct sessions whose verdict is remembered, per listener and snapshot


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionPolicy:
    """What the sessions of one listener are judged by; built once per snapshot."""

    listener_id: str
    identify: Identify
    missing_partner_profile: MissingPartnerProfile
    profile: ProfilePolicy | None  # None: a plaintext-only listener
    sslauth: RuleSet | None
    partners: PartnerBook
    classes: ClassPolicy
    # Verdicts already given, by everything they were judged on (the whole TlsFacts / SessionFacts
    # value): partners come back with the same certificate, from the same address, all day, and
    # judging (the steps and their texts, an SSLAUTH file's walk) costs more than the handshake's
    # other Python work. Only when no SSLAUTH date window makes the verdict depend on the time.
    _verdicts: dict[object, Verdict] = field(default_factory=dict, init=False, compare=False, repr=False)

    def _remembered(self, key: object, judged: Callable[[], Verdict]) -> Verdict:
        """The verdict for `key`: the one given before, or `judged()` remembered (at most VERDICTS_KEPT).

        `judged` must be a function of `key` and this policy alone: the time must play no part.
        """
        if self.sslauth is not None and self.sslauth.dated:
            return judged()
        known = self._verdicts.get(key)
        if known is None:
            known = judged()
            if len(self._verdicts) >= VERDICTS_KEPT:
                self._verdicts.clear()
            self._verdicts[key] = known
        return known


@dataclass(frozen=True, slots=True)
class PesitClaim:
    """What a PeSIT CONNECT says about who is calling (PI 3 and PI 5)."""

    requester: str
    password: str | None


@dataclass(frozen=True, slots=True)
class SessionFacts:
    tls: TlsFacts | None  # None: a plaintext session (`plaintext: allow`)
    peer_host: str  # the client's address, as CFTTCP VERIFY and the user classes compare it
    claim: PesitClaim | None = None  # `identify: pesit`, once the CONNECT has been read


@dataclass(frozen=True, slots=True)
class TimeLimit:
    """The instant an accepted session stops being acceptable by the passing of time alone."""

    at: datetime  # timezone-aware for a certificate; an SSLAUTH end is on the clock `now` was given in
    kind: Literal["certificate", "sslauth"]
    detail: str
    rule: str | None = None  # the SSLAUTH statement whose window ends ("sslauth.txt:3")


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    decision: Decision
    steps: tuple[CheckStep, ...]
    # True when the listener steps passed and `identify: pesit` still has to read the CONNECT: the
    # partner steps are not evaluated yet, so this is not an acceptance.
    pending_identification: bool = False
    identity: PeerCert | None = None  # the verified client certificate: the only one that identifies
    user: str | None = None  # SSLAUTH /USER of the deciding ACCEPT
    partner: Partner | None = None
    user_class: str | None = None
    messages: tuple[CftMessage, ...] = ()  # Transfer CFT messages to log, in order
    pesit_diagnostic: int | None = None  # RCONNECT diagnostic to answer before closing (PeSIT only)
    time_limit: TimeLimit | None = None  # accepted: the first instant it no longer holds by itself

    @property
    def accepted(self) -> bool:
        return self.decision.allowed and not self.pending_identification


def judge_listener(policy: SessionPolicy, tls: TlsFacts | None, now: datetime) -> Verdict:
    """Steps 3–4: the listener profile's checks, then its SSLAUTH file (skipped for plaintext)."""
    return policy._remembered(("listener", tls), lambda: _judge_listener(policy, tls, now))


def _judge_listener(policy: SessionPolicy, tls: TlsFacts | None, now: datetime) -> Verdict:
    identity = tls.verified_peer if tls is not None else None
    if tls is None or policy.profile is None:
        steps = [CheckStep("tls", "skip", "plaintext session: no TLS checks")]
        decision = Decision.allow()
        user = None
        limit = None
    else:
        steps = profile_steps(policy.profile, tls)
        decision = decide(steps)
        user = None
        limit = None
        if decision.allowed:
            decision, user, limit = _sslauth(policy.sslauth, identity, now, steps)
    pending = decision.allowed and policy.identify == "pesit"
    return Verdict(decision=decision, steps=tuple(steps), pending_identification=pending, identity=identity, user=user,
                   time_limit=limit if decision.allowed else None)  # fmt: skip


def _sslauth(
    rules: RuleSet | None, identity: PeerCert | None, now: datetime, steps: list[CheckStep]
) -> tuple[Decision, str | None, TimeLimit | None]:
    if rules is None:
        steps.append(CheckStep("sslauth", "skip", "no SSLAUTH file"))
        return Decision.allow(), None, _earliest(identity, None, None)
    result = rules.evaluate(identity, now)
    if result.allowed:
        steps.append(CheckStep("sslauth", "pass", result.detail, result.rule_ref))
        limit = _earliest(identity, result.valid_until, result.rule_ref)
        return Decision.allow(result.detail, result.rule_ref), result.user, limit
    steps.append(CheckStep("sslauth", "fail", result.detail, result.rule_ref))
    return Decision.deny(Reason.SSLAUTH, result.detail, result.rule_ref), None, None


def _earliest(identity: PeerCert | None, window_end: datetime | None, rule: str | None) -> TimeLimit | None:
    """The first of the certificate's notAfter and the deciding SSLAUTH window's end."""
    limits: list[TimeLimit] = []
    if identity is not None:
        when = f"{identity.not_after:%Y-%m-%d %H:%M:%S} UTC"
        limits.append(TimeLimit(identity.not_after, "certificate", f"client certificate notAfter {when} passed"))
    if window_end is not None:
        if window_end.tzinfo is None:  # a naive `now`: the server's local time, as SSLAUTH dates are
            window_end = window_end.astimezone()
        limits.append(TimeLimit(window_end, "sslauth", f"the window of the ACCEPT at {rule} ended", rule))
    return min(limits, key=lambda limit: limit.at, default=None)


def judge(policy: SessionPolicy, facts: SessionFacts, now: datetime, *, listener: Verdict | None = None) -> Verdict:
    """The whole verdict for one session; `listener` = the result of `judge_listener` when already known."""
    # `listener` is judge_listener's verdict on the same facts: a function of them, not more to key on.
    return policy._remembered(("session", facts), lambda: _judge(policy, facts, now, listener))


def _judge(policy: SessionPolicy, facts: SessionFacts, now: datetime, listener: Verdict | None) -> Verdict:
    first = listener if listener is not None else judge_listener(policy, facts.tls, now)
    if not first.decision.allowed:
        return first
    steps = list(first.steps)
    partner: Partner | None = None
    pesit = policy.identify == "pesit"
    if pesit:
        if facts.claim is None:
            steps.append(CheckStep("partner", "skip", "not evaluated: the PeSIT CONNECT names the partner"))
            return replace(first, steps=tuple(steps), pending_identification=True)
        partner = policy.partners.find(facts.claim.requester)
        refusal = _identification_refusal(policy.partners, partner, facts.claim, facts.peer_host)
        if refusal is not None:
            decision, message = refusal
            steps.append(CheckStep("partner", "fail", decision.detail))
            return _refused(first, steps, decision, (message,), DIAG_BAD_IDENTIFICATION, partner=None)
    elif policy.identify == "certificate":
        common_name = first.identity.common_name if first.identity is not None else None
        partner = policy.partners.find(common_name) if common_name is not None else None
        if partner is None:
            detail = f"no partner with nrpart {common_name!r}" if common_name else "no verified certificate"
            steps.append(CheckStep("partner", "fail", detail))
            return _refused(first, steps, Decision.deny(Reason.UNKNOWN_PARTNER, detail), (), None, partner=None)

    messages: tuple[CftMessage, ...] = ()
    if partner is not None:
        steps.append(CheckStep("partner", "pass", f"{partner.id} ({partner.path}), nrpart {partner.nrpart}"))
        checked = check_partner(
            policy.partners, partner, listener_id=policy.listener_id, peer_host=facts.peer_host, facts=facts.tls,
            missing_profile=policy.missing_partner_profile,
        )  # fmt: skip
        steps.extend(checked.steps)
        messages = checked.messages
        if not checked.decision.allowed:
            diagnostic = DIAG_UNAUTHORIZED_REQUESTER if pesit else None
            return _refused(first, steps, checked.decision, messages, diagnostic, partner=partner)

    # Step 6: the user is the partner's NRPART, else the verified certificate's CN, else nobody.
    user = partner.nrpart if partner is not None else (first.identity.common_name if first.identity else None)
    encryption, match, entry = policy.classes.decide(
        encrypted=facts.tls is not None, user=user, address=facts.peer_host,
        explicit_class=partner.user_class if partner is not None else None,
    )  # fmt: skip
    where = f"encryption[{entry.rule_index}]" if entry.rule_index is not None else "no entry: optional"
    detail = (f"user {user or '-'} -> class {match.name or '-'}; "
              f"{'required' if entry.required else 'optional'} ({where})")  # fmt: skip
    steps.append(CheckStep("encryption", "pass" if encryption.allowed else "fail", detail, encryption.rule_ref))
    if not encryption.allowed:
        diagnostic = DIAG_UNAUTHORIZED_REQUESTER if pesit else None
        return _refused(first, steps, encryption, messages, diagnostic, partner=partner, user_class=match.name)
    return replace(
        first,
        steps=tuple(steps),
        pending_identification=False,
        partner=partner,
        user_class=match.name,
        messages=messages,
    )


def _identification_refusal(
    book: PartnerBook, partner: Partner | None, claim: PesitClaim, peer_host: str
) -> tuple[Decision, CftMessage] | None:
    """PeSIT: an unknown requester or a wrong password (RCONNECT 301), else None."""
    if partner is None:
        detail = f"unknown partner {claim.requester!r}"
        return Decision.deny(Reason.UNKNOWN_PARTNER, detail), cftt15e(claim.requester)
    if not book.password_matches(partner, claim.password):
        detail = f"wrong password for {claim.requester!r}"
        return Decision.deny(Reason.BAD_PASSWORD, detail), cfth22e(claim.requester, 403, peer_host)
    return None


def _refused(
    first: Verdict,
    steps: list[CheckStep],
    decision: Decision,
    messages: tuple[CftMessage, ...],
    diagnostic: int | None,
    *,
    partner: Partner | None,
    user_class: str | None = None,
) -> Verdict:
    return replace(
        first,
        decision=decision,
        steps=tuple(steps),
        pending_identification=False,
        partner=partner,
        user_class=user_class,
        messages=messages,
        pesit_diagnostic=diagnostic,
        time_limit=None,
    )


def judge_server(profile: ProfilePolicy, tls: TlsFacts) -> Verdict:
    """Client mode (SPEC §4.7): the DIRECT=CLIENT profile's checks on the remote partner's server."""
    steps = profile_steps(profile, tls)
    return Verdict(decision=decide(steps), steps=tuple(steps), identity=tls.verified_peer)
