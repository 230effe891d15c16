"""Live policy (SPEC §8.3): the configuration reaches sessions that are already relaying.

Theory of operation
-------------------
A session is judged once, when it starts (`policy.verdict.judge`), on the facts it established: TLS
facts, peer address, PeSIT claim (`Connection.session`; outbound: `Connection.facts`). Managed file
transfers last hours, so with `live_recheck: true` the same pure function judges it again

* after every successful reload, by the new snapshot's policy for its listener (outbound: the new
  client profile's checks, only when they changed); a refusal closes it with `revoked_live`;
* when its time limit passes (`Verdict.time_limit`: the end of the deciding SSLAUTH ACCEPT's
  /EDATE//ETIME window, or the client certificate's notAfter, whichever comes first); a refusal
  then closes it with `expired_live`. A session's earliest limit is armed when it starts relaying,
  re-armed by each re-judgement, dropped when it ends (`detach`): nothing polls the connections.
  Sessions whose limit is the same instant — every session of one client certificate — share one
  `loop.call_at` timer (`_Expiry`), so a thousand sessions of one partner cost one timer, not a
  thousand (~0.6 KB each).

Which sessions. The reload re-judges sessions that are relaying. A session still in its handshake,
identification or backend dial when the swap happens takes its verdict on the snapshot it was
accepted under; it is caught when it starts relaying (`Connection.relaying` calls `started`): its
generation is older than the current one, so it is judged again there, synchronously, before the
relay joins the legs and before the bytes identification read are replayed to the backend.
Sessions of a listener (or outbound entry) that the reload removed keep running on the
configuration they started with, like the sessions of a listener being drained: nothing judges
them any more. A verdict still pending identification (a listener switched to `identify: pesit`
under a session that never sent us a CONNECT) cannot be completed and is kept.

Closing. The proxy's decision is recorded first (`Connection.ending`: the close line reports it
instead of the EOF the closing causes), then the legs are unjoined so that not one more byte is
relayed, then both are closed: the client gets TLS close_notify then FIN (after what was already
relayed to it), the backend FIN. No PeSIT ABORT is written: after the CONNECT the proxy does not
follow the FPDU stream, and an FPDU injected between two of the backend's would corrupt it. A
side that does not read its last bytes within `CLOSE_GRACE` seconds is aborted.

Cost. The re-judgement runs on the event loop in slices of at most `SLICE_SECONDS`, yielding
between them, so that relays keep flowing during a reload that re-judges thousands of sessions.
A session that starts relaying pays for a dictionary entry: its time limit is its verdict's, and
the timer is its certificate's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from . import logs
from .outcome import CloseReason, Outcome
from .policy.decision import Decision
from .policy.partners import CftMessage
from .policy.verdict import TimeLimit, judge, judge_server
from .proxy.connection import Connection
from .proxy.relay import Leg
from .snapshot import Snapshot

SLICE_SECONDS = 0.005  # longest run of re-judgements between two yields to the loop
CLOSE_GRACE = 5.0  # seconds a closed session's legs may take to flush before they are aborted


class LiveHost(Protocol):
    @property
    def snapshot(self) -> Snapshot: ...

    @property
    def connections(self) -> dict[int, Connection]: ...


def local_now() -> datetime:
    """The server's local time, as SSLAUTH windows are written in."""
    return datetime.now().astimezone()


@dataclass(frozen=True, slots=True)
class Rejudged:
    """What one re-judgement said: accepted with its next time limit, or refused and why."""

    refused: bool
    limit: TimeLimit | None = None
    detail: str | None = None  # the refusal: "<check>: <why>", for the close line
    rule: str | None = None
    messages: tuple[CftMessage, ...] = ()

    @staticmethod
    def refusal(decision: Decision, messages: tuple[CftMessage, ...] = ()) -> Rejudged:
        detail = f"{decision.reason}: {decision.detail}" if decision.reason else decision.detail
        return Rejudged(True, None, detail, decision.rule_ref, messages)


@dataclass(slots=True)
class _Expiry:
    """The sessions whose time limit is one instant, and the one timer that judges them then."""

    timer: asyncio.TimerHandle
    sessions: dict[int, Connection] = field(default_factory=dict)  # by Connection.id


@dataclass(slots=True)
class RecheckReport:
    rechecked: int = 0
    revoked: int = 0
    seconds: float = 0.0
    longest_slice: float = 0.0


class LivePolicy:
    """Re-judges live sessions for one Runtime; see the module docstring."""

    def __init__(self, host: LiveHost) -> None:
        self.host = host
        # The wall clock time limits are judged on; a test may shift it (the loop's timers still
        # run on the monotonic clock: a limit is converted to a delay when it is armed).
        self.clock: Callable[[], datetime] = local_now
        self._expiries: dict[datetime, _Expiry] = {}  # by instant (aware datetimes: equal instants, one key)

    # ---- a session's lifecycle ----------------------------------------------------------------
    def attach(self, conn: Connection) -> None:
        """A connection was accepted under the current snapshot."""
        conn.generation = self.host.snapshot.generation
        conn.on_relaying = self.started

    def detach(self, conn: Connection) -> None:
        """The connection ended: it no longer waits for its time limit."""
        self._disarm(conn)

    def started(self, conn: Connection) -> None:
        """The session was accepted and starts relaying now (called before the legs are joined)."""
        snapshot = self.host.snapshot
        if conn.generation == snapshot.generation:
            self._arm(conn, conn.time_limit)  # the verdict it was accepted with, taken on this snapshot
            return
        # A reload came between its accept and now: its verdict was taken on an older configuration.
        conn.generation = snapshot.generation
        judged = self._judge(conn, snapshot, self.clock())
        if judged is None:
            return
        if judged.refused:
            self._close(conn, CloseReason.REVOKED_LIVE, judged)
            return
        self._arm(conn, judged.limit)

    # ---- judging --------------------------------------------------------------------------------
    def _judge(self, conn: Connection, snapshot: Snapshot, now: datetime) -> Rejudged | None:
        """The session judged by `snapshot`; None when nothing judges it (entry removed, recheck off)."""
        if conn.direction == "in":
            plan = snapshot.listeners.get(conn.entry)
            if plan is None or not plan.listener.live_recheck or conn.session is None:
                return None
            verdict = judge(plan.policy, conn.session, now)
            if not verdict.decision.allowed:
                return Rejudged.refusal(verdict.decision, verdict.messages)
            return Rejudged(False, verdict.time_limit)
        outbound = snapshot.outbound.get(conn.entry)
        if outbound is None or not outbound.outbound.live_recheck or conn.facts is None:
            return None
        verdict = judge_server(outbound.profile.policy, conn.facts)
        return Rejudged(False) if verdict.decision.allowed else Rejudged.refusal(verdict.decision)

    async def recheck(self, old: Snapshot, new: Snapshot) -> RecheckReport:
        """After a reload swapped `new` in: judge every relaying session again, in slices."""
        report = RecheckReport()
        began = slice_began = time.perf_counter()
        now = self.clock()
        unchanged = _unchanged_listeners(old, new)
        for conn in list(self.host.connections.values()):
            if time.perf_counter() - slice_began >= SLICE_SECONDS:
                report.longest_slice = max(report.longest_slice, time.perf_counter() - slice_began)
                await asyncio.sleep(0)
                slice_began = time.perf_counter()
                now = self.clock()
            if not conn.relayed or conn.finished or conn.ending is not None:
                continue  # not relaying yet (`started` will catch it), or already ending
            if conn.generation == new.generation:
                continue  # started relaying during this re-judgement, judged by `new` already
            conn.generation = new.generation
            if conn.direction == "out" and not _client_checks_changed(old, new, conn.entry):
                continue
            if conn.direction == "in" and conn.entry in unchanged:
                continue  # the same policy gives the same verdict; its time limit stays armed
            try:
                judged = self._judge(conn, new, now)
            except Exception as exc:  # a bug judging one session must not stop the others, nor the reload
                logs.event("internal_error", logging.ERROR, conn=conn.id, error=f"recheck: {type(exc).__name__}: {exc}")
                continue
            if judged is None:
                self._disarm(conn)
                continue
            report.rechecked += 1
            if judged.refused:
                report.revoked += 1
                self._close(conn, CloseReason.REVOKED_LIVE, judged)
            elif conn.direction == "in":
                self._arm(conn, judged.limit)
        report.longest_slice = max(report.longest_slice, time.perf_counter() - slice_began)
        report.seconds = time.perf_counter() - began
        return report

    # ---- time limits ----------------------------------------------------------------------------
    def _arm(self, conn: Connection, limit: TimeLimit | None) -> None:
        self._disarm(conn)
        if limit is None:
            return
        at = limit.at
        if limit.kind == "sslauth":
            # An SSLAUTH end is a local wall-clock time: the zone's rules for that day give its
            # instant (a window ending after a daylight-saving change ends at the right hour).
            at = at.replace(tzinfo=None).astimezone()
        expiry = self._expiries.get(at)
        if expiry is None:
            # The connection's own loop: asyncio.get_running_loop() costs a getpid() per call on Python 3.11.
            loop = conn.client.loop if conn.client is not None else asyncio.get_running_loop()
            delay = max(0.0, (at - self.clock()).total_seconds())
            expiry = self._expiries[at] = _Expiry(loop.call_at(loop.time() + delay, self._limit_reached, at))
        expiry.sessions[conn.id] = conn
        conn.time_limit_at = at
        conn.time_limit_timer = expiry.timer

    def _disarm(self, conn: Connection) -> None:
        at = conn.time_limit_at
        if at is None:
            return
        conn.time_limit_at = conn.time_limit_timer = None
        expiry = self._expiries.get(at)
        if expiry is not None:
            expiry.sessions.pop(conn.id, None)
            if not expiry.sessions:  # the last session of that instant: its timer goes too
                expiry.timer.cancel()
                del self._expiries[at]

    def _limit_reached(self, at: datetime) -> None:
        expiry = self._expiries.pop(at, None)
        if expiry is None:
            return
        for conn in list(expiry.sessions.values()):  # a judgement may end or re-arm a session
            conn.time_limit_at = conn.time_limit_timer = None
            try:
                self._judge_at_limit(conn)
            except Exception as exc:  # a timer callback: say so in our own words, not the loop's
                error = f"time limit: {type(exc).__name__}: {exc}"
                logs.event("internal_error", logging.ERROR, conn=conn.id, error=error)

    def _judge_at_limit(self, conn: Connection) -> None:
        if conn.ending is not None or conn.id not in self.host.connections:
            return
        now = self.clock()
        session = conn.session
        identity = session.tls.verified_peer if session is not None and session.tls is not None else None
        if identity is not None and identity.not_after <= now:
            when = f"{identity.not_after:%Y-%m-%d %H:%M:%S} UTC"
            self._close(conn, CloseReason.EXPIRED_LIVE, Rejudged(True, detail=f"client certificate notAfter {when}"))
            return
        judged = self._judge(conn, self.host.snapshot, now)
        if judged is None:
            return
        if judged.refused:
            self._close(conn, CloseReason.EXPIRED_LIVE, judged)
            return
        self._arm(conn, judged.limit)  # early (the wall clock moved) or extended: wait again

    # ---- closing --------------------------------------------------------------------------------
    def _close(self, conn: Connection, reason: CloseReason, judged: Rejudged) -> None:
        self._disarm(conn)
        conn.ending = Outcome("reject", reason, judged.detail, judged.rule)
        for message in judged.messages:
            conn.log_cft(message)
        legs = [leg for leg in (conn.client, conn.backend) if leg is not None]
        for leg in legs:
            leg.peer = None  # unjoined: what either side sends from now on goes nowhere
        for leg in legs:
            leg.close()  # the client: close_notify, then FIN
        loop = asyncio.get_running_loop()
        for leg in legs:
            loop.call_later(CLOSE_GRACE, _abort_if_open, leg)


def _abort_if_open(leg: Leg) -> None:
    if leg.transport is not None and not leg.lost:
        leg.abort()


def _unchanged_listeners(old: Snapshot, new: Snapshot) -> frozenset[str]:
    """Listeners whose sessions the reload cannot judge differently: the same policy, still rechecked.

    The verdict is a pure function of the policy and the session's facts, so a reload that leaves
    a listener's policy equal (a new server certificate, another listener's change, timeouts)
    needs no re-judgement of its sessions. Compared once per listener, not per session.
    """
    same: set[str] = set()
    for listener_id, after in new.listeners.items():
        before = old.listeners.get(listener_id)
        rechecked = before is not None and before.listener.live_recheck and after.listener.live_recheck
        if rechecked and before is not None and before.policy == after.policy:
            same.add(listener_id)
    return frozenset(same)


def _client_checks_changed(old: Snapshot, new: Snapshot, entry: str) -> bool:
    """Outbound: are the server checks of this entry's client profile different in `new`?"""
    before, after = old.outbound.get(entry), new.outbound.get(entry)
    if after is None:
        return False
    return before is None or before.profile.policy != after.profile.policy
