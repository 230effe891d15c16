"""Inbound path: accept -> TLS handshake -> verdict (identify) -> dial backend -> relay.

The decisions are not taken here: `policy.verdict` judges the session from what this module read
(the handshake facts, the PeSIT CONNECT), and this module does what the verdict says — log its CFT
messages, answer its PeSIT diagnostic, close or dial. Nothing is sent to the backend, and the backend
is not even dialled, before the verdict accepted the session. The connection's lifecycle (counting,
the one close line) is `proxy.connection`'s.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from .. import logs, pesit
from ..outcome import CloseReason, Outcome
from ..pesit import Connect
from ..policy.decision import Decision, Reason
from ..policy.partners import CftMessage
from ..policy.verdict import PesitClaim, SessionFacts, Verdict, judge, judge_listener
from ..snapshot import ListenerPlan, Snapshot
from ..stats import Counters, Stats
from ..tls.engine import TlsEndpoint, TlsError
from ..tls.peer import TlsFacts
from . import proxyproto
from .connection import Acceptor, Connection, address_text, serve
from .relay import PROXY_UNTRUSTED_KIND, TLS_RECORD_HANDSHAKE, Leg


@dataclass(slots=True)
class Session:
    """What identification read, to be replayed to the backend verbatim."""

    replay: bytes = b""  # LOGON (if any) + CONNECT + what followed, exactly as received
    logon_length: int = 0  # bytes of `replay` that are the LOGON (framed or not)
    connect: Connect | None = None  # the CONNECT, once read: a refusal answers it with an RCONNECT

    def rconnect(self, diagnostic: int) -> bytes:
        """The RCONNECT answering the CONNECT; framed when the CONNECT came with its NSDU prefix."""
        assert self.connect is not None
        start = self.logon_length
        framed = self.replay[start + 2 : start + 4] == self.replay[start : start + 2]
        return pesit.frame(pesit.encode_rconnect(self.connect.src, diagnostic), framed)


class _Identification:
    """`identify: pesit` on one connection: the optional LOGON (answered ACK0 here) and the CONNECT,
    read by the leg's callbacks as they arrive, within what is left of the handshake timeout; then
    the verdict, and what it says. Nothing reaches the backend before."""

    __slots__ = ("conn", "first", "handshake_by", "leg", "listener", "now", "plan", "reader", "session", "snapshot",
                 "timer")  # fmt: skip

    def __init__(
        self, listener: InboundListener, conn: Connection, leg: Leg, plan: ListenerPlan, snapshot: Snapshot,
        first: Verdict, now: datetime, handshake_by: float,
    ) -> None:  # fmt: skip
        self.listener, self.conn, self.leg, self.plan, self.snapshot = listener, conn, leg, plan, snapshot
        self.first, self.now, self.handshake_by = first, now, handshake_by
        self.reader = pesit.ConnectReader()
        self.session = Session()
        self.timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.timer = self.listener.loop.call_at(self.handshake_by, self._timed_out)
        self.leg.on_data = self._on_data
        self._on_data()  # what came with the end of the handshake

    def _stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.leg.on_data = None

    def _timed_out(self) -> None:
        self._stop()
        self.leg.abort()
        self.conn.finish(Outcome("reject", CloseReason.IDENTIFICATION_TIMEOUT, "no identification in time"))

    def _on_data(self) -> None:
        try:
            received = self._read()
            if received is None:
                self.leg.resume_reading()  # held data was taken: below the hold limit again
                return
            self._stop()
            if isinstance(received, Outcome):
                self.conn.finish(received)
                return
            conn = self.conn
            conn.session = SessionFacts(conn.facts, conn.peer_host,
                                        PesitClaim(received.connect.requester, received.connect.password))  # fmt: skip
            verdict = judge(self.plan.policy, conn.session, self.now, listener=self.first)
            self.listener.go_on(
                conn, self.listener.act(conn, self.leg, self.plan, self.snapshot, verdict, self.session)
            )
        except Exception as exc:  # a socket callback: a bug closes this connection, nothing else
            self._stop()
            self.conn.fail(exc)

    def _read(self) -> pesit.ConnectReceived | Outcome | None:
        """What was held so far, fed to the reader: the CONNECT, a refusal, or None (more to come)."""
        leg, session = self.leg, self.session
        result = self.reader.feed(leg.take_held())
        while True:
            if isinstance(result, pesit.LogonReceived):
                leg.send(result.reply)
                session.logon_length = len(result.logon.raw) + (pesit.NSDU_PREFIX_LENGTH if result.framed else 0)
                result = self.reader.feed(b"")  # the CONNECT may already be here
                continue
            if isinstance(result, pesit.ConnectReceived):
                session.replay = result.consumed + result.extra
                session.connect = result.connect
                return result
            if isinstance(result, pesit.ProtocolError):
                if result.reply is not None:
                    leg.send(result.reply)
                self.conn.log_cft(CftMessage("CFTH20E", f"CFTH20E Invalid CONNECT FPDU {result.message}", "error"))
                leg.close()
                return Outcome.refused(Decision.deny(Reason.PROTOCOL, result.message))
            if leg.got_eof or leg.lost:
                leg.close()
                return Outcome.refused(Decision.deny(Reason.PROTOCOL, "connection closed before the PeSIT CONNECT"))
            return None


class BackendDown(OSError):
    """The backend is known to be down: not dialled at all."""


class Deadline:
    """The time limit of a connection's task while it waits (PROXY header and handshake, PeSIT
    identification, the backend dial): when it passes, the task is cancelled.

    What `asyncio.timeout()` does, for one task and one deadline, with one timer handle and none of
    the scope's running-loop lookups (each a getpid() system call on Python 3.11). `timed_out()`,
    asked when the task sees CancelledError, tells this deadline's cancellation from anybody
    else's (a shutdown), as asyncio.timeout does with `uncancel()`.
    """

    __slots__ = ("_handle", "_loop", "_task", "expired")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        task = asyncio.current_task(loop)
        assert task is not None
        self._task = task
        self._handle: asyncio.TimerHandle | None = None
        self.expired = False

    def arm_at(self, when: float) -> None:
        """Expire at `when`, on the loop's clock."""
        self.disarm()
        self._handle = self._loop.call_at(when, self._expire)

    def disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _expire(self) -> None:
        self._handle = None
        self.expired = True
        self._task.cancel()

    def timed_out(self) -> bool:
        """After CancelledError: this deadline, and nothing else, cancelled the task."""
        if not self.expired:
            return False
        self.expired = False
        return self._task.uncancel() == 0


class InboundListener(Acceptor[ListenerPlan]):
    """Accepts connections for one listener and runs each through the inbound path.

    The usual connection (a TLS listener, `plaintext: refuse`, no balancer in front) has no task
    until its handshake is done: the leg's callbacks drive the handshake and tell `_handshaken`,
    which judges the session there and then (after reading its PeSIT CONNECT by callbacks too,
    `_Identification`); a task starts only to dial the backend, and ends when relaying starts.
    A balancer's PROXY header, `plaintext: allow` and plaintext listeners read before the
    handshake and run in a task from the accept (`_run`). Both paths go through the same steps
    after the handshake (`_after_handshake`, `act`).
    """

    direction = "in"

    def counters(self, stats: Stats) -> Counters:
        return stats.listener(self.entry_id)

    def begin(self, conn: Connection, leg: Leg, plan: ListenerPlan, snapshot: Snapshot) -> None:
        # accept_proxy: empty by default, and then this costs one truth test per connection.
        behind_balancer = bool(plan.balancers) and _from_balancer(conn.peer_host, plan.balancers)
        # One time limit for everything before the backend is dialled: the balancer's PROXY
        # header, TLS, then identification.
        handshake_by = self.loop.time() + snapshot.config.limits.handshake_timeout
        if plan.profile is not None:
            conn.parm = plan.profile.profile.parm
            if plan.listener.plaintext == "refuse" and not behind_balancer:
                assert plan.profile.context is not None
                timer = self.loop.call_at(handshake_by, self._handshake_timed_out, conn)
                leg.on_handshake = partial(self._handshaken, conn, leg, plan, snapshot, handshake_by, timer)
                leg.start_tls(TlsEndpoint(plan.profile.context, server_side=True))
                return
        self.host.spawn(serve(conn, self._run(conn, leg, plan, snapshot, behind_balancer, handshake_by)))

    def _handshake_timed_out(self, conn: Connection) -> None:
        leg = conn.client
        assert leg is not None
        leg.on_handshake = None
        leg.abort()
        conn.finish(Outcome.handshake_failed("timeout", "no handshake in time"))

    def _handshaken(
        self,
        conn: Connection,
        leg: Leg,
        plan: ListenerPlan,
        snapshot: Snapshot,
        handshake_by: float,
        timer: asyncio.TimerHandle,
        result: TlsFacts | TlsError,
    ) -> None:
        """The leg's handshake ended: judge the session now, then finish it or start its task."""
        timer.cancel()
        try:
            if isinstance(result, TlsError):
                conn.finish(self._handshake_error(conn, leg, result, snapshot))
                return
            self.go_on(conn, self._after_handshake(conn, leg, plan, snapshot, result, handshake_by))
        except Exception as exc:  # a socket callback: a bug closes this connection, nothing else
            conn.fail(exc)

    def go_on(self, conn: Connection, next_step: Outcome | Coroutine[Any, Any, Outcome | None] | None) -> None:
        """From a callback: finish with an outcome, or start the task for the work that follows."""
        if isinstance(next_step, Outcome):
            conn.finish(next_step)
        elif next_step is not None:
            self.host.spawn(serve(conn, next_step))

    async def _run(
        self, conn: Connection, leg: Leg, plan: ListenerPlan, snapshot: Snapshot, behind_balancer: bool,
        handshake_by: float,
    ) -> Outcome | None:  # fmt: skip
        """The connections that read before (or instead of) a handshake, in a task from the accept."""
        reading_header = behind_balancer
        deadline = Deadline(self.loop)
        deadline.arm_at(handshake_by)
        try:
            if behind_balancer:
                refused = await self._read_balancer_header(conn, leg, plan, snapshot)
                if refused is not None:
                    return refused
                reading_header = False
            facts = await self._establish(leg, plan)
        except asyncio.CancelledError:
            if not deadline.timed_out():
                raise
            leg.abort()
            if reading_header:
                return Outcome("reject", CloseReason.PROXY_MISSING, "no PROXY header in time")
            return Outcome.handshake_failed("timeout", "no handshake in time")
        except TlsError as exc:
            return self._handshake_error(conn, leg, exc, snapshot)
        finally:
            deadline.disarm()
        next_step = self._after_handshake(conn, leg, plan, snapshot, facts, handshake_by)
        return next_step if next_step is None or isinstance(next_step, Outcome) else await next_step

    def _handshake_error(self, conn: Connection, leg: Leg, exc: TlsError, snapshot: Snapshot) -> Outcome:
        leg.abort()
        if exc.kind == "reset" and leg.received_nothing:
            conn.log_level = logs.LEVELS[snapshot.config.logging.empty_connections]
            return Outcome("closed", CloseReason.EMPTY, "connected and closed without sending a byte")
        if exc.kind == PROXY_UNTRUSTED_KIND:
            return Outcome("reject", CloseReason.PROXY_UNTRUSTED, "a PROXY header from an address not in accept_proxy")
        return conn.handshake_failed(exc)

    def _after_handshake(
        self, conn: Connection, leg: Leg, plan: ListenerPlan, snapshot: Snapshot, facts: TlsFacts | None,
        handshake_by: float,
    ) -> Outcome | Coroutine[Any, Any, Outcome | None] | None:  # fmt: skip
        """Judge the session on its handshake (None: a plaintext session).

        Returns the outcome to finish with, the work its task goes on with (the backend dial), or
        None when the listener identifies by PeSIT: the CONNECT is then read by the leg's callbacks
        (`_Identification`), which go on from there.
        """
        conn.facts = facts
        if facts is not None:
            conn.counters.handshake_seconds.observe(time.monotonic() - conn.started)
            if facts.peer is not None and not facts.verified:
                conn.counters.unverified += 1
                logs.event(
                    "unverified", logging.WARNING, conn=conn.id, listener=conn.entry, peer=conn.peer,
                    subject=logs.dn(facts.peer.subject), errors=[str(e) for e in facts.verify_errors],
                )  # fmt: skip
        now = datetime.now().astimezone()
        first = judge_listener(plan.policy, facts, now)
        if first.pending_identification:
            _Identification(self, conn, leg, plan, snapshot, first, now, handshake_by).start()
            return None
        conn.session = SessionFacts(facts, conn.peer_host)
        return self.act(conn, leg, plan, snapshot, judge(plan.policy, conn.session, now, listener=first), Session())

    def act(
        self, conn: Connection, leg: Leg, plan: ListenerPlan, snapshot: Snapshot, verdict: Verdict, session: Session
    ) -> Outcome | Coroutine[Any, Any, Outcome | None]:
        """Do what the verdict says: log its CFT messages, then refuse (answering its PeSIT
        diagnostic) or return the backend dial.

        The verdict (its steps and their texts) is not kept for the whole transfer: an idle
        connection would carry it for hours. What the session goes on with is on `conn`.
        """
        if verdict.partner is not None:
            conn.identified(verdict.partner.id, self.host.stats.partner(verdict.partner.id))
        conn.user = verdict.user
        if plan.listener.live_recheck:
            conn.time_limit = verdict.time_limit
        for message in verdict.messages:
            conn.log_cft(message)
        if not verdict.decision.allowed:
            if verdict.pesit_diagnostic is not None and session.connect is not None:
                leg.send(session.rconnect(verdict.pesit_diagnostic))
            leg.close()  # flushes what was sent first (an RCONNECT), then close_notify
            return Outcome.refused(verdict.decision)
        header = _proxy_header(plan.listener.proxy_protocol, leg, conn, verdict)
        return self._forward(conn, leg, plan, header, session, snapshot)

    async def _read_balancer_header(
        self, conn: Connection, leg: Leg, plan: ListenerPlan, snapshot: Snapshot
    ) -> Outcome | None:
        """Read a trusted balancer's PROXY header; its client becomes this connection's peer.

        Whatever follows the header is the client's first bytes: with `plaintext: refuse` TLS starts
        on them at once (they are its ClientHello); otherwise they are held for the usual detection.
        """
        while True:
            result = proxyproto.parse(leg.held)
            if isinstance(result, proxyproto.ProxyHeader):
                break
            if isinstance(result, proxyproto.ProxyError):
                leg.abort()
                return Outcome("reject", CloseReason.PROXY_MISSING, result.message)
            if leg.got_eof or leg.lost:
                leg.abort()
                if leg.received_nothing:  # the balancer's own TCP health check, or a port scan
                    conn.log_level = logs.LEVELS[snapshot.config.logging.empty_connections]
                    return Outcome("closed", CloseReason.EMPTY, "connected and closed without sending a byte")
                return Outcome("reject", CloseReason.PROXY_MISSING, "closed before a complete PROXY header")
            await leg.wait_for_data(len(leg.held) + 1)
        del leg.held[: result.consumed]
        leg.bytes_in -= result.consumed  # read before TLS, as plaintext: the balancer's, not the client's
        if result.source is not None and result.destination is not None:
            # LOCAL (the balancer's own health check), UNSPEC and UNKNOWN keep the real endpoints.
            conn.via = conn.peer
            conn.peer, conn.peer_host = address_text(*result.source), result.source[0]
            conn.origin = (result.source, result.destination)
        if plan.profile is not None and plan.listener.plaintext == "refuse":
            assert plan.profile.context is not None
            client_hello = leg.take_held()
            leg.bytes_in -= len(client_hello)  # ciphertext, not payload
            leg.start_tls(TlsEndpoint(plan.profile.context, server_side=True), initial=client_hello)
        return None

    async def _establish(self, leg: Leg, plan: ListenerPlan) -> TlsFacts | None:
        """The TLS handshake, or None for a plaintext session (`plaintext: allow`, first byte not 0x16)."""
        if plan.profile is None:
            return None
        if leg.tls is None:  # plaintext: allow — the first byte decides, nothing is lost
            await leg.wait_for_data(1)
            if not leg.held:
                raise TlsError("connection closed before any byte", "reset")
            if leg.held[0] != TLS_RECORD_HANDSHAKE:
                await _refuse_proxy_signature(leg)
                return None
            assert plan.profile.context is not None
            leg.start_tls(TlsEndpoint(plan.profile.context, server_side=True), initial=leg.take_held())
        return await leg.handshake_done()

    async def _forward(
        self, conn: Connection, leg: Leg, plan: ListenerPlan, header: bytes, session: Session, snapshot: Snapshot
    ) -> Outcome | None:
        """Dial the backend, give it the PROXY header and what identification read, then relay (None)."""
        limits = snapshot.config.limits
        listener = plan.listener
        address = listener.backend
        assert address is not None
        try:
            if not self.host.backend_reachable(self.entry_id):
                raise BackendDown("down since the last probe (backend_check)")
            deadline = Deadline(self.loop)
            deadline.arm_at(self.loop.time() + limits.connect_timeout)
            try:
                _, backend = await self.loop.create_connection(
                    lambda: Leg("backend", self.loop), address.host, address.port
                )
                conn.backend = backend
                if header:
                    backend.send(header)
                if session.logon_length:
                    refused = await _replay_logon(leg, backend, session)
                    if refused is not None:
                        return refused
            except asyncio.CancelledError:
                if not deadline.timed_out():
                    raise
                raise TimeoutError from None
            finally:
                deadline.disarm()
        except (OSError, TimeoutError) as exc:
            if conn.backend is not None:
                conn.backend.abort()
            if session.connect is not None:
                # PeSIT: the partner is told "not attached to SAP" instead of seeing a bare close.
                leg.send(session.rconnect(pesit.DIAG_NOT_ATTACHED))
            leg.close()
            timed_out = isinstance(exc, TimeoutError)
            why = "timeout" if timed_out else (exc.strerror if isinstance(exc, OSError) and exc.strerror else exc)
            reason = CloseReason.BACKEND_TIMEOUT if timed_out else CloseReason.BACKEND_UNREACHABLE
            return Outcome("error", reason, f"{address}: {why}")
        conn.relay(backend, limits.idle_timeout, replay_to_server=session.replay[session.logon_length :])
        return None


async def _replay_logon(client: Leg, backend: Leg, session: Session) -> Outcome | None:
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
            return Outcome("reject", CloseReason.BACKEND_LOGON_REFUSED, "the backend sent NAK0")
        if isinstance(answer, pesit.ProtocolError):
            client.close()
            backend.abort()
            return Outcome("error", CloseReason.BACKEND_PROTOCOL, answer.message)
        await backend.wait_for_data(len(backend.held) + 1)
        if backend.got_eof or backend.lost:
            client.close()
            backend.abort()
            return Outcome("error", CloseReason.BACKEND_PROTOCOL, "backend closed during LOGON")


def _from_balancer(host: str, balancers: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d
    return any(address in network for network in balancers)


async def _refuse_proxy_signature(leg: Leg) -> None:
    """On a plaintext session, raise (as the TLS leg does) when the first bytes are a PROXY signature.

    Waits only while what arrived is a strict beginning of a signature (a rare first byte: P or CR).
    """
    while proxyproto.looks_like_proxy(leg.held):
        wanted = len(proxyproto.V1_PREFIX) if leg.held[0] == proxyproto.V1_PREFIX[0] else len(proxyproto.V2_SIGNATURE)
        if len(leg.held) >= wanted or leg.got_eof or leg.lost:
            raise TlsError("a PROXY protocol header", PROXY_UNTRUSTED_KIND)
        await leg.wait_for_data(len(leg.held) + 1)


def _proxy_header(version: str, leg: Leg, conn: Connection, verdict: Verdict) -> bytes:
    if version == "none":
        return b""
    assert leg.transport is not None
    if conn.origin is not None:  # behind a trusted balancer: the client it named, and where it connected
        source, destination = conn.origin
    else:
        source = leg.transport.get_extra_info("peername")
        destination = leg.transport.get_extra_info("sockname")
    if version == "v1":
        return proxyproto.encode_v1(source[:2], destination[:2])
    return proxyproto.encode_v2(
        source[:2], destination[:2], conn.facts, identity=verdict.identity, partner=conn.partner, user=conn.user
    )
