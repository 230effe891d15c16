"""Cipher suites: CFT CIPHLIST codes (decimal IANA numbers) <-> OpenSSL and IANA names.

The table is read from the TLS library itself, not written by hand: every two-byte code is looked up
with `SSL_CIPHER_find` in the OpenSSL that pyOpenSSL drives (the one bundled with `cryptography`),
which gives the OpenSSL name. IANA ("standard") names come from the system's libssl when it can be
loaded (the bundled library does not export `SSL_CIPHER_standard_name`); TLS 1.3 suites have the
same name in both conventions.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from functools import cache

from OpenSSL import SSL
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib


@dataclass(frozen=True, slots=True)
class CipherSuite:
    code: int  # IANA code point, as CFT writes it (decimal)
    openssl_name: str
    iana_name: str | None
    tls13: bool  # a TLS 1.3 suite (0x13xx), configured with set_tls13_ciphersuites
    usable: bool  # offered by this build at its default security level (no NULL, no GOST, no SCSV)
    before_tls12: bool = False  # usable in TLS 1.0/1.1 too (CBC with a SHA-1 MAC), per OpenSSL itself

    def __str__(self) -> str:
        return f"{self.code} ({self.iana_name or self.openssl_name})"


# Suites that CFT documents but that OpenSSL 3+ no longer ships: named here only to make the
# error message useful ("3DES is not available"), never to enable anything.
_REMOVED_FROM_OPENSSL = {
    4: "TLS_RSA_WITH_RC4_128_MD5",
    5: "TLS_RSA_WITH_RC4_128_SHA",
    9: "TLS_RSA_WITH_DES_CBC_SHA",
    10: "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
}


def _system_standard_names() -> dict[int, str]:
    """IANA names from the system libssl, or {} when it cannot be loaded."""
    path = ctypes.util.find_library("ssl")
    if path is None:
        return {}
    try:
        libssl = ctypes.CDLL(path)
        libssl.TLS_method.restype = ctypes.c_void_p
        libssl.SSL_CTX_new.restype = ctypes.c_void_p
        libssl.SSL_CTX_new.argtypes = [ctypes.c_void_p]
        libssl.SSL_new.restype = ctypes.c_void_p
        libssl.SSL_new.argtypes = [ctypes.c_void_p]
        libssl.SSL_CIPHER_find.restype = ctypes.c_void_p
        libssl.SSL_CIPHER_find.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        libssl.SSL_CIPHER_standard_name.restype = ctypes.c_char_p
        libssl.SSL_CIPHER_standard_name.argtypes = [ctypes.c_void_p]
        libssl.SSL_free.argtypes = [ctypes.c_void_p]
        libssl.SSL_CTX_free.argtypes = [ctypes.c_void_p]
        context = libssl.SSL_CTX_new(libssl.TLS_method())
        handle = libssl.SSL_new(context)
    except (OSError, AttributeError):
        return {}
    names: dict[int, str] = {}
    try:
        for code in range(0x10000):
            cipher = libssl.SSL_CIPHER_find(handle, code.to_bytes(2, "big"))
            if cipher:
                name = libssl.SSL_CIPHER_standard_name(cipher)
                if name:
                    names[code] = name.decode("ascii")
    finally:
        libssl.SSL_free(handle)
        libssl.SSL_CTX_free(context)
    return names


@dataclass(frozen=True, slots=True)
class CipherCatalog:
    by_code: dict[int, CipherSuite]
    by_name: dict[str, CipherSuite]  # upper-cased OpenSSL and IANA names

    def lookup(self, entry: int | str) -> CipherSuite | None:
        if isinstance(entry, int):
            return self.by_code.get(entry)
        return self.by_name.get(entry.strip().upper())

    def problem(self, entry: int | str) -> str:
        """Why `entry` cannot be used (empty string when it can)."""
        suite = self.lookup(entry)
        if suite is None:
            if isinstance(entry, int) and entry in _REMOVED_FROM_OPENSSL:
                return f"cipher suite {entry} ({_REMOVED_FROM_OPENSSL[entry]}) is not available in this OpenSSL build"
            if isinstance(entry, str) and entry.strip().upper() in _REMOVED_FROM_OPENSSL.values():
                return f"cipher suite {entry} is not available in this OpenSSL build"
            return f"unknown cipher suite {entry}"
        if not suite.usable:
            kind = "offers no encryption" if "NULL" in suite.openssl_name.upper() else "cannot be offered"
            return f"cipher suite {suite} {kind}: not available in this OpenSSL build's default security level"
        return ""


_BEFORE_TLS12 = frozenset({"SSLv3", "TLSv1.0", "TLSv1.1", "TLSv1"})


@cache
def catalog() -> CipherCatalog:
    probe = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
    ssl_handle = probe._ssl  # the pyOpenSSL object has no public cipher lookup
    # What this build offers by default: the default TLS 1.2 list widened to every
    # authenticated, encrypting suite, plus the TLS 1.3 suites it knows.
    offer_probe = SSL.Context(SSL.TLS_METHOD)
    offer_probe.set_cipher_list(b"ALL:!eNULL:!aNULL")
    offered = set(SSL.Connection(offer_probe, None).get_cipher_list())
    standard = _system_standard_names()
    by_code: dict[int, CipherSuite] = {}
    for code in range(0x10000):
        cipher = _lib.SSL_CIPHER_find(ssl_handle, code.to_bytes(2, "big"))
        if cipher == _ffi.NULL:
            continue
        name = _ffi.string(_lib.SSL_CIPHER_get_name(cipher)).decode("ascii")
        tls13 = code >> 8 == 0x13
        # The oldest protocol the suite belongs to, as OpenSSL names it: "SSLv3", "TLSv1.0", "TLSv1.2", ...
        since = _ffi.string(_lib.SSL_CIPHER_get_version(cipher)).decode("ascii")
        by_code[code] = CipherSuite(
            code=code,
            openssl_name=name,
            iana_name=standard.get(code) or (name if tls13 else None),
            tls13=tls13,
            usable=name in offered,
            before_tls12=since in _BEFORE_TLS12,
        )
    by_name: dict[str, CipherSuite] = {}
    for suite in by_code.values():
        by_name[suite.openssl_name.upper()] = suite
        if suite.iana_name:
            by_name.setdefault(suite.iana_name.upper(), suite)
    return CipherCatalog(by_code=by_code, by_name=by_name)


# A modern default for a profile without `ciphlist` (CFT makes CIPHLIST mandatory; we do not):
# the TLS 1.3 suites, then ECDHE with AEAD for ECDSA and RSA certificates.
DEFAULT_CIPHLIST: tuple[int, ...] = (4865, 4866, 4867, 49195, 49199, 49196, 49200, 52393, 52392)
