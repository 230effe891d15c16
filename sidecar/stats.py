"""Plain counters, read by `/stats` and by the Prometheus collector at scrape time.

Pure: no I/O. Label values come from closed sets (listener and partner ids from the config,
`Reason` values, handshake failure kinds), never from what a peer sent.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .outcome import Outcome


@dataclass(slots=True)
class Counters:
    accepted: int = 0  # connections that reached the backend (or remote partner)
    active: int = 0  # open right now, from accept to close
    rejected: Counter[str] = field(default_factory=Counter)  # by Reason value
    handshake_failures: Counter[str] = field(default_factory=Counter)  # verify|protocol|plaintext|reset|timeout
    errors: Counter[str] = field(default_factory=Counter)  # backend_unreachable, idle_timeout, max_connections, …
    closed: Counter[str] = field(default_factory=Counter)  # every ended connection, by its close reason
    empty: int = 0  # connections that sent no byte at all (health checks, scans)
    unverified: int = 0  # verify: optional sessions that continued without a verified certificate
    bytes_up: int = 0  # client -> backend
    bytes_down: int = 0  # backend -> client

    def record(self, outcome: Outcome) -> None:
        """Count one ended connection: by its close reason, and in the family its category names."""
        reason = outcome.reason.value
        self.closed[reason] += 1
        category = outcome.category
        if category == "rejected":
            self.rejected[reason] += 1
        elif category == "handshake":
            self.handshake_failures[outcome.handshake_kind] += 1
        elif category == "error":
            self.errors[reason] += 1
        elif category == "empty":
            self.empty += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "active": self.active,
            "rejected": dict(self.rejected),
            "handshake_failures": dict(self.handshake_failures),
            "errors": dict(self.errors),
            "closed": dict(self.closed),
            "empty": self.empty,
            "unverified": self.unverified,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
        }


@dataclass(slots=True)
class Stats:
    started: float = field(default_factory=time.monotonic)
    listeners: dict[str, Counters] = field(default_factory=dict)
    partners: dict[str, Counters] = field(default_factory=dict)
    outbound: dict[str, Counters] = field(default_factory=dict)
    reloads: Counter[str] = field(default_factory=Counter)  # ok | refused

    def listener(self, listener_id: str) -> Counters:
        counters = self.listeners.get(listener_id)
        if counters is None:
            counters = self.listeners[listener_id] = Counters()
        return counters

    def partner(self, partner_id: str) -> Counters:
        counters = self.partners.get(partner_id)
        if counters is None:
            counters = self.partners[partner_id] = Counters()
        return counters

    def outbound_entry(self, outbound_id: str) -> Counters:
        counters = self.outbound.get(outbound_id)
        if counters is None:
            counters = self.outbound[outbound_id] = Counters()
        return counters

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started
