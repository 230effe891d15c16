"""Legs and the bidirectional relay.

Theory of operation
-------------------
A `Leg` is one socket: an `asyncio.BufferedProtocol`, optionally with a `TlsEndpoint` between the
socket and the plaintext. Until it is joined to a peer, a leg *holds* the plaintext it reads (the
inbound handler looks at it: PeSIT identification, plaintext detection) and wakes whoever waits.
Once `Relay.start` joins two legs, each leg passes what it reads straight to the other leg's
`send`, inside the transport callback: no task, no queue, no copy beyond the one out of the read
buffer.

Reads go into one 256 KiB buffer shared by every leg of the process (callbacks run one at a time
and the data is consumed before the callback returns), so an idle connection costs no buffer.

Back-pressure: when a leg's transport has too much to write (`pause_writing`), the other leg stops
reading until `resume_writing`. Nothing is ever queued in our own code.

EOF and close. Each direction ends on its own (a real half-close):
* the client sends close_notify, or (unclean) FIN without it → the backend gets FIN (`write_eof`);
* the backend sends FIN → the client gets close_notify, then FIN, and may go on sending.
When both directions have ended, or either side resets, or the idle timer fires, both
transports are closed (`close()` flushes what is buffered first; `abort()` for resets and
timeouts). Once both sockets are gone the relay calls its `on_end`: no task waits for a relayed
session, its end comes from the legs' `connection_lost`.

Before relaying nothing waits on a future unless somebody asks to: a leg tells its handshake's
end to `on_handshake` (the inbound path judges the session right there, in the callback), and
`handshake_done()` / `wait_for_data()` make a future only for a task that awaits them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from ..tls.engine import READ_CHUNK, TlsEndpoint, TlsError
from ..tls.peer import TlsFacts
from .proxyproto import looks_like_proxy

_read_buffer = bytearray(READ_CHUNK)
_read_view = memoryview(_read_buffer)
HOLD_LIMIT = 64 * 1024  # plaintext held before relaying; beyond it the leg stops reading
TLS_RECORD_HANDSHAKE = 0x16
PROXY_UNTRUSTED_KIND = "proxy_untrusted"  # TlsError kind: the first bytes were a PROXY header, not TLS


class Leg(asyncio.BufferedProtocol):
    """One side of a proxied connection (client, backend or remote partner)."""

    # Slots: two legs per connection, alive for the whole transfer (~0.1 KB less each than a dict).
    __slots__ = (
        "_first_bytes_seen",
        "_reading_paused",
        "_waiter",
        "bytes_in",
        "bytes_out",
        "eof_sent",
        "error",
        "got_eof",
        "handshake_failed",
        "handshake_result",
        "held",
        "last_read",
        "loop",
        "lost",
        "name",
        "on_connection_made",
        "on_data",
        "on_handshake",
        "on_lost",
        "peer",
        "tls",
        "transport",
        "unclean_eof",
    )

    def __init__(self, name: str, loop: asyncio.AbstractEventLoop) -> None:
        self.name = name
        # The loop is handed in, not looked up: asyncio.get_running_loop() costs a getpid() system
        # call per lookup on Python 3.11, and a connection would make a dozen of them.
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.tls: TlsEndpoint | None = None
        self.peer: Leg | None = None
        self.held = bytearray()  # plaintext read before relaying
        self.got_eof = False  # the remote side will send no more plaintext
        self.eof_sent = False
        self.unclean_eof = False  # TLS: TCP FIN without close_notify
        self.error: str | None = None  # why the leg failed (TLS error, reset)
        self.handshake_failed = False
        self.bytes_in = 0  # plaintext bytes received from this leg's socket
        self.bytes_out = 0  # plaintext bytes sent to it
        self.lost = False  # connection_lost: the socket is gone
        # The handshake's end, kept until released: facts, or why it failed.
        self.handshake_result: TlsFacts | TlsError | None = None
        self.on_handshake: Callable[[TlsFacts | TlsError], None] | None = None  # told once, when it ends
        self.on_lost: Callable[[Leg], None] | None = None  # told after connection_lost (the relay's end)
        self.on_data: Callable[[], None] | None = None  # before relaying: told when plaintext, EOF or loss came
        self.on_connection_made: Callable[[Leg], None] | None = None
        self.last_read = 0.0  # loop time of the last read while relaying (the relay's idle timer)
        self._waiter: asyncio.Future[None] | None = None
        self._first_bytes_seen = False
        self._reading_paused = False

    # ---- asyncio protocol callbacks ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without inheriting from it.
        self.transport = cast(asyncio.Transport, transport)
        if self.on_connection_made is not None:
            self.on_connection_made(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _read_view

    def buffer_updated(self, nbytes: int) -> None:
        peer = self.peer
        if peer is None:
            self._on_bytes(_read_view[:nbytes])
            return
        # Relaying (joined, past the handshake): every transfer's hot path, in as few calls as it
        # takes — one chunk of a 1-byte round trip and one of a bulk transfer cost the same calls.
        self.last_read = self.loop.time()
        tls = self.tls
        if tls is None:
            self.bytes_in += nbytes
            # A TLS peer encrypts the bytes before `send` returns: no copy needed. A plaintext
            # transport may keep a view: it gets its own copy.
            peer.send(_read_view[:nbytes] if peer.tls is not None else bytes(_read_view[:nbytes]))
            return
        try:
            result = tls.read(_read_view[:nbytes])
        except TlsError as exc:
            self._flush_tls()  # the alert that tells the peer why
            self.error = f"TLS error: {exc}"
            self._abort_both()
            return
        records = tls.take_output()  # key updates, alerts: rare, and then sent before the data
        if records and self.transport is not None and not self.transport.is_closing():
            self.transport.write(records)
        for chunk in result.chunks:
            self.bytes_in += len(chunk)
            peer.send(chunk)
        if result.eof:
            self._on_eof()

    def _on_bytes(self, data: memoryview) -> None:
        """Bytes read before relaying (or sniffed ones): the handshake, then plaintext to hold."""
        if self.tls is None:
            self._hold(bytes(data))  # a copy: `data` is the shared read buffer
            return
        if not self._first_bytes_seen:
            self._first_bytes_seen = True
            if data[0] != TLS_RECORD_HANDSHAKE and not self.tls.handshake_done:
                if self.tls.server_side and looks_like_proxy(data):  # not from a trusted balancer (accept_proxy)
                    self._fail_handshake(TlsError("a PROXY protocol header", PROXY_UNTRUSTED_KIND))
                else:
                    self._fail_handshake(TlsError("not a TLS handshake (plaintext on a TLS port)", "plaintext"))
                return
        facts: TlsFacts | None = None  # set when this read completed the handshake
        try:
            self.tls.receive(data)
            if not self.tls.handshake_done:
                done = self.tls.do_handshake()
                self._flush_tls()
                if not done:
                    return
                facts = self.tls.facts()
            result = self.tls.read()
        except TlsError as exc:
            self._flush_tls()  # the alert that tells the peer why
            if not self.tls.handshake_done:
                self._fail_handshake(exc)
                return
            self.error = f"TLS error: {exc}"
            self._abort_both()
            if facts is not None:  # the handshake itself succeeded: its end is told all the same
                self._handshake_ended(facts)
            return
        self._flush_tls()  # session tickets, key updates, alerts
        if facts is not None:
            self.tls.release_handshake_buffers()
        for chunk in result.chunks:
            self._hold(chunk)
        if result.eof:
            self._on_eof()
        if facts is not None:
            # Told last, as a task waiting for the handshake would have seen it: with what came
            # along with the client's Finished already held (the first bytes, even an EOF).
            self._handshake_ended(facts)

    def eof_received(self) -> bool:
        if self.tls is not None and not self.tls.handshake_done:
            self._fail_handshake(TlsError("connection closed during the handshake", "reset"))
            return False
        if self.tls is not None and not self.tls.close_notify_received:
            self.unclean_eof = True  # truncation is possible: logged, then treated as EOF
        self._on_eof()
        return True  # keep the socket open for writing: the other direction may still flow

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.error is None:
            self.error = f"{type(exc).__name__}: {exc}"
        self.lost = True
        if self.tls is not None and not self.tls.handshake_done:
            self._fail_handshake(TlsError("connection lost during the handshake", "reset"))
        self._wake()
        self.end_peer()
        if self.on_lost is not None:
            self.on_lost(self)

    def end_peer(self) -> None:
        """This leg's socket is gone: close the joined one after a clean end, abort it after a reset."""
        peer = self.peer
        if peer is not None and not (self.got_eof and self.eof_sent):
            peer.abort()  # a reset on one side ends the other: no half-delivered stream looks complete
        elif peer is not None:
            peer.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None and not self.peer._reading_paused:
            self.peer.transport.resume_reading()

    @property
    def received_nothing(self) -> bool:
        """Not one byte came from the socket: a load balancer's health check, a port scan."""
        return not self._first_bytes_seen if self.tls is not None else self.bytes_in == 0 and not self.held

    # ---- TLS ---------------------------------------------------------------------------------
    def start_tls(self, tls: TlsEndpoint, initial: bytes = b"") -> None:
        """Run TLS on this leg from now on; `initial` = ciphertext already read (sniffed bytes).

        The handshake's end goes to `on_handshake` (set it first) or waits for `handshake_done()`.
        """
        self.tls = tls
        if not tls.handshake_done and not initial and not tls.server_side:
            tls.do_handshake()  # client side speaks first
            self._flush_tls()
        if initial:
            self._on_bytes(memoryview(initial))

    async def handshake_done(self) -> TlsFacts:
        """The handshake's facts once it has ended; raises its TlsError if it failed."""
        result = self.handshake_result
        if result is None:
            waiter: asyncio.Future[TlsFacts | TlsError] = self.loop.create_future()

            def tell(ended: TlsFacts | TlsError) -> None:
                if not waiter.done():  # the waiting task may have been cancelled meanwhile
                    waiter.set_result(ended)

            self.on_handshake = tell
            result = await waiter
        if isinstance(result, TlsError):
            raise result
        return result

    def _handshake_ended(self, result: TlsFacts | TlsError) -> None:
        self.handshake_result = result
        callback = self.on_handshake
        if callback is not None:
            self.on_handshake = None
            callback(result)

    def _flush_tls(self) -> None:
        assert self.tls is not None
        output = self.tls.take_output()
        if output and self.transport is not None and not self.transport.is_closing():
            self.transport.write(output)

    def _fail_handshake(self, exc: TlsError) -> None:
        if self.handshake_failed:
            return
        self.handshake_failed = True
        self.abort()
        self._handshake_ended(exc)

    # ---- data ---------------------------------------------------------------------------------
    def _hold(self, chunk: bytes | memoryview) -> None:
        """Plaintext read before relaying: kept for the inbound handler, then for the relay to pass on."""
        self.bytes_in += len(chunk)
        self.held.extend(chunk)
        if len(self.held) > HOLD_LIMIT and self.transport is not None:
            self.pause_reading()
        self._wake()

    def send(self, data: bytes | bytearray | memoryview) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.bytes_out += len(data)
        tls = self.tls
        if tls is None:
            transport.write(data)
            return
        try:
            records = tls.encrypt(data)
        except TlsError as exc:
            self.error = f"TLS error: {exc}"
            self._abort_both()
            return
        if records:
            transport.write(records)

    def send_eof(self) -> None:
        """Our direction towards this leg's socket is finished."""
        if self.eof_sent:
            return
        self.eof_sent = True
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.tls is not None:
            self.tls.close_notify()
            self._flush_tls()
        if transport.can_write_eof():
            transport.write_eof()
        self._close_if_done()

    def _on_eof(self) -> None:
        if self.got_eof:
            return
        self.got_eof = True
        if self.peer is not None:
            self.peer.send_eof()
        self._wake()
        self._close_if_done()

    def _close_if_done(self) -> None:
        peer = self.peer
        if peer is None:
            return
        if self.got_eof and self.eof_sent and peer.got_eof and peer.eof_sent:
            self.close()
            peer.close()

    # ---- control ------------------------------------------------------------------------------
    def pause_reading(self) -> None:
        if self.transport is not None and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self._reading_paused:
            self._reading_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    def close(self) -> None:
        """Close after flushing what is buffered; with TLS, send close_notify first."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.tls is not None and self.tls.handshake_done:
            self.tls.close_notify()
            self._flush_tls()
        transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _abort_both(self) -> None:
        self.abort()
        if self.peer is not None:
            self.peer.abort()

    def release(self) -> None:
        """The connection's handler is done with this leg: drop what ties it into reference cycles.

        `peer`, `on_lost` and `on_data` join the legs to the relay or the handler; a failed handshake's
        TlsError has a traceback that holds this leg. Released, a finished connection (its SSL
        object and buffers included) is freed at once by reference counting instead of waiting for
        the cyclic garbage collector. Counters stay readable.
        """
        self.handshake_result = None
        self.on_handshake = None
        self.peer = None
        self.on_lost = None
        self.on_data = None
        self.on_connection_made = None

    # ---- waiting (used before relaying) ------------------------------------------------------
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.on_data is not None:
            self.on_data()

    async def wait_for_data(self, minimum: int = 1) -> None:
        """Wait until `minimum` bytes are held, EOF, or the connection is gone."""
        while len(self.held) < minimum and not self.got_eof and not self.lost:
            self.resume_reading()
            self._waiter = self.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def take_held(self) -> bytes:
        data = bytes(self.held)
        self.held.clear()
        return data


class Relay:
    """Joins two legs; calls `on_end` once both sockets are gone."""

    __slots__ = ("_loop", "_timer", "client", "idle_timeout", "on_end", "server", "timed_out")

    def __init__(self, client: Leg, server: Leg, idle_timeout: float, on_end: Callable[[Relay], None]) -> None:
        self.client = client
        self.server = server
        self.idle_timeout = idle_timeout
        self.timed_out = False
        self.on_end: Callable[[Relay], None] | None = on_end
        self._loop = client.loop
        self._timer: asyncio.TimerHandle | None = None

    def start(self, replay_to_server: bytes = b"", replay_to_client: bytes = b"") -> None:
        client, server = self.client, self.server
        client.peer, server.peer = server, client
        client.last_read = server.last_read = self._loop.time()
        if replay_to_server:
            server.send(replay_to_server)
        if replay_to_client:
            client.send(replay_to_client)
        # What each side sent (or closed) before the join now flows like everything after it.
        for leg in (client, server):
            if leg.held:
                leg.peer.send(leg.take_held())  # type: ignore[union-attr]
            leg.resume_reading()
            if leg.got_eof and leg.peer is not None:
                leg.peer.send_eof()
        for leg in (client, server):
            leg._close_if_done()
        self._timer = self._loop.call_at(client.last_read + self.idle_timeout, self._check_idle)
        client.on_lost = server.on_lost = self._leg_lost
        for leg in (client, server):
            if leg.lost:  # gone before the join (the client left during the dial): end the other one too
                leg.end_peer()
        self._leg_lost(client)

    def _check_idle(self) -> None:
        deadline = max(self.client.last_read, self.server.last_read) + self.idle_timeout
        if self._loop.time() < deadline:
            self._timer = self._loop.call_at(deadline, self._check_idle)
            return
        self.timed_out = True
        self.client.abort()
        self.server.abort()

    def _leg_lost(self, leg: Leg) -> None:
        if not (self.client.lost and self.server.lost):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        on_end, self.on_end = self.on_end, None
        if on_end is not None:
            on_end(self)
