"""TLS over memory BIOs: pyOpenSSL's `Connection(ctx, None)` fed by whatever transport owns the socket.

The endpoint knows nothing of sockets or asyncio: ciphertext goes in with `receive`, out with
`take_output`; plaintext comes out of `read` and goes in with `encrypt`. `proxy.relay` drives it
from uvloop transports.

Hot path. pyOpenSSL's `recv`/`bio_read` allocate a fresh buffer of the requested size per call and
signal "nothing more" by raising `WantReadError`; on small messages that glue costs more than the
cryptography. So the data path calls `SSL_read`, `SSL_write`, `BIO_read` and `BIO_write` through
the same cffi binding pyOpenSSL uses, into process-wide scratch buffers, and looks at the return
value instead of catching an exception. Small results are copied out of the scratch buffer; a large
one (bulk transfer) is the scratch buffer itself, handed to the caller and replaced, which saves a
copy of every byte. Errors still go through pyOpenSSL (`_raise_ssl_error`) so they
keep its exception types and messages. The handshake steps call `SSL_do_handshake` the same way
(a step that needs more bytes is the usual case, not an exception); the facts of the finished
handshake come through pyOpenSSL's public API.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from OpenSSL import SSL, crypto
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib

from .ciphers import catalog
from .peer import PeerCert, TlsFacts, VerifyError

# 256 KiB per socket read: on loopback and LAN the syscalls, not the bytes, are most of a bulk
# transfer's cost; a quarter as many reads and sends as with 64 KiB measured 13-16 % less proxy
# CPU per GB both ways. Process-wide buffers, so an idle connection pays nothing for the size.
READ_CHUNK = 256 * 1024
_OUTPUT_CHUNK = READ_CHUNK + 64 * 1024  # one read's plaintext as records: 16 KiB each + headers and tags
# One pair of scratch buffers for the whole process: the event loop runs one callback at a time,
# and every use below either copies out of its buffer or gives the buffer away before returning.
_allocate = _ffi.new_allocator(should_clear_after_alloc=False)  # every byte is written before it is read
# Below this size copying a result out of a scratch buffer is cheaper than a fresh buffer; above it
# the scratch buffer itself is handed over (it becomes the caller's) and a new one takes its place.
HANDOVER_MIN = 64 * 1024


class _Scratch:
    """A process-wide buffer that `take` either copies out of or gives away."""

    __slots__ = ("buffer", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.buffer = _allocate("char[]", size)

    def take(self, length: int) -> bytes | memoryview:
        # The callers on the hot path copy small results themselves: `_ffi.buffer(buffer, n)[:]`.
        if length < HANDOVER_MIN:
            copied: bytes = _ffi.buffer(self.buffer, length)[:]
            return copied
        given = self.buffer
        self.buffer = _allocate("char[]", self.size)
        # Nobody writes into `given` again: a transport may keep a view of it as long as it likes.
        return memoryview(_ffi.buffer(given, length))


_plaintext = _Scratch(READ_CHUNK)
_ciphertext = _Scratch(_OUTPUT_CHUNK)

_WANT_READ = _lib.SSL_ERROR_WANT_READ
_ZERO_RETURN = _lib.SSL_ERROR_ZERO_RETURN
_RECEIVED_SHUTDOWN = _lib.SSL_RECEIVED_SHUTDOWN


class TlsError(Exception):
    """The TLS layer failed: handshake refused, bad record, protocol violation."""

    # The handshake failure kinds counted in stats: `verify` (the peer's certificate was refused),
    # `protocol` (anything else TLS said no to), `plaintext` (not TLS at all), `reset` (the peer
    # went away mid-handshake); `timeout` is decided by the caller's deadline.
    def __init__(
        self,
        message: str,
        kind: str = "protocol",
        *,
        peer: PeerCert | None = None,
        verify_errors: tuple[VerifyError, ...] = (),
    ) -> None:
        super().__init__(message)
        self.kind = kind
        # What is known of a refused certificate, for the refusal's log line: the certificate
        # itself when the error was found on it (depth 0), and every verification error.
        self.peer = peer
        self.verify_errors = verify_errors


class _VerifyRecord:
    """Where the profile's verify callback reports (the SSL connection's app data).

    A separate object, not a method of the endpoint: the SSL connection holds it, and a bound
    method would tie the endpoint into a reference cycle.
    """

    __slots__ = ("certificate_requested", "errors", "leaf")

    def __init__(self) -> None:
        self.errors: list[VerifyError] = []
        self.leaf: bytes | None = None  # DER of the peer certificate, when an error was found on it
        # Client side, only for a profile that asks (verify: enforced): did a CertificateRequest arrive?
        self.certificate_requested: bool | None = None

    def __call__(self, error: VerifyError, leaf: bytes | None) -> None:
        self.errors.append(error)
        if leaf is not None and self.leaf is None:
            self.leaf = leaf


@dataclass(slots=True)
class ReadResult:
    chunks: list[bytes | memoryview]  # each one the caller's to keep
    eof: bool  # close_notify received: the peer will send no more


class TlsEndpoint:
    __slots__ = (
        "_conn",
        "_from",
        "_into",
        "_server",
        "_ssl",
        "_verify",
        "close_notify_sent",
        "handshake_done",
        "verify_errors",
    )

    def __init__(self, context: SSL.Context, *, server_side: bool, server_hostname: str | None = None) -> None:
        self._conn = SSL.Connection(context, None)
        self._ssl = self._conn._ssl
        self._into = self._conn._into_ssl
        self._from = self._conn._from_ssl
        self._server = server_side
        self._verify = _VerifyRecord()
        self.verify_errors = self._verify.errors
        self._conn.set_app_data(self._verify)  # read by the profile's verify (and info) callbacks
        self.handshake_done = False
        self.close_notify_sent = False
        if server_side:
            self._conn.set_accept_state()
        else:
            self._conn.set_connect_state()
            if server_hostname:
                self._conn.set_tlsext_host_name(server_hostname.encode("idna"))

    # ---- ciphertext side -------------------------------------------------------------------
    def receive(self, data: bytes | bytearray | memoryview) -> None:
        """Ciphertext from the network."""
        if _lib.BIO_write(self._into, _ffi.from_buffer(data), len(data)) != len(data):
            raise TlsError("cannot buffer incoming TLS data")

    def take_output(self) -> bytes | memoryview:
        """Ciphertext to send to the network (b"" when there is none)."""
        n = _lib.BIO_read(self._from, _ciphertext.buffer, _OUTPUT_CHUNK)
        if n <= 0:
            return b""
        if n < HANDOVER_MIN:
            copied: bytes = _ffi.buffer(_ciphertext.buffer, n)[:]  # `take`'s copy, without the call
            return copied
        if n < _OUTPUT_CHUNK:
            return _ciphertext.take(n)
        # More than one buffer's worth (rare): joined, so copied anyway; the buffer stays ours.
        parts = [_ffi.buffer(_ciphertext.buffer, n)[:]]
        while (n := _lib.BIO_read(self._from, _ciphertext.buffer, _OUTPUT_CHUNK)) > 0:
            parts.append(_ffi.buffer(_ciphertext.buffer, n)[:])
        return b"".join(parts)

    # ---- handshake -------------------------------------------------------------------------
    def do_handshake(self) -> bool:
        """Advance the handshake with what was received; True once it is complete."""
        if self.handshake_done:
            return True
        result = _lib.SSL_do_handshake(self._ssl)
        if result == 1:
            self.handshake_done = True
            return True
        if _lib.SSL_get_error(self._ssl, result) == _WANT_READ:
            return False  # the usual case, twice per handshake: no exception raised and caught for it
        try:
            self._conn._raise_ssl_error(self._ssl, result)
        except SSL.WantReadError:
            return False
        except SSL.Error as exc:
            message = _describe(exc)
            # A missing client certificate under verify: required is a verification failure too.
            refused_peer = bool(self.verify_errors) or "did not return a certificate" in message
            if not refused_peer:
                raise TlsError(message, "protocol") from None
            leaf = self._verify.leaf
            raise TlsError(
                message,
                "verify",
                peer=PeerCert.cached(leaf) if leaf is not None else None,
                verify_errors=tuple(self.verify_errors),
            ) from None
        raise TlsError(f"TLS handshake failed (SSL error {_lib.SSL_get_error(self._ssl, result)})")

    def facts(self) -> TlsFacts:
        """The handshake's outcome as one value. Call once, after `do_handshake` returned True."""
        cipher_name = self._conn.get_cipher_name() or ""
        suite = catalog().lookup(cipher_name)
        # DER straight from OpenSSL's X509, parsed through the cache; no cryptography object per handshake.
        x509_cert = self._conn.get_peer_certificate()
        peer = PeerCert.cached(crypto.dump_certificate(crypto.FILETYPE_ASN1, x509_cert)) if x509_cert else None
        chain_length = self._verified_chain_length() if peer is not None and not self.verify_errors else 0
        return TlsFacts(
            tls_version=self._conn.get_protocol_version_name(),
            cipher_name=cipher_name,
            cipher_code=suite.code if suite else -1,
            peer=peer,
            verified=peer is not None and chain_length > 0 and not self.verify_errors,
            verify_errors=tuple(self.verify_errors),
            chain_length=chain_length,
            client_cert_requested=self._verify.certificate_requested,
        )

    def release_handshake_buffers(self) -> None:
        """Give back what the handshake grew: both memory BIOs, if both are empty.

        A memory BIO keeps the largest buffer it ever held; after the handshake that is several KB
        of certificates and key shares per connection, kept for as long as it stays open (5 KB of
        a TLS 1.3 connection's 40 measured). Fresh BIOs start small again. Nothing is lost: this
        only happens when no ciphertext waits in either direction.
        """
        if _lib.BIO_get_mem_data(self._into, _ffi.NULL) or _lib.BIO_get_mem_data(self._from, _ffi.NULL):
            return
        into, from_ = _lib.BIO_new(_lib.BIO_s_mem()), _lib.BIO_new(_lib.BIO_s_mem())
        if into == _ffi.NULL or from_ == _ffi.NULL:  # out of memory: keep the old ones
            for bio in (into, from_):
                if bio != _ffi.NULL:
                    _lib.BIO_free(bio)
            return
        _lib.SSL_set_bio(self._ssl, into, from_)  # the SSL object owns and frees the old pair
        # pyOpenSSL's Connection remembers its BIOs too; keep it pointing at live ones.
        self._conn._into_ssl = self._into = into
        self._conn._from_ssl = self._from = from_

    def _verified_chain_length(self) -> int:
        """Certificates in the chain OpenSSL verified (anchor included); 0 when it verified none.

        Counted on OpenSSL's own stack: converting each certificate, as `get_verified_chain` does,
        would cost more than the count is worth.
        """
        chain = _lib.SSL_get0_verified_chain(self._ssl)
        return 0 if chain == _ffi.NULL else int(_lib.sk_X509_num(chain))

    # ---- plaintext side --------------------------------------------------------------------
    def read(self, received: memoryview | None = None) -> ReadResult:
        """All plaintext that the received ciphertext decrypts to; `received` = ciphertext just
        read from the network, fed first (what `receive` does, in the same call).

        `SSL_read` returns one TLS record (at most 16 KiB) per call; the records of one socket read
        are decrypted side by side into the read buffer and leave as one chunk, so the other leg
        makes one `send()` for them instead of one per record.
        """
        if received is not None:  # `receive`, inlined: this is every TLS read's path while relaying
            length = len(received)
            if _lib.BIO_write(self._into, _ffi.from_buffer(received), length) != length:
                raise TlsError("cannot buffer incoming TLS data")
        chunks: list[bytes | memoryview] = []
        filled = 0
        while True:
            n = _lib.SSL_read(self._ssl, _plaintext.buffer + filled, READ_CHUNK - filled)
            if n > 0:
                filled += n
                if filled == READ_CHUNK:
                    chunks.append(_plaintext.take(filled))
                    filled = 0
                continue
            if filled:
                # `take`'s copy, without the call, for the usual small read
                chunks.append(
                    _ffi.buffer(_plaintext.buffer, filled)[:] if filled < HANDOVER_MIN else _plaintext.take(filled)
                )
            error = _lib.SSL_get_error(self._ssl, n)
            if error == _WANT_READ:
                return ReadResult(chunks, False)
            if error == _ZERO_RETURN:
                return ReadResult(chunks, True)
            try:
                self._conn._raise_ssl_error(self._ssl, n)
            except SSL.Error as exc:
                raise TlsError(_describe(exc)) from None
            raise TlsError(f"TLS read failed (SSL error {error})")

    def encrypt(self, data: bytes | bytearray | memoryview) -> bytes | memoryview:
        """The TLS records for this plaintext (with any output pending before it), to send."""
        length = len(data)
        # One SSL_write for a relayed chunk up to a record's size (16 KiB), the usual case;
        # pyOpenSSL's partial-writes mode writes a record per call, so more goes on in the loop.
        written = _lib.SSL_write(self._ssl, _ffi.from_buffer(data), length) if length else 0
        if written != length:
            self._write_rest(memoryview(data), written)
        return self.take_output()

    def _write_rest(self, view: memoryview, written: int) -> None:
        while True:
            if written <= 0:
                try:
                    self._conn._raise_ssl_error(self._ssl, written)
                except SSL.Error as exc:
                    raise TlsError(_describe(exc)) from None
                raise TlsError("TLS write failed")
            view = view[written:]
            if not view:
                return
            written = _lib.SSL_write(self._ssl, _ffi.from_buffer(view), len(view))

    def close_notify(self) -> None:
        """Send our close_notify (our direction is finished); the peer may still send."""
        if self.close_notify_sent or not self.handshake_done:
            return
        self.close_notify_sent = True
        # If this fails the connection is failing anyway; closing the socket is all that is left.
        with contextlib.suppress(SSL.Error):
            self._conn.shutdown()

    @property
    def server_side(self) -> bool:
        return self._server

    @property
    def close_notify_received(self) -> bool:
        return bool(_lib.SSL_get_shutdown(self._ssl) & _RECEIVED_SHUTDOWN)


def _describe(exc: SSL.Error) -> str:
    """A short text from pyOpenSSL's error list: `[('SSL routines', '', 'tlsv1 alert unknown ca')]`."""
    reasons: list[str] = []
    args = exc.args[0] if exc.args else None
    if isinstance(args, list):
        for item in args:
            if isinstance(item, tuple) and item:
                reasons.append(str(item[-1]))
    elif args is not None:
        reasons.append(str(args[1] if isinstance(args, tuple) and len(args) > 1 else args))
    return "; ".join(reason for reason in reasons if reason) or type(exc).__name__
