"""Offline chain verification for `sidecar explain`: the same trust anchors and depth rule as the
handshake (tls.profiles), without a network."""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from OpenSSL import crypto

from .peer import VerifyError


def verify_offline(
    certs: list[x509.Certificate], anchors: list[x509.Certificate], depth: int, at: datetime
) -> tuple[bool, tuple[VerifyError, ...], int]:
    """(verified, errors, chain length) of `certs` (leaf first, then what the peer would send)."""
    store = crypto.X509Store()
    for anchor in anchors:
        store.add_cert(crypto.X509.from_cryptography(anchor))
    store.set_time(at)
    leaf, *untrusted = certs
    context = crypto.X509StoreContext(
        store, crypto.X509.from_cryptography(leaf), [crypto.X509.from_cryptography(c) for c in untrusted]
    )
    try:
        chain = context.get_verified_chain()
    except crypto.X509StoreContextError as exc:
        return False, (VerifyError(exc.errors[1], exc.errors[0], str(exc.errors[2])),), 0
    length = len(chain) if chain else 1
    if depth == 0 and length > 1:
        return False, (VerifyError(1, 22, "certificate chain too long (depth 0: self-signed only)"),), length
    if length - 2 > depth:
        return False, (VerifyError(length - 1, 22, f"certificate chain too long (depth {depth})"),), length
    return True, (), length
