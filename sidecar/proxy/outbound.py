"""Client mode (CFTSSL DIRECT=CLIENT): a plaintext local listener whose connections go out over TLS.

For each accepted local connection: dial the partner's hosts in order (`connect_timeout` each, next
host on failure), run the TLS handshake as a client with the outbound profile, check the server
certificate (verify level, ciphlist, dnuser, dnissuer, keyext, crl), then relay. A refused session
closes the local connection: the legacy server sees what it would see on a network failure.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from .. import logs
from ..policy.checks import decide, profile_steps
from ..snapshot import OutboundPlan
from ..stats import Counters
from ..tls.engine import TlsEndpoint, TlsError
from .inbound import Connection, _peer_text, guarded, next_connection_id
from .relay import Leg, Relay

if TYPE_CHECKING:
    from ..runtime import Runtime


def _is_name(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False


class OutboundListener:
    def __init__(self, runtime: Runtime, outbound_id: str) -> None:
        self.runtime = runtime
        self.outbound_id = outbound_id
        self.server: asyncio.Server | None = None
        self.loop = asyncio.get_running_loop()

    def make_leg(self) -> Leg:
        leg = Leg("local", self.loop)
        leg.on_connection_made = self._accepted
        return leg

    def _accepted(self, leg: Leg) -> None:
        runtime = self.runtime
        snapshot = runtime.snapshot
        plan = snapshot.outbound.get(self.outbound_id) or runtime.bound_outbound[self.outbound_id]
        counters = runtime.stats.outbound_entry(self.outbound_id)
        peer, peer_host = _peer_text(leg)
        conn = Connection(next_connection_id(), f"out:{self.outbound_id}", peer, peer_host, partner=plan.partner.id)
        conn.client = leg
        if runtime.draining:
            leg.abort()
            return
        counters.active += 1
        leg.pause_reading()  # nothing is read from the legacy side until the partner is reached and checked
        runtime.spawn(self._handle(conn, leg, plan, counters), conn)

    async def _handle(self, conn: Connection, leg: Leg, plan: OutboundPlan, counters: Counters) -> None:
        outcome: dict[str, Any] = {"decision": "closed", "reason": "shutdown"}  # kept if cancelled
        try:
            outcome = await guarded(conn, leg, self._run(conn, leg, plan, counters))
        finally:
            counters.active -= 1
            counters.bytes_up += leg.bytes_in
            counters.bytes_down += leg.bytes_out
            partner = self.runtime.stats.partner(plan.partner.id)
            partner.bytes_up += leg.bytes_in
            partner.bytes_down += leg.bytes_out
            facts = conn.facts
            server = facts.peer if facts else None
            logs.event(
                "close",
                logging.INFO if outcome.get("decision") == "accept" else logging.WARNING,
                conn=conn.id, direction="out", outbound=self.outbound_id, peer=conn.peer, partner=plan.partner.id,
                remote=conn.backend.name if conn.backend else None,
                subject=server.subject if server else None, issuer=server.issuer if server else None,
                serial=server.serial_hex if server else None, verified=facts.verified if facts else None,
                tls_version=facts.tls_version if facts else None, cipher=facts.cipher_name if facts else None,
                bytes_up=leg.bytes_in, bytes_down=leg.bytes_out,
                duration_s=round(time.monotonic() - conn.started, 4), **outcome,
            )  # fmt: skip

    async def _dial(self, plan: OutboundPlan, limits_timeout: float) -> tuple[Leg, str] | tuple[None, str]:
        port = plan.partner.sap
        assert port is not None
        failures: list[str] = []
        for host in plan.partner.host:
            try:
                async with asyncio.timeout(limits_timeout):
                    _, remote = await self.loop.create_connection(partial(Leg, f"{host}:{port}", self.loop), host, port)
                return remote, f"{host}:{port}"
            except (OSError, TimeoutError) as exc:
                failures.append(
                    f"{host}:{port}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else 'timeout'}"
                )
        return None, "; ".join(failures)

    async def _run(self, conn: Connection, leg: Leg, plan: OutboundPlan, counters: Counters) -> dict[str, Any]:
        limits = self.runtime.snapshot.config.limits
        remote, where = await self._dial(plan, limits.connect_timeout)
        if remote is None:
            counters.errors["partner_unreachable"] += 1
            leg.close()
            return {"decision": "error", "reason": "partner_unreachable", "detail": where}
        conn.backend = remote
        profile = plan.profile
        assert profile.context is not None
        host = where.rsplit(":", 1)[0]
        try:
            async with asyncio.timeout(limits.handshake_timeout):
                tls = TlsEndpoint(profile.context, server_side=False, server_hostname=host if _is_name(host) else None)
                facts = await remote.start_tls(tls)
        except TimeoutError:
            counters.handshake_failures["timeout"] += 1
            remote.abort()
            leg.close()
            return {"decision": "reject", "reason": "handshake_timeout", "detail": where}
        except TlsError as exc:
            counters.handshake_failures[exc.kind] += 1
            remote.abort()
            leg.close()
            return {"decision": "reject", "reason": f"handshake_{exc.kind}", "detail": str(exc)}
        conn.facts = facts
        if not facts.verified:
            logs.event(
                "server_not_verified", logging.WARNING, conn=conn.id, outbound=self.outbound_id, remote=where,
                verify=profile.profile.verify, errors=[str(e) for e in facts.verify_errors] or None,
            )  # fmt: skip
        decision = decide(profile_steps(profile.policy, facts))
        if not decision.allowed:
            assert decision.reason is not None
            counters.rejected[decision.reason.value] += 1
            self.runtime.stats.partner(plan.partner.id).rejected[decision.reason.value] += 1
            remote.close()
            leg.close()
            return {"decision": "reject", "reason": decision.reason.value, "detail": decision.detail,
                    "rule": decision.rule_ref}  # fmt: skip
        counters.accepted += 1
        self.runtime.stats.partner(plan.partner.id).accepted += 1
        relay = conn.relay = Relay(leg, remote, limits.idle_timeout)
        relay.start()
        await relay.wait()
        reason = "idle_timeout" if relay.timed_out else ("reset" if leg.error or remote.error else "eof")
        return {"decision": "accept", "reason": reason, "detail": leg.error or remote.error}
