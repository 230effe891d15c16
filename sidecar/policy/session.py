"""The listener-level decision for one session: profile checks (§4.3) then SSLAUTH (§4.4).

Pure, and shared by the proxy and by `sidecar explain`, so what explain prints is what the proxy
does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..tls.peer import TlsFacts
from .checks import CheckStep, ProfilePolicy, decide, profile_steps
from .decision import Decision, Reason
from .sslauth import RuleSet


@dataclass(frozen=True, slots=True)
class ListenerVerdict:
    decision: Decision
    steps: tuple[CheckStep, ...]
    user: str | None  # /USER of the deciding SSLAUTH ACCEPT


def evaluate_listener(
    policy: ProfilePolicy, sslauth: RuleSet | None, facts: TlsFacts, now: datetime
) -> ListenerVerdict:
    steps = profile_steps(policy, facts)
    decision = decide(steps)
    if not decision.allowed:
        return ListenerVerdict(decision, tuple(steps), None)
    if sslauth is None:
        steps.append(CheckStep("sslauth", "skip", "no SSLAUTH file"))
        return ListenerVerdict(decision, tuple(steps), None)
    result = sslauth.evaluate(facts.verified_peer, now)
    if result.allowed:
        steps.append(CheckStep("sslauth", "pass", result.detail, result.rule_ref))
        return ListenerVerdict(Decision.allow(result.detail, result.rule_ref), tuple(steps), result.user)
    steps.append(CheckStep("sslauth", "fail", result.detail, result.rule_ref))
    return ListenerVerdict(Decision.deny(Reason.SSLAUTH, result.detail, result.rule_ref), tuple(steps), None)
