"""Inbound path: accept -> TLS handshake -> checks -> (identify) -> dial backend -> relay.

Nothing is sent to the backend, and the backend is not even dialled, before every check passed.
One `close` log line per connection, whatever happened.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import logs
from ..policy.decision import Decision
from ..policy.session import evaluate_listener
from ..snapshot import ListenerPlan, Snapshot
from ..stats import Counters
from ..tls.engine import TlsEndpoint, TlsError
from ..tls.peer import TlsFacts
from .relay import Leg, Relay

if TYPE_CHECKING:
    from ..runtime import Runtime

_connection_ids = itertools.count(1)


@dataclass(slots=True)
class Connection:
    """What is known about one live connection: read by logs, `/connections` and stats."""

    id: int
    listener: str
    peer: str
    started: float = field(default_factory=time.monotonic)
    facts: TlsFacts | None = None
    partner: str | None = None
    user: str | None = None
    client: Leg | None = None
    backend: Leg | None = None
    relay: Relay | None = None

    def describe(self) -> dict[str, Any]:
        facts = self.facts
        peer = facts.peer if facts else None
        return {
            "id": self.id,
            "listener": self.listener,
            "peer": self.peer,
            "partner": self.partner,
            "user": self.user,
            "subject": peer.subject if peer else None,
            "verified": facts.verified if facts else None,
            "tls_version": facts.tls_version if facts else None,
            "cipher": facts.cipher_name if facts else None,
            "bytes_up": self.client.bytes_in if self.client else 0,
            "bytes_down": self.client.bytes_out if self.client else 0,
            "age_s": round(time.monotonic() - self.started, 3),
        }


def _peer_text(leg: Leg) -> str:
    assert leg.transport is not None
    address = leg.transport.get_extra_info("peername")
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


class InboundListener:
    """Accepts connections for one listener and runs each through the inbound path."""

    def __init__(self, runtime: Runtime, listener_id: str) -> None:
        self.runtime = runtime
        self.listener_id = listener_id
        self.server: asyncio.Server | None = None

    def make_leg(self) -> Leg:
        leg = Leg("client")
        leg.on_connection_made = self._accepted
        return leg

    def _accepted(self, leg: Leg) -> None:
        runtime = self.runtime
        snapshot = runtime.snapshot
        plan = snapshot.listeners.get(self.listener_id) or runtime.bound_plans[self.listener_id]
        counters = runtime.stats.listener(self.listener_id)
        conn = Connection(next(_connection_ids), self.listener_id, _peer_text(leg))
        if counters.active >= snapshot.config.limits.max_connections or runtime.draining:
            counters.errors["over_limit" if not runtime.draining else "shutting_down"] += 1
            leg.abort()
            logs.event(
                "close", logging.WARNING, conn=conn.id, listener=conn.listener, peer=conn.peer,
                decision="reject", reason="max_connections" if not runtime.draining else "shutting_down",
            )  # fmt: skip
            return
        conn.client = leg
        counters.active += 1  # counted here, synchronously, so a burst of accepts cannot overshoot the limit
        if plan.profile is not None and plan.listener.plaintext == "refuse":
            assert plan.profile.context is not None
            leg.start_tls(TlsEndpoint(plan.profile.context, server_side=True))
        runtime.spawn(self._handle(conn, leg, plan, snapshot, counters), conn)

    async def _handle(
        self, conn: Connection, leg: Leg, plan: ListenerPlan, snapshot: Snapshot, counters: Counters
    ) -> None:
        outcome: dict[str, Any] = {"decision": "reject"}
        try:
            outcome = await self._run(conn, leg, plan, snapshot, counters)
        except asyncio.CancelledError:
            outcome = {"decision": "closed", "reason": "shutdown"}
            leg.abort()
            if conn.backend is not None:
                conn.backend.abort()
            raise
        except Exception as exc:  # a bug must not take the process down: log it, close this one
            logs.event("internal_error", logging.ERROR, conn=conn.id, error=f"{type(exc).__name__}: {exc}")
            outcome = {"decision": "closed", "reason": "internal_error"}
            leg.abort()
            if conn.backend is not None:
                conn.backend.abort()
        finally:
            counters.active -= 1
            counters.bytes_up += leg.bytes_in
            counters.bytes_down += leg.bytes_out
            self._log_close(conn, leg, outcome)

    async def _run(
        self, conn: Connection, leg: Leg, plan: ListenerPlan, snapshot: Snapshot, counters: Counters
    ) -> dict[str, Any]:
        limits = snapshot.config.limits
        listener = plan.listener
        try:
            async with asyncio.timeout(limits.handshake_timeout):
                assert leg.handshake is not None
                facts = await leg.handshake
        except TimeoutError:
            counters.handshake_failures["timeout"] += 1
            leg.abort()
            return {"decision": "reject", "reason": "handshake_timeout", "detail": "no TLS handshake in time"}
        except TlsError as exc:
            counters.handshake_failures[exc.kind] += 1
            leg.abort()
            return {"decision": "reject", "reason": f"handshake_{exc.kind}", "detail": str(exc)}
        conn.facts = facts
        if facts.peer is not None and not facts.verified:
            counters.unverified += 1
            logs.event(
                "unverified", logging.WARNING, conn=conn.id, listener=listener.id, peer=conn.peer,
                subject=facts.peer.subject, errors=[str(e) for e in facts.verify_errors],
            )  # fmt: skip

        assert plan.profile is not None
        verdict = evaluate_listener(plan.profile.policy, plan.sslauth, facts, datetime.now().astimezone())
        if not verdict.decision.allowed:
            return self._reject(conn, leg, counters, verdict.decision)
        conn.user = verdict.user

        backend_address = listener.backend
        assert backend_address is not None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(limits.connect_timeout):
                _, backend = await loop.create_connection(
                    lambda: Leg("backend"), backend_address.host, backend_address.port
                )
        except (OSError, TimeoutError) as exc:
            kind = "backend_timeout" if isinstance(exc, TimeoutError) else "backend_unreachable"
            counters.errors[kind] += 1
            leg.close()
            detail = f"{backend_address}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}"
            return {"decision": "error", "reason": kind, "detail": detail}
        conn.backend = backend
        counters.accepted += 1
        relay = conn.relay = Relay(leg, backend, limits.idle_timeout)
        relay.start()
        await relay.wait()
        reason = "idle_timeout" if relay.timed_out else ("reset" if leg.error or backend.error else "eof")
        if relay.timed_out:
            counters.errors["idle_timeout"] += 1
        return {"decision": "accept", "reason": reason, "detail": leg.error or backend.error,
                "unclean_eof": leg.unclean_eof or None}  # fmt: skip

    def _reject(self, conn: Connection, leg: Leg, counters: Counters, decision: Decision) -> dict[str, Any]:
        assert decision.reason is not None
        counters.rejected[decision.reason.value] += 1
        leg.close()
        return {"decision": "reject", "reason": decision.reason.value, "detail": decision.detail,
                "rule": decision.rule_ref}  # fmt: skip

    def _log_close(self, conn: Connection, leg: Leg, outcome: dict[str, Any]) -> None:
        facts = conn.facts
        peer = facts.peer if facts else None
        accepted = outcome.get("decision") == "accept"
        logs.event(
            "close",
            logging.INFO if accepted else logging.WARNING,
            conn=conn.id,
            listener=conn.listener,
            peer=conn.peer,
            partner=conn.partner,
            user=conn.user,
            subject=peer.subject if peer else None,
            issuer=peer.issuer if peer else None,
            serial=peer.serial_hex if peer else None,
            verified=facts.verified if facts else None,
            tls_version=facts.tls_version if facts else None,
            cipher=facts.cipher_name if facts else None,
            bytes_up=leg.bytes_in,
            bytes_down=leg.bytes_out,
            duration_s=round(time.monotonic() - conn.started, 4),
            **outcome,
        )
