"""Client mode (CFTSSL DIRECT=CLIENT): a plaintext local listener whose connections go out over TLS.

For each accepted local connection: dial the partner's hosts in order (`connect_timeout` each, next
host on failure), run the TLS handshake as a client with the outbound profile, judge the server
certificate (`policy.verdict.judge_server`: verify level, ciphlist, dnuser, dnissuer, keyext, crl),
then relay. A refused session closes the local connection: the legacy server sees what it would
see on a network failure. The lifecycle (limits, counting, the close line) is the inbound one
(`proxy.connection`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from functools import partial

from .. import logs
from ..outcome import CloseReason, Outcome
from ..policy.verdict import judge_server
from ..snapshot import OutboundPlan, Snapshot
from ..stats import Counters, Stats
from ..tls.engine import TlsEndpoint, TlsError
from .connection import Acceptor, Connection, serve
from .relay import Leg


def _is_name(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False


class OutboundListener(Acceptor[OutboundPlan]):
    """Accepts the legacy server's local connections for one outbound entry."""

    direction = "out"

    def counters(self, stats: Stats) -> Counters:
        return stats.outbound_entry(self.entry_id)

    def begin(self, conn: Connection, leg: Leg, plan: OutboundPlan, snapshot: Snapshot) -> None:
        conn.identified(plan.partner.id, self.host.stats.partner(plan.partner.id))
        conn.parm = plan.profile.profile.parm
        leg.pause_reading()  # nothing is read from the legacy side until the partner is reached and checked
        self.host.spawn(serve(conn, self._run(conn, leg, plan, snapshot)))

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

    async def _run(self, conn: Connection, leg: Leg, plan: OutboundPlan, snapshot: Snapshot) -> Outcome | None:
        limits = snapshot.config.limits
        remote, where = await self._dial(plan, limits.connect_timeout)
        if remote is None:
            leg.close()
            return Outcome("error", CloseReason.PARTNER_UNREACHABLE, where)
        conn.backend = remote
        conn.remote = where
        profile = plan.profile
        assert profile.context is not None
        host = where.rsplit(":", 1)[0]
        try:
            async with asyncio.timeout(limits.handshake_timeout):
                tls = TlsEndpoint(profile.context, server_side=False, server_hostname=host if _is_name(host) else None)
                remote.start_tls(tls)
                facts = await remote.handshake_done()
        except TimeoutError:
            remote.abort()
            leg.close()
            return Outcome.handshake_failed("timeout", where)
        except TlsError as exc:
            remote.abort()
            leg.close()
            return conn.handshake_failed(exc)
        conn.facts = facts
        if not facts.verified:
            logs.event(
                "server_not_verified", logging.WARNING, conn=conn.id, outbound=self.entry_id, remote=where,
                verify=profile.profile.verify, errors=[str(e) for e in facts.verify_errors] or None,
            )  # fmt: skip
        verdict = judge_server(profile.policy, facts)
        if not verdict.decision.allowed:
            remote.close()
            leg.close()
            return Outcome.refused(verdict.decision)
        conn.relay(remote, limits.idle_timeout)
        return None
