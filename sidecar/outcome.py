"""How a connection ended, as one value: what its `close` log line says and what it is counted as.

`CloseReason` is the closed set of the `reason` field of every close line, inbound and outbound,
and the `reason` label of `sidecar_connections_closed_total`: one word for one event, in the logs
and in the metrics. The policy reasons (`policy.decision.Reason`) are among them with the same
values. `Outcome.category` says which family of counters an outcome also feeds (`rejected` by
reason, `handshake_failures` by kind, `errors` by reason); `stats.Counters.record` is the one place
that counts an outcome, and `proxy.connection.finish` the one place that logs it.

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from .policy.decision import Decision

Ending = Literal["accept", "reject", "error", "closed"]
Category = Literal["relayed", "rejected", "handshake", "error", "empty"]


class CloseReason(StrEnum):
    # A relayed session ended (decision accept).
    EOF = "eof"  # both directions finished
    RESET = "reset"  # one side reset or failed mid-stream
    IDLE_TIMEOUT = "idle_timeout"
    # The client connected and went away without sending a byte (health checks, port scans).
    EMPTY = "empty"
    # Refused at accept, before any byte was read.
    MAX_CONNECTIONS = "max_connections"
    SHUTTING_DOWN = "shutting_down"
    # The TLS handshake failed (kind after the prefix: the engine's classification).
    HANDSHAKE_VERIFY = "handshake_verify"
    HANDSHAKE_PROTOCOL = "handshake_protocol"
    HANDSHAKE_PLAINTEXT = "handshake_plaintext"
    HANDSHAKE_RESET = "handshake_reset"
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    # Refused by policy: the values of policy.decision.Reason.
    VERIFY = "verify"
    CIPHLIST = "ciphlist"
    DNUSER = "dnuser"
    DNISSUER = "dnissuer"
    KEYEXT = "keyext"
    REVOKED = "revoked"
    SSLAUTH = "sslauth"
    UNKNOWN_PARTNER = "unknown_partner"
    BAD_PASSWORD = "bad_password"
    PROT = "prot"
    HOST = "host"
    PARTNER_PROFILE = "partner_profile"
    ENCRYPTION_REQUIRED = "encryption_required"
    PROTOCOL = "protocol"
    IDENTIFICATION_TIMEOUT = "identification_timeout"
    # A relayed session the configuration no longer accepts (SPEC §8.3, `live_recheck`): judged
    # again after a reload, or when one of its time limits passed.
    REVOKED_LIVE = "revoked_live"
    EXPIRED_LIVE = "expired_live"
    # PROXY protocol from load balancers (listeners[].accept_proxy).
    PROXY_MISSING = "proxy_missing"  # from a trusted balancer's address, without a valid header in time
    PROXY_UNTRUSTED = "proxy_untrusted"  # a PROXY header from an address that is not a trusted balancer
    # The destination (backend, or remote partner in client mode) failed us.
    BACKEND_UNREACHABLE = "backend_unreachable"
    BACKEND_TIMEOUT = "backend_timeout"
    BACKEND_LOGON_REFUSED = "backend_logon_refused"  # the backend answered the replayed LOGON with NAK0
    BACKEND_PROTOCOL = "backend_protocol"
    PARTNER_UNREACHABLE = "partner_unreachable"
    # Ours.
    SHUTDOWN = "shutdown"  # still running when the drain timeout ended
    INTERNAL_ERROR = "internal_error"


_HANDSHAKE_PREFIX = "handshake_"
_ERRORS = frozenset(
    {
        CloseReason.IDLE_TIMEOUT,
        CloseReason.MAX_CONNECTIONS,
        CloseReason.SHUTTING_DOWN,
        CloseReason.BACKEND_UNREACHABLE,
        CloseReason.BACKEND_TIMEOUT,
        CloseReason.BACKEND_LOGON_REFUSED,
        CloseReason.BACKEND_PROTOCOL,
        CloseReason.PARTNER_UNREACHABLE,
        CloseReason.SHUTDOWN,
        CloseReason.INTERNAL_ERROR,
    }
)


@dataclass(frozen=True, slots=True)
class Outcome:
    decision: Ending
    reason: CloseReason
    detail: str | None = None
    rule: str | None = None  # what decided a policy refusal: "sslauth.txt:7", "profiles[0].dnuser"

    @staticmethod
    def refused(decision: Decision) -> Outcome:
        """A policy refusal: the Decision's reason is the close reason."""
        assert decision.reason is not None, "an allowed Decision is not a refusal"
        return Outcome("reject", CloseReason(decision.reason.value), decision.detail, decision.rule_ref)

    @staticmethod
    def handshake_failed(kind: str, detail: str) -> Outcome:
        return Outcome("reject", CloseReason(_HANDSHAKE_PREFIX + kind), detail)

    @property
    def category(self) -> Category:
        if self.reason is CloseReason.EMPTY:
            return "empty"
        if self.reason in _ERRORS:
            return "error"
        if self.reason.startswith(_HANDSHAKE_PREFIX):
            return "handshake"
        if self.decision == "accept":
            return "relayed"
        return "rejected"

    @property
    def handshake_kind(self) -> str:
        """`verify`, `protocol`, … for a handshake failure (the `kind` label of its counter)."""
        return self.reason.removeprefix(_HANDSHAKE_PREFIX)
