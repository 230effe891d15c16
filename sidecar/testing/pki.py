"""A throwaway PKI: ECDSA P-256 CAs, end-entity certificates and CRLs, written as PEM files.

One builder for the demo, the tests and the benchmark, so that each of them exercises the proxy
with the same kind of certificate a real partner presents (v3, key usage, extended key usage,
subject alternative names, key identifiers).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_ATTRIBUTES = {
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "CN": NameOID.COMMON_NAME,
}


def name(dn: str) -> x509.Name:
    """'/C=FR/O=ACME/CN=x' -> x509.Name, attributes in that order (the OpenSSL one-line form)."""
    pairs = (part.split("=", 1) for part in dn.split("/") if part)
    return x509.Name([x509.NameAttribute(_ATTRIBUTES[key], value) for key, value in pairs])


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...] = ()  # intermediates sent along with `cert`

    def cert_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.cert, *self.chain))

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """`stem.pem` (certificate and intermediates) and `stem.key`; returns both paths."""
        cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
        cert_path.write_bytes(self.cert_pem())
        write_private(key_path, self.key_pem())
        return cert_path, key_path


def write_private(path: Path, data: bytes) -> None:
    # Throwaway keys, but nothing here should teach world-readable private keys.
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(data)


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    serial: int | None,
    days: tuple[int, int],
    not_after: dt.datetime | None = None,
) -> x509.CertificateBuilder:
    """Subject, issuer, key, serial and validity (days from now: (-1, 365) = since yesterday, for a year).

    `not_after` (timezone-aware) replaces the end that `days` gives.
    """
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=days[0]))
        .not_valid_after(not_after if not_after is not None else now + dt.timedelta(days=days[1]))
    )


def make_ca(
    dn: str,
    *,
    issuer: Issued | None = None,
    serial: int | None = None,
    path_length: int | None = None,
    days: tuple[int, int] = (-1, 365),
) -> Issued:
    """A root CA, or an intermediate when `issuer` is given (its chain then lists its issuers)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = name(dn)
    builder = (
        _builder(subject, issuer.cert.subject if issuer else subject, key, serial, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        # Key usage: keyCertSign and cRLSign only.
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    cert = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    return Issued(cert, key, (issuer.cert, *issuer.chain) if issuer else ())


def issue(
    ca: Issued,
    dn: str,
    *,
    serial: int | None = None,
    days: tuple[int, int] = (-1, 365),
    not_after: dt.datetime | None = None,
    server: bool = False,
    client: bool = True,
    san: str | None = "localhost",
    ip: str | None = None,
    include_chain: bool = True,
) -> Issued:
    """An end-entity certificate: clientAuth and/or serverAuth, DNS (and IP) subject alternative names.

    `not_after` (timezone-aware) replaces the end that `days` gives: a certificate that expires in
    a few seconds, during a session.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        _builder(name(dn), ca.cert.subject, key, serial, days, not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # Key usage: digitalSignature only, what an ECDSA TLS peer needs.
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    names: list[x509.GeneralName] = [x509.DNSName(san)] if san else []
    if ip:
        names.append(x509.IPAddress(ipaddress.ip_address(ip)))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    # A certificate from an intermediate travels with it: the peer may trust only the root.
    return Issued(cert, key, (ca.cert,) if include_chain and ca.chain else ())


def make_crl(ca: Issued, revoked_serials: list[int], *, next_update_days: int = 30) -> bytes:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - dt.timedelta(days=1))
        .next_update(now + dt.timedelta(days=next_update_days))
    )
    for serial in revoked_serials:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
