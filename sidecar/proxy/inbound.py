"""Inbound path: accept -> TLS handshake -> checks -> (identify) -> dial backend -> relay.

Nothing is sent to the backend, and the backend is not even dialled, before every check passed.
One `close` log line per connection, whatever happened.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import logs, pesit
from ..config import Partner
from ..pesit import Connect
from ..policy.decision import Decision, Reason
from ..policy.partners import CftMessage, cfth22e, cftt15e, check_partner, partner_from_certificate
from ..policy.session import evaluate_listener
from ..snapshot import ListenerPlan, Snapshot
from ..stats import Counters
from ..tls.engine import TlsEndpoint, TlsError
from ..tls.peer import TlsFacts
from . import proxyproto
from .relay import TLS_RECORD_HANDSHAKE, Leg, Relay

if TYPE_CHECKING:
    from ..runtime import Runtime

_connection_ids = itertools.count(1)


def next_connection_id() -> int:
    """Connection ids are unique across listeners and outbound entries of the process."""
    return next(_connection_ids)


@dataclass(slots=True)
class Session:
    """What identification read, to be replayed to the backend verbatim."""

    replay: bytes = b""  # LOGON (if any) + CONNECT + what followed, exactly as received
    logon_length: int = 0  # bytes of `replay` that are the LOGON (framed or not)

    def framed(self, connect: Connect) -> bool:
        # The RCONNECT mirrors the request: framed when the CONNECT came with its NSDU prefix.
        start = self.logon_length
        return self.replay[start + 2 : start + 4] == self.replay[start : start + 2]


async def guarded(conn: Connection, leg: Leg, work: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Run one connection's work; on shutdown or on a bug, close both sides and say why.

    A bug must not take the process down: it is logged and only this connection is closed.
    Either way the legs are released at the end (see `Leg.release`).
    """
    try:
        return await work
    except asyncio.CancelledError:
        _abort(conn, leg)
        raise
    except Exception as exc:
        logs.event("internal_error", logging.ERROR, conn=conn.id, error=f"{type(exc).__name__}: {exc}")
        _abort(conn, leg)
        return {"decision": "closed", "reason": "internal_error"}
    finally:
        leg.release()
        if conn.backend is not None:
            conn.backend.release()


def _abort(conn: Connection, leg: Leg) -> None:
    leg.abort()
    if conn.backend is not None:
        conn.backend.abort()


def snapshot_partner_counters(runtime: Runtime, partner_id: str | None) -> Counters | None:
    return runtime.stats.partner(partner_id) if partner_id is not None else None


@dataclass(slots=True)
class Connection:
    """What is known about one live connection: read by logs, `/connections` and stats."""

    id: int
    listener: str
    peer: str
    peer_host: str
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


def _peer_text(leg: Leg) -> tuple[str, str]:
    """("host:port", "host") of the client."""
    assert leg.transport is not None
    address = leg.transport.get_extra_info("peername")
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = str(address[0]), address[1]
        return (f"[{host}]:{port}" if ":" in host else f"{host}:{port}"), host
    return str(address), str(address)


class InboundListener:
    """Accepts connections for one listener and runs each through the inbound path."""

    def __init__(self, runtime: Runtime, listener_id: str) -> None:
        self.runtime = runtime
        self.listener_id = listener_id
        self.server: asyncio.Server | None = None
        self.loop = asyncio.get_running_loop()

    def make_leg(self) -> Leg:
        leg = Leg("client", self.loop)
        leg.on_connection_made = self._accepted
        return leg

    def _accepted(self, leg: Leg) -> None:
        runtime = self.runtime
        snapshot = runtime.snapshot
        plan = snapshot.listeners.get(self.listener_id) or runtime.bound_plans[self.listener_id]
        counters = runtime.stats.listener(self.listener_id)
        peer, peer_host = _peer_text(leg)
        conn = Connection(next_connection_id(), self.listener_id, peer, peer_host)
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
        outcome: dict[str, Any] = {"decision": "closed", "reason": "shutdown"}  # kept if cancelled
        try:
            outcome = await guarded(conn, leg, self._run(conn, leg, plan, snapshot, counters))
        finally:
            counters.active -= 1
            counters.bytes_up += leg.bytes_in
            counters.bytes_down += leg.bytes_out
            if plan.profile is not None and plan.profile.profile.parm:
                outcome["parm"] = plan.profile.profile.parm  # CFT PARM: free data for the operator's tools
            self._log_close(conn, leg, outcome)

    async def _run(
        self, conn: Connection, leg: Leg, plan: ListenerPlan, snapshot: Snapshot, counters: Counters
    ) -> dict[str, Any]:
        limits = snapshot.config.limits
        listener = plan.listener
        session = Session()
        try:
            # One deadline for everything before the backend is dialled: TLS, then identification.
            async with asyncio.timeout(limits.handshake_timeout):
                facts = await self._establish(leg, plan)
                conn.facts = facts
                refusal = await self._decide(conn, leg, plan, snapshot, counters, facts, session)
        except TimeoutError:
            stage = "handshake" if conn.facts is None and plan.profile is not None else "identification"
            if stage == "handshake":
                counters.handshake_failures["timeout"] += 1
            else:
                counters.rejected[Reason.TIMEOUT.value] += 1
            leg.abort()
            return {"decision": "reject", "reason": f"{stage}_timeout", "detail": f"no {stage} in time"}
        except TlsError as exc:
            counters.handshake_failures[exc.kind] += 1
            leg.abort()
            return {"decision": "reject", "reason": f"handshake_{exc.kind}", "detail": str(exc)}
        if refusal is not None:
            return refusal
        partner_counters = snapshot_partner_counters(self.runtime, conn.partner)

        backend_address = listener.backend
        assert backend_address is not None
        try:
            async with asyncio.timeout(limits.connect_timeout):
                _, backend = await self.loop.create_connection(
                    lambda: Leg("backend", self.loop), backend_address.host, backend_address.port
                )
                conn.backend = backend
                header = self._proxy_header(listener.proxy_protocol, conn, leg)
                if header:
                    backend.send(header)
                if session.logon_length:
                    refused = await self._replay_logon(leg, backend, session)
                    if refused is not None:
                        counters.errors["backend_logon_refused"] += 1
                        return refused
        except (OSError, TimeoutError) as exc:
            kind = "backend_timeout" if isinstance(exc, TimeoutError) else "backend_unreachable"
            counters.errors[kind] += 1
            if conn.backend is not None:
                conn.backend.abort()
            leg.close()
            detail = f"{backend_address}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}"
            return {"decision": "error", "reason": kind, "detail": detail}
        counters.accepted += 1
        if partner_counters is not None:
            partner_counters.accepted += 1
        relay = conn.relay = Relay(leg, backend, limits.idle_timeout)
        relay.start(replay_to_server=session.replay[session.logon_length :])
        await relay.wait()
        if partner_counters is not None:
            partner_counters.bytes_up += leg.bytes_in
            partner_counters.bytes_down += leg.bytes_out
        reason = "idle_timeout" if relay.timed_out else ("reset" if leg.error or backend.error else "eof")
        if relay.timed_out:
            counters.errors["idle_timeout"] += 1
        return {"decision": "accept", "reason": reason, "detail": leg.error or backend.error,
                "unclean_eof": leg.unclean_eof or None}  # fmt: skip

    async def _establish(self, leg: Leg, plan: ListenerPlan) -> TlsFacts | None:
        """The TLS handshake, or None for a plaintext session (`plaintext: allow`, first byte not 0x16)."""
        if plan.profile is None:
            return None
        if leg.handshake is None:  # plaintext: allow — the first byte decides, nothing is lost
            await leg.wait_for_data(1)
            if not leg.held:
                raise TlsError("connection closed before any byte", "reset")
            if leg.held[0] != TLS_RECORD_HANDSHAKE:
                return None
            assert plan.profile.context is not None
            leg.start_tls(TlsEndpoint(plan.profile.context, server_side=True), initial=leg.take_held())
        assert leg.handshake is not None
        return await leg.handshake

    async def _decide(
        self,
        conn: Connection,
        leg: Leg,
        plan: ListenerPlan,
        snapshot: Snapshot,
        counters: Counters,
        facts: TlsFacts | None,
        session: Session,
    ) -> dict[str, Any] | None:
        """Every check before the backend is dialled; a close outcome when refused, None when accepted."""
        listener = plan.listener
        if facts is not None:
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

        book = snapshot.partners
        partner: Partner | None = None
        pesit_reply_to: Connect | None = None
        if listener.identify == "pesit":
            outcome = await self._read_pesit(conn, leg, counters, session)
            if isinstance(outcome, dict):
                return outcome
            pesit_reply_to = outcome.connect
            nrpart = outcome.connect.requester
            partner = book.find(nrpart)
            if partner is None or not book.password_matches(partner, outcome.connect.password):
                message = cftt15e(nrpart) if partner is None else cfth22e(nrpart, 403, conn.peer_host)
                reason = Reason.UNKNOWN_PARTNER if partner is None else Reason.BAD_PASSWORD
                self._log_cft(conn, message)
                detail = f"unknown partner {nrpart!r}" if partner is None else f"wrong password for {nrpart!r}"
                self._rconnect(leg, session, outcome.connect, pesit.DIAG_BAD_IDENTIFICATION)
                return self._reject(conn, leg, counters, Decision.deny(reason, detail))
        elif listener.identify == "certificate" and facts is not None:
            partner, common_name = partner_from_certificate(book, facts)
            if partner is None:
                detail = f"no partner with nrpart {common_name!r}" if common_name else "no verified certificate"
                return self._reject(conn, leg, counters, Decision.deny(Reason.UNKNOWN_PARTNER, detail))

        if partner is not None:
            conn.partner = partner.id
            checked = check_partner(book, partner, listener_id=listener.id, peer_host=conn.peer_host, facts=facts,
                                    missing_profile=listener.missing_partner_profile)  # fmt: skip
            for message in checked.messages:
                self._log_cft(conn, message)
            if not checked.decision.allowed:
                if pesit_reply_to is not None:
                    self._rconnect(leg, session, pesit_reply_to, pesit.DIAG_UNAUTHORIZED_REQUESTER)
                self.runtime.stats.partner(partner.id).rejected[str(checked.decision.reason)] += 1
                return self._reject(conn, leg, counters, checked.decision)

        user = partner.nrpart if partner is not None else (facts.verified_peer.common_name if facts and
                                                            facts.verified_peer else None)  # fmt: skip
        encryption, _, _ = snapshot.classes.decide(
            encrypted=facts is not None,
            user=user,
            address=conn.peer_host,
            explicit_class=partner.user_class if partner is not None else None,
        )
        if not encryption.allowed:
            if pesit_reply_to is not None:
                self._rconnect(leg, session, pesit_reply_to, pesit.DIAG_UNAUTHORIZED_REQUESTER)
            return self._reject(conn, leg, counters, encryption)
        return None

    async def _read_pesit(
        self, conn: Connection, leg: Leg, counters: Counters, session: Session
    ) -> pesit.ConnectReceived | dict[str, Any]:
        """Read the optional LOGON (answered ACK0 here) and the CONNECT; nothing reaches the backend."""
        reader = pesit.ConnectReader()
        result = reader.feed(leg.take_held())
        while True:
            if isinstance(result, pesit.LogonReceived):
                leg.send(result.reply)
                session.logon_length = len(result.logon.raw) + (pesit.NSDU_PREFIX_LENGTH if result.framed else 0)
                result = reader.feed(b"")  # the CONNECT may already be here
                continue
            if isinstance(result, pesit.ConnectReceived):
                session.replay = result.consumed + result.extra
                return result
            if isinstance(result, pesit.ProtocolError):
                if result.reply is not None:
                    leg.send(result.reply)
                self._log_cft(conn, CftMessage("CFTH20E", f"CFTH20E Invalid CONNECT FPDU {result.message}", "error"))
                return self._reject(conn, leg, counters, Decision.deny(Reason.PROTOCOL, result.message))
            await leg.wait_for_data(1)
            if not leg.held:
                detail = "connection closed before the PeSIT CONNECT"
                return self._reject(conn, leg, counters, Decision.deny(Reason.PROTOCOL, detail))
            result = reader.feed(leg.take_held())

    async def _replay_logon(self, client: Leg, backend: Leg, session: Session) -> dict[str, Any] | None:
        """Give the backend the client's LOGON and consume its ACK0; a NAK0 goes back to the client."""
        backend.send(session.replay[: session.logon_length])
        while True:
            answer = pesit.parse_logon_answer(bytes(backend.held))
            if isinstance(answer, pesit.LogonAnswer):
                del backend.held[: answer.consumed_len]
                if answer.accepted:
                    return None
                client.send(answer.raw)
                client.close()
                backend.close()
                return {"decision": "reject", "reason": "backend_logon_refused", "detail": "the backend sent NAK0"}
            if isinstance(answer, pesit.ProtocolError):
                client.close()
                backend.abort()
                return {"decision": "error", "reason": "backend_protocol", "detail": answer.message}
            await backend.wait_for_data(len(backend.held) + 1)
            if backend.got_eof or backend.closed.done():
                client.close()
                backend.abort()
                return {"decision": "error", "reason": "backend_protocol", "detail": "backend closed during LOGON"}

    def _proxy_header(self, version: str, conn: Connection, leg: Leg) -> bytes:
        if version == "none":
            return b""
        assert leg.transport is not None
        source = leg.transport.get_extra_info("peername")
        destination = leg.transport.get_extra_info("sockname")
        if version == "v1":
            return proxyproto.encode_v1(source[:2], destination[:2])
        return proxyproto.encode_v2(source[:2], destination[:2], conn.facts, partner=conn.partner, user=conn.user)

    def _rconnect(self, leg: Leg, session: Session, connect: Connect, diagnostic: int) -> None:
        framed = session.framed(connect)
        leg.send(pesit.frame(pesit.encode_rconnect(connect.src, diagnostic), framed))

    def _log_cft(self, conn: Connection, message: CftMessage) -> None:
        level = logging.ERROR if message.level == "error" else logging.WARNING
        logs.event("cft", level, conn=conn.id, listener=conn.listener, peer=conn.peer, partner=conn.partner,
                   msg_id=message.msg_id, msg=message.text)  # fmt: skip

    def _reject(self, conn: Connection, leg: Leg, counters: Counters, decision: Decision) -> dict[str, Any]:
        assert decision.reason is not None
        counters.rejected[decision.reason.value] += 1
        leg.close()  # flushes what was sent first (an RCONNECT), then close_notify
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
