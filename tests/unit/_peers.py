"""Build PeerCert values for policy tests from real (self-signed) certificates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from sidecar.tls.peer import PeerCert

# One key for every test certificate: key generation is the slow part and its value is irrelevant here.
_KEY = ec.generate_private_key(ec.SECP256R1())


def make_peer(subject_attrs: list[tuple[x509.ObjectIdentifier, str]], serial: int = 1) -> PeerCert:
    """A self-signed certificate with this subject, in this order (one attribute per RDN)."""
    name = x509.Name([x509.NameAttribute(oid, value) for oid, value in subject_attrs])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(_KEY.public_key())
        .serial_number(serial)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(_KEY, hashes.SHA256())
    )
    return PeerCert.from_x509(cert)
