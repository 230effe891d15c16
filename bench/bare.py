"""The floor: a bare TLS relay on sidecar's own engine, with nothing around it.

    python -m bench.bare --port P --backend-port B --pki DIR

What sidecar's per-connection path costs beyond its TLS engine is only visible against the same
engine doing the least a relay can do. This is that relay, and nothing else: uvloop, pyOpenSSL's
`Connection` on memory BIOs driven through the same cffi calls as `sidecar.tls.engine` (SSL_read /
SSL_write / BIO_read / BIO_write into process-wide scratch buffers, one 256 KiB read buffer shared
by every socket, memory BIOs renewed after the handshake, MODE_RELEASE_BUFFERS), the same context
settings as the benchmark's sidecar profile (TLS 1.2-1.3, mutual TLS required, CA names sent, no
session tickets, no session cache). It verifies the client's chain with OpenSSL alone (no verify
callback), dials the backend once the handshake is done, relays both ways with back-pressure and
half-close, and ends. No policy, no facts, no timeouts, no counters, no log, no admin.
One task per connection, for the backend dial only (`create_connection` is a coroutine).

Always sends no session ticket, like `sidecar run` (OPENSSL_CONF `NumTickets = 0` comes from
bench.peers.Bare; OP_NO_TICKET covers TLS 1.2).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import uvloop
from OpenSSL import SSL
from OpenSSL._util import ffi, lib

CHUNK = 256 * 1024
_read_buffer = bytearray(CHUNK)
_read_view = memoryview(_read_buffer)
_plain = ffi.new("char[]", CHUNK)
_cipher = ffi.new("char[]", CHUNK + 64 * 1024)
_WANT_READ = lib.SSL_ERROR_WANT_READ
_ZERO_RETURN = lib.SSL_ERROR_ZERO_RETURN


def server_context(pki: Path) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_max_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_options(
        SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION | SSL.OP_CIPHER_SERVER_PREFERENCE | SSL.OP_NO_TICKET
    )
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    # sidecar's default CIPHLIST, in its order (the load client picks AES-128-GCM either way)
    ctx.set_tls13_ciphersuites(b"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256")
    ctx.set_cipher_list(
        b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
        b"ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
    )
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    ctx.use_certificate_file(str(pki / "server.pem"))
    ctx.use_privatekey_file(str(pki / "server.key"))
    ctx.load_verify_locations(str(pki / "root.pem"))
    ctx.load_client_ca(str(pki / "root.pem").encode())
    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT)  # OpenSSL alone decides
    return ctx


class Client(asyncio.BufferedProtocol):
    """The TLS side: handshake, then decrypt towards the backend and encrypt what comes back."""

    def __init__(self, relay: BareRelay) -> None:
        self.relay = relay
        self.transport: Any = None
        self.backend: Backend | None = None
        self.pending: list[bytes] = []  # plaintext read before the backend was connected
        self.eof_pending = False
        self.established = False
        conn = SSL.Connection(relay.context, None)
        conn.set_accept_state()
        self.conn = conn
        self.ssl = conn._ssl

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return _read_view

    def buffer_updated(self, nbytes: int) -> None:
        lib.BIO_write(self.conn._into_ssl, ffi.from_buffer(_read_buffer), nbytes)
        if not self.established:
            result = lib.SSL_do_handshake(self.ssl)
            self.flush()
            if result != 1:
                if lib.SSL_get_error(self.ssl, result) != _WANT_READ:
                    self.transport.abort()
                return
            self.established = True
            self.relay.loop.create_task(self.dial())
            self.decrypt()
            self.renew_bios()
            return
        self.decrypt()

    def renew_bios(self) -> None:
        # What the handshake grew is given back, as sidecar does (only when nothing waits in them).
        if lib.BIO_get_mem_data(self.conn._into_ssl, ffi.NULL) or lib.BIO_get_mem_data(self.conn._from_ssl, ffi.NULL):
            return
        into, from_ = lib.BIO_new(lib.BIO_s_mem()), lib.BIO_new(lib.BIO_s_mem())
        lib.SSL_set_bio(self.ssl, into, from_)
        self.conn._into_ssl, self.conn._from_ssl = into, from_

    def decrypt(self) -> None:
        while True:
            n = lib.SSL_read(self.ssl, _plain, CHUNK)
            if n > 0:
                data = ffi.buffer(_plain, n)[:]
                if self.backend is not None:
                    self.backend.transport.write(data)
                else:
                    self.pending.append(data)
                continue
            error = lib.SSL_get_error(self.ssl, n)
            if error == _ZERO_RETURN:  # close_notify: the client sends no more
                self.client_eof()
            elif error != _WANT_READ:
                self.abort_both()
            break
        self.flush()

    def flush(self) -> None:
        n = lib.BIO_read(self.conn._from_ssl, _cipher, CHUNK + 64 * 1024)
        if n > 0 and not self.transport.is_closing():
            self.transport.write(ffi.buffer(_cipher, n)[:])

    def send(self, data: memoryview) -> None:
        if self.transport.is_closing():
            return
        while data:  # pyOpenSSL contexts allow partial writes: one record per call
            n = lib.SSL_write(self.ssl, ffi.from_buffer(data), len(data))
            if n <= 0:
                self.abort_both()
                return
            data = data[n:]
        self.flush()

    async def dial(self) -> None:
        try:
            _, backend = await self.relay.loop.create_connection(lambda: Backend(self), *self.relay.backend)
        except OSError:
            self.transport.abort()
            return
        self.backend = backend
        if self.transport.is_closing():
            backend.transport.close()
            return
        for data in self.pending:
            backend.transport.write(data)
        self.pending = []
        if self.eof_pending:
            backend.transport.write_eof()

    def client_eof(self) -> None:
        if self.backend is not None:
            if not self.backend.transport.is_closing():
                self.backend.transport.write_eof()
        else:
            self.eof_pending = True

    def eof_received(self) -> bool:
        self.client_eof()  # FIN without close_notify: the same for a bare relay
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.backend is not None and not self.backend.transport.is_closing():
            self.backend.transport.close()

    def pause_writing(self) -> None:
        if self.backend is not None:
            self.backend.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.backend is not None:
            self.backend.transport.resume_reading()

    def abort_both(self) -> None:
        self.transport.abort()
        if self.backend is not None:
            self.backend.transport.abort()


class Backend(asyncio.BufferedProtocol):
    def __init__(self, client: Client) -> None:
        self.client = client
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return _read_view

    def buffer_updated(self, nbytes: int) -> None:
        self.client.send(_read_view[:nbytes])

    def eof_received(self) -> None:
        client = self.client.transport
        if not client.is_closing():  # close_notify, then close the client (and so the backend)
            try:
                self.client.conn.shutdown()
            except SSL.Error:
                client.abort()
                return
            self.client.flush()
            client.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.client.transport.is_closing():
            self.client.transport.abort()

    def pause_writing(self) -> None:
        self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        self.client.transport.resume_reading()


class BareRelay:
    def __init__(self, context: SSL.Context, backend: tuple[str, int]) -> None:
        self.context = context
        self.backend = backend
        self.loop = asyncio.get_running_loop()


async def serve(port: int, backend_port: int, pki: Path) -> None:
    relay = BareRelay(server_context(pki), ("127.0.0.1", backend_port))
    server = await relay.loop.create_server(lambda: Client(relay), "127.0.0.1", port, backlog=1024, reuse_address=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.bare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend-port", type=int, required=True)
    parser.add_argument("--pki", type=Path, required=True)
    args = parser.parse_args(argv)
    uvloop.run(serve(args.port, args.backend_port, args.pki))
    return 0


if __name__ == "__main__":
    sys.exit(main())
