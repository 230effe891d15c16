"""Plain counters, read by `/stats` and by the Prometheus collector at scrape time.

Pure: no I/O. Label values come from closed sets (listener and partner ids from the config,
`Reason` values, handshake failure kinds), never from what a peer sent.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .outcome import Outcome

# Upper bounds (seconds) of the handshake duration buckets: a loopback handshake takes about a
# millisecond, a partner across a WAN tens to hundreds; the deadline (handshake_timeout) is 10 s.
HANDSHAKE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(slots=True)
class Histogram:
    """Counts per bucket (not cumulative; the last one is +Inf) and the sum, as Prometheus wants them."""

    bounds: tuple[float, ...] = HANDSHAKE_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(HANDSHAKE_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, int]]:
        """[(le, count of observations <= le), …, ("+Inf", all)]."""
        running, rows = 0, []
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            rows.append((bound, running))
        return rows


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
    handshake_seconds: Histogram = field(default_factory=Histogram)  # completed TLS handshakes

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
