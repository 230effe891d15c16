"""One connection's lifecycle, the same for inbound listeners and outbound (client mode) entries.

    accepted -> Connection.open, host.opened -> Acceptor.begin
             -> callbacks (a TLS handshake, a PeSIT CONNECT) and/or a task (`serve`: the
                backend dial; reading before a handshake)
             -> Connection.relay: the legs joined, no task; the relay's end comes from the sockets
             -> Connection.finish(outcome): the legs released, Connection.end (counters and the
                one `close` log line), host.closed

A connection has a task only while it waits on something it started (the backend dial) or reads
before its handshake (a balancer's PROXY header, plaintext sniffing): the handshake and a PeSIT
CONNECT are read by the leg's callbacks and a relayed session is driven by its sockets', so an idle
relayed session holds no task, no coroutine frame and no future, and a handshake resumes no
stack of coroutines.

Listeners see the process through `ConnectionHost`, a narrow interface (the current snapshot, the
stats, whether it is draining, the table of open connections, and "run this task"), not through
the Runtime: the proxy modules do not import the runtime.

`Connection.end` is the only place where an ended connection is counted and logged: the close line's
`reason` and the metric label are the same `CloseReason`, and no outcome can be logged without
being counted or the reverse. `Connection.finish` is the only caller, once per connection.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, Protocol, TypeVar

from .. import logs
from ..outcome import CloseReason, Outcome
from ..policy.partners import CftMessage
from ..policy.verdict import SessionFacts, TimeLimit
from ..snapshot import Snapshot
from ..stats import Counters, Stats
from ..tls.engine import TlsError
from ..tls.peer import PeerCert, TlsFacts, VerifyError
from .relay import Leg, Relay

_connection_ids = itertools.count(1)


class ConnectionHost(Protocol):
    """What a listener needs of the process that runs it."""

    @property
    def snapshot(self) -> Snapshot: ...

    @property
    def stats(self) -> Stats: ...

    @property
    def draining(self) -> bool: ...

    def opened(self, conn: Connection) -> None:
        """Accepted: the connection is live until `closed` (its table feeds /connections and the drain)."""
        ...

    def closed(self, conn: Connection) -> None: ...

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a connection's task (`serve`); the host cancels it when a drain runs out of time."""
        ...

    def backend_reachable(self, listener_id: str) -> bool:
        """False while probes say the listener's backend is down (`backend_check`)."""
        ...


@dataclass(slots=True, kw_only=True)
class Connection:
    """What is known about one live connection: read by `/connections`, the close line and stats."""

    id: int = field(default_factory=lambda: next(_connection_ids))  # unique in the process, both directions
    host: ConnectionHost
    direction: Literal["in", "out"]
    entry: str  # the listener id (inbound) or the outbound entry id
    peer: str  # "host:port" of the client (inbound) or of the local legacy program (outbound)
    peer_host: str
    counters: Counters  # the listener's or the outbound entry's
    # Behind a trusted load balancer (accept_proxy): `peer` is the client its PROXY header named, `via`
    # the balancer's own "host:port", `origin` the header's (client, destination) for the backend's header.
    via: str | None = None
    origin: tuple[tuple[str, int], tuple[str, int]] | None = None
    started: float = field(default_factory=time.monotonic)
    facts: TlsFacts | None = None
    # A handshake refused over the peer's certificate: what is known of it, for the close line.
    refused_cert: PeerCert | None = None
    refused_errors: tuple[VerifyError, ...] = ()
    session: SessionFacts | None = None  # what the verdict was taken on (inbound), to judge it again
    partner: str | None = None
    partner_counters: Counters | None = None
    user: str | None = None  # SSLAUTH /USER
    remote: str | None = None  # outbound: the partner address reached
    log_level: int | None = None  # of the close line, when not the usual (info if relayed, else warning)
    parm: str | None = None  # CFT PARM of the profile: free data for the operator's tools
    client: Leg | None = None  # the accepted leg
    backend: Leg | None = None  # the leg we dialled: backend (inbound) or remote partner (outbound)
    relayed: bool = False  # the destination was reached and the two legs joined
    finished: bool = False  # ended: its bytes are in its counters now, no longer live
    _down_base: int = 0  # bytes the proxy itself sent to the client before relaying (ACK0)
    # Live policy (`live.LivePolicy`): the configuration generation that last judged the session,
    # the hook told when it starts relaying, the timer of its time limit, and the ending the proxy
    # decided for it (revoked_live, expired_live), which its close line reports instead of the
    # EOF or reset that closing it caused.
    generation: int = 0
    time_limit: TimeLimit | None = None  # of the verdict that accepted it (inbound, `live_recheck` on)
    on_relaying: Callable[[Connection], None] | None = None
    time_limit_at: datetime | None = None  # the instant of its armed time limit (live.LivePolicy)
    time_limit_timer: asyncio.TimerHandle | None = None  # shared by the sessions of that instant
    ending: Outcome | None = None

    @classmethod
    def accepted(
        cls, host: ConnectionHost, leg: Leg, direction: Literal["in", "out"], entry: str, counters: Counters
    ) -> Connection:
        peer, peer_host = _peer_text(leg)
        return cls(
            host=host, direction=direction, entry=entry, peer=peer, peer_host=peer_host, counters=counters, client=leg
        )

    def open(self) -> None:
        # Counted at accept, synchronously, so that a burst of accepts cannot overshoot max_connections.
        self.counters.active += 1

    def identified(self, partner_id: str, counters: Counters) -> None:
        """The session belongs to this partner from now on (accepted or refused by its checks)."""
        self.partner = partner_id
        self.partner_counters = counters
        counters.active += 1

    def relaying(self) -> None:
        self.relayed = True
        self._down_base = self.client.bytes_out if self.client is not None else 0
        self.counters.accepted += 1
        if self.partner_counters is not None:
            self.partner_counters.accepted += 1
        if self.on_relaying is not None:
            self.on_relaying(self)

    def relay(self, backend: Leg, idle_timeout: float, replay_to_server: bytes = b"") -> None:
        """Join the client leg to `backend` and relay until both sockets are gone; no task waits."""
        assert self.client is not None
        self.backend = backend
        self.relaying()
        Relay(self.client, backend, idle_timeout, self._relay_ended).start(replay_to_server=replay_to_server)

    def _relay_ended(self, relay: Relay) -> None:
        try:
            self.finish(relay_outcome(relay))
        except Exception as exc:  # a socket callback: a bug closes this connection, nothing else
            self.fail(exc)

    def finish(self, outcome: Outcome) -> None:
        """The connection is over: release its legs, count and log it, leave the host's table. Once."""
        if self.finished:
            return
        for leg in (self.client, self.backend):
            if leg is not None:
                leg.release()
        try:
            self.end(outcome)
        finally:
            self.host.closed(self)

    def fail(self, exc: Exception) -> None:
        """A bug while handling this connection: logged, this connection closed, the process carries on."""
        logs.event("internal_error", logging.ERROR, conn=self.id, error=f"{type(exc).__name__}: {exc}")
        self.abort()
        self.finish(_INTERNAL_ERROR)  # nothing more if the bug was in `finish` itself: it ran once

    def shut_down(self) -> None:
        """The drain ran out of time: close it now; its close line says `shutdown`."""
        if self.ending is None:
            self.ending = _SHUTDOWN
        self.abort()

    def handshake_failed(self, error: TlsError) -> Outcome:
        self.refused_cert = error.peer
        self.refused_errors = error.verify_errors
        return Outcome.handshake_failed(error.kind, str(error))

    def transferred(self) -> tuple[int, int]:
        """(up, down): plaintext relayed client -> destination and back, so far.

        Only a relayed session counts: a refused one's bytes never reached the backend, and what
        the proxy itself answered (ACK0, RCONNECT) is not the backend's. Read at scrape time for
        live sessions, so that byte counters grow while a long transfer runs and the data path
        does no extra work.
        """
        client = self.client
        if not self.relayed or client is None:
            return 0, 0
        return client.bytes_in, client.bytes_out - self._down_base

    def end(self, outcome: Outcome) -> None:
        """Count the connection as ended and write its one close line."""
        self.on_relaying = None
        if self.ending is not None:
            outcome = self.ending
        client = self.client
        bytes_up, bytes_down = self.transferred()
        self.finished = True
        for counters in (self.counters, self.partner_counters):
            if counters is None:
                continue
            counters.active -= 1
            counters.bytes_up += bytes_up
            counters.bytes_down += bytes_down
            counters.record(outcome)
        level = self.log_level or (logging.INFO if outcome.decision == "accept" else logging.WARNING)
        if not logs.enabled(level):
            return  # counted; the line itself is not wanted at this level, so it is not even built
        facts = self.facts
        cert = facts.peer if facts is not None else self.refused_cert
        errors = facts.verify_errors if facts is not None else self.refused_errors
        inbound = self.direction == "in"
        logs.event(
            "close",
            level,
            conn=self.id,
            direction=None if inbound else "out",
            listener=self.entry if inbound else None,
            outbound=None if inbound else self.entry,
            peer=self.peer,
            via=self.via,
            remote=self.remote,
            partner=self.partner,
            user=self.user,
            subject=logs.dn(cert.subject) if cert else None,
            issuer=logs.dn(cert.issuer) if cert else None,
            serial=cert.serial_hex if cert else None,
            verified=facts.verified if facts else None,
            verify_error="; ".join(str(error) for error in errors) or None,
            tls_version=facts.tls_version if facts else None,
            cipher=facts.cipher_name if facts else None,
            bytes_up=bytes_up,
            bytes_down=bytes_down,
            duration_s=round(time.monotonic() - self.started, 4),
            decision=outcome.decision,
            reason=outcome.reason.value,
            detail=outcome.detail or None,
            rule=outcome.rule,
            unclean_eof=(client.unclean_eof or None) if client is not None and outcome.decision == "accept" else None,
            parm=self.parm,
        )

    def log_cft(self, message: CftMessage) -> None:
        level = logging.ERROR if message.level == "error" else logging.WARNING
        logs.event("cft", level, conn=self.id, listener=self.entry, peer=self.peer, partner=self.partner,
                   msg_id=message.msg_id, msg=message.text)  # fmt: skip

    def describe(self) -> dict[str, Any]:
        facts = self.facts
        cert = facts.peer if facts else None
        return {
            "id": self.id,
            "direction": self.direction,
            "listener": self.entry if self.direction == "in" else f"out:{self.entry}",
            "peer": self.peer,
            "via": self.via,
            "partner": self.partner,
            "user": self.user,
            "subject": cert.subject if cert else None,
            "verified": facts.verified if facts else None,
            "tls_version": facts.tls_version if facts else None,
            "cipher": facts.cipher_name if facts else None,
            "bytes_up": self.transferred()[0],
            "bytes_down": self.transferred()[1],
            "age_s": round(time.monotonic() - self.started, 3),
            # Live policy: in how many seconds a time limit (notAfter, an SSLAUTH window) closes it.
            "closes_in_s": round(max(0.0, timer.when() - asyncio.get_running_loop().time()), 1)
            if (timer := self.time_limit_timer) is not None
            else None,
        }

    def abort(self) -> None:
        if self.client is not None:
            self.client.abort()
        if self.backend is not None:
            self.backend.abort()


PlanT = TypeVar("PlanT")


class Acceptor(Generic[PlanT]):
    """Accepts connections for one listener or outbound entry and starts each one's lifecycle.

    Subclasses say which counters a connection feeds and what its work is (`begin`); the limit,
    the draining refusal and the spawning are the same in both directions.
    """

    direction: Literal["in", "out"]

    def __init__(self, host: ConnectionHost, entry_id: str, plan: PlanT) -> None:
        self.host = host
        self.entry_id = entry_id
        self.plan = plan  # replaced by the runtime when a reload changes the entry
        self.loop = asyncio.get_running_loop()

    def make_leg(self) -> Leg:
        """The protocol factory handed to `create_server`."""
        leg = Leg("client" if self.direction == "in" else "local", self.loop)
        leg.on_connection_made = self._accepted
        return leg

    def counters(self, stats: Stats) -> Counters:
        raise NotImplementedError

    def begin(self, conn: Connection, leg: Leg, plan: PlanT, snapshot: Snapshot) -> None:
        """Start the accepted connection's work: callbacks on its leg, or a task (`host.spawn(serve(…))`)."""
        raise NotImplementedError

    def _accepted(self, leg: Leg) -> None:
        host = self.host
        snapshot = host.snapshot
        counters = self.counters(host.stats)
        if counters.active >= snapshot.config.limits.max_connections or host.draining:
            refuse_at_accept(host, leg, self.direction, self.entry_id, counters)
            return
        conn = Connection.accepted(host, leg, self.direction, self.entry_id, counters)
        conn.open()
        host.opened(conn)
        try:
            self.begin(conn, leg, self.plan, snapshot)
        except Exception as exc:  # a socket callback: a bug closes this connection, nothing else
            conn.fail(exc)


def refuse_at_accept(
    host: ConnectionHost, leg: Leg, direction: Literal["in", "out"], entry: str, counters: Counters
) -> None:
    """Close a connection at once, before reading a byte: over `max_connections`, or draining."""
    conn = Connection.accepted(host, leg, direction, entry, counters)
    leg.abort()
    conn.open()
    reason = CloseReason.SHUTTING_DOWN if host.draining else CloseReason.MAX_CONNECTIONS
    conn.end(Outcome("reject", reason))


_SHUTDOWN = Outcome("closed", CloseReason.SHUTDOWN)
_INTERNAL_ERROR = Outcome("closed", CloseReason.INTERNAL_ERROR)


async def serve(conn: Connection, work: Coroutine[Any, Any, Outcome | None]) -> None:
    """A connection's task: run its work, then finish it with the outcome — or, for None, leave it
    to go on without a task (relaying, or reading a PeSIT CONNECT by the leg's callbacks).

    Cancelled (a drain out of time), it closes both sides and says `shutdown`; a bug is logged and
    closes only this connection: the process carries on.
    """
    try:
        outcome = await work
    except asyncio.CancelledError:
        conn.abort()
        conn.finish(_SHUTDOWN)
        raise
    except Exception as exc:
        conn.fail(exc)
        return
    if outcome is not None:
        conn.finish(outcome)


def relay_outcome(relay: Relay) -> Outcome:
    """How a relayed session ended."""
    error = relay.client.error or relay.server.error
    if relay.timed_out:
        return Outcome("accept", CloseReason.IDLE_TIMEOUT, error)
    return Outcome("accept", CloseReason.RESET if error else CloseReason.EOF, error)


def _peer_text(leg: Leg) -> tuple[str, str]:
    """("host:port", "host") of the socket's peer."""
    assert leg.transport is not None
    address = leg.transport.get_extra_info("peername")
    if isinstance(address, tuple) and len(address) >= 2:
        host = str(address[0])
        return address_text(host, address[1]), host
    return str(address), str(address)


def address_text(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
