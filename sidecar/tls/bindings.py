"""The private parts of pyOpenSSL and cryptography that the TLS engine uses, listed once and checked at start.

The engine (`engine`, `ciphers`, `profiles`) calls OpenSSL through the cffi binding that pyOpenSSL
itself uses (`OpenSSL._util.lib` / `.ffi`, which is cryptography's compiled `_openssl` module) and
reaches into pyOpenSSL's `Connection` for its `SSL*`, its memory BIOs and its error translation,
and into its `Context` for the `SSL_CTX*` (the verify callback is registered on it directly).
None of that is public API: a cryptography or pyOpenSSL release may drop or rename any of it
without notice. pyproject.toml bounds both majors; this list is the check for everything else
(a minor release, a distribution's own build, a `pip install -U` that ignored the bounds):
`sidecar run` and `sidecar check` call `missing_bindings()` before anything else and refuse to
start, naming what is missing and the installed versions, rather than fail on the first handshake
while `/readyz` says 200.

`tests/unit/test_bindings.py` scans `sidecar/tls/*.py` and fails when the code uses a binding this
list does not name, so the list cannot fall behind the code.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .. import __version__

# Where the binding lives: `from OpenSSL._util import ffi, lib`.
BINDING_MODULE = "OpenSSL._util"

# OpenSSL functions and constants reached as `lib.NAME`.
LIB: tuple[str, ...] = (
    # engine: the data path and the handshake steps, on pyOpenSSL's SSL* and memory BIOs
    "BIO_free",
    "BIO_get_mem_data",
    "BIO_new",
    "BIO_read",
    "BIO_s_mem",
    "BIO_write",
    "SSL_ERROR_WANT_READ",
    "SSL_ERROR_ZERO_RETURN",
    "SSL_RECEIVED_SHUTDOWN",
    "SSL_do_handshake",
    "SSL_get0_verified_chain",
    "SSL_get_error",
    "SSL_get_shutdown",
    "SSL_read",
    "SSL_set_bio",
    "SSL_write",
    "sk_X509_num",
    # ciphers: the cipher table read from the library
    "SSL_CIPHER_find",
    "SSL_CIPHER_get_name",
    "SSL_CIPHER_get_version",
    # profiles: the verify callback, registered as OpenSSL's own; its error text and refused certificate
    "SSL_CTX_set_verify",
    "SSL_get_ex_data_X509_STORE_CTX_idx",
    "X509_STORE_CTX_get_current_cert",
    "X509_STORE_CTX_get_error",
    "X509_STORE_CTX_get_error_depth",
    "X509_STORE_CTX_get_ex_data",
    "X509_STORE_CTX_set_error",
    "X509_V_OK",
    "X509_verify_cert_error_string",
    "i2d_X509_bio",
)

# cffi helpers reached as `ffi.NAME`.
FFI: tuple[str, ...] = ("NULL", "buffer", "callback", "from_buffer", "new", "new_allocator", "string")

# Private attributes of `OpenSSL.SSL.Connection` (checked on a real one); `_reverse_mapping` is
# pyOpenSSL's own SSL* -> Connection map, read by the verify callback when it has an error to record.
CONNECTION: tuple[str, ...] = ("_from_ssl", "_into_ssl", "_raise_ssl_error", "_reverse_mapping", "_ssl")

# Private attributes of `OpenSSL.SSL.Context` (checked on a real one): its SSL_CTX*.
CONTEXT: tuple[str, ...] = ("_context",)


@dataclass(frozen=True, slots=True)
class Versions:
    """What runs: sidecar, the OpenSSL that terminates TLS, the binding to it, and Python."""

    sidecar: str
    openssl: str  # as OpenSSL names itself: "OpenSSL 4.0.3 29 Sep 2026"
    pyopenssl: str
    cryptography: str
    python: str

    def lines(self) -> list[str]:
        """`sidecar --version`: one component per line."""
        return [
            f"sidecar {self.sidecar}",
            f"{self.openssl} (the TLS library: the OpenSSL bundled with cryptography)",
            f"pyOpenSSL {self.pyopenssl}",
            f"cryptography {self.cryptography}",
            f"Python {self.python}",
        ]

    def binding(self) -> str:
        return f"pyOpenSSL {self.pyopenssl}, cryptography {self.cryptography}, {self.openssl}"


def _distribution_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions() -> Versions:
    """The installed versions; never raises, even when the binding itself is broken."""
    try:
        from OpenSSL import SSL

        openssl = SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode("ascii", "replace")
    except Exception as exc:  # whatever a broken installation raises: --version must still answer
        openssl = f"OpenSSL unknown ({type(exc).__name__}: {exc})"
    return Versions(
        sidecar=__version__,
        openssl=openssl,
        pyopenssl=_distribution_version("pyOpenSSL"),
        cryptography=_distribution_version("cryptography"),
        python=f"{platform.python_version()} ({platform.python_implementation()})",
    )


def absent(holder: object, names: Iterable[str], label: str) -> list[str]:
    """`label.NAME` for each of `names` that `holder` lacks."""
    return [f"{label}.{name}" for name in names if not hasattr(holder, name)]


def missing_bindings() -> tuple[str, ...]:
    """The bindings this installation lacks, in the order of the lists above; empty when all are there."""
    try:
        from OpenSSL import SSL
        from OpenSSL._util import ffi, lib
    except ImportError as exc:
        return (f"{BINDING_MODULE} ({exc})",)
    try:
        context = SSL.Context(SSL.TLS_METHOD)
        probe = SSL.Connection(context, None)
    except Exception as exc:  # the public API itself is broken: report that as the missing piece
        return (f"OpenSSL.SSL.Connection ({type(exc).__name__}: {exc})",)
    return (
        *absent(lib, LIB, "lib"),
        *absent(ffi, FFI, "ffi"),
        *absent(probe, CONNECTION, "Connection"),
        *absent(context, CONTEXT, "Context"),
    )


def supported() -> str:
    """The version ranges of the binding this sidecar was released with, from its package metadata."""
    try:
        requirements = importlib.metadata.requires("sidecar") or []
    except importlib.metadata.PackageNotFoundError:
        requirements = []
    ranges = []
    for requirement in requirements:
        match = re.match(r"\s*(cryptography|pyOpenSSL)\b\s*([^;]*)", requirement, re.IGNORECASE)
        if match:
            # Floor first, as people write ranges: "cryptography>=44,<51".
            specifiers = sorted((part.strip() for part in match.group(2).split(",")), key=lambda part: part[0] != ">")
            ranges.append(f"{match.group(1)}{','.join(specifiers)}")
    return " and ".join(ranges) or "the cryptography and pyOpenSSL versions of pyproject.toml"


def refusal(missing: Iterable[str], installed: Versions) -> str:
    """The one line `run` and `check` print when they refuse to start."""
    return (
        f"the TLS engine cannot run on this installation: {', '.join(missing)} missing "
        f"({installed.binding()}); install {supported()} (docs/deployment.md, security releases)"
    )


__all__ = [
    "CONNECTION",
    "CONTEXT",
    "FFI",
    "LIB",
    "Versions",
    "absent",
    "missing_bindings",
    "refusal",
    "supported",
    "versions",
]
