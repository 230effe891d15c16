"""Decisions are values: every check returns one; the I/O edge logs, counts and acts on it.

`Reason` is a closed set: it is also the `reason` label of the metrics, so it must never carry
free text (a DN, a serial, an address); that goes into `detail`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    VERIFY = "verify"  # authentication level: a verified client certificate was required
    CIPHLIST = "ciphlist"  # negotiated suite not in the profile's list
    DNUSER = "dnuser"
    DNISSUER = "dnissuer"
    KEYEXT = "keyext"
    REVOKED = "revoked"  # listed in a CRL of the profile
    SSLAUTH = "sslauth"
    UNKNOWN_PARTNER = "unknown_partner"
    BAD_PASSWORD = "bad_password"
    PROT = "prot"  # listener not in the partner's PROT list
    HOST = "host"  # CFTTCP VERIFY address check
    PARTNER_PROFILE = "partner_profile"  # partner's SSL profile missing and missing_partner_profile=reject
    ENCRYPTION_REQUIRED = "encryption_required"
    PROTOCOL = "protocol"  # malformed or unexpected bytes from the client (PeSIT, plaintext refused)
    IDENTIFICATION_TIMEOUT = "identification_timeout"  # no PeSIT CONNECT within the handshake deadline


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: Reason | None = None
    detail: str = ""
    rule_ref: str | None = None  # what decided: "sslauth.txt:7", "profiles[0].dnuser[1]", …

    @staticmethod
    def allow(detail: str = "", rule_ref: str | None = None) -> Decision:
        return Decision(True, None, detail, rule_ref)

    @staticmethod
    def deny(reason: Reason, detail: str, rule_ref: str | None = None) -> Decision:
        return Decision(False, reason, detail, rule_ref)
