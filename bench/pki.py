"""Certificates for the benchmark: one ECDSA P-256 root, one server and one client certificate.

Every peer gets the same files: `root.pem`, `server.pem` + `server.key` (and `server-bundle.pem`,
certificate + key in one file, which is how HAProxy wants it), `client.pem` + `client.key`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_ATTRS = {
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "CN": NameOID.COMMON_NAME,
}
ROOT_DN = "/C=FR/O=ACME/CN=ACME Root CA"
SERVER_DN = "/C=FR/O=ACME/CN=localhost"
CLIENT_DN = "/C=US/ST=NY/L=New York/O=ACME/OU=Paris/CN=PARIS"


def _name(dn: str) -> x509.Name:
    parts = [part.split("=", 1) for part in dn.split("/") if part]
    return x509.Name([x509.NameAttribute(_ATTRS[key], value) for key, value in parts])


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_pki(directory: Path) -> Path:
    """Write the files into `directory` (created) and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = (
        x509.CertificateBuilder()
        .subject_name(_name(ROOT_DN))
        .issuer_name(_name(ROOT_DN))
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    (directory / "root.pem").write_bytes(_pem(root))
    for stem, dn, usage in (
        ("server", SERVER_DN, ExtendedKeyUsageOID.SERVER_AUTH),
        ("client", CLIENT_DN, ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(dn))
            .issuer_name(root.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256())
        )
        (directory / f"{stem}.pem").write_bytes(_pem(cert))
        (directory / f"{stem}.key").write_bytes(_key_pem(key))
        if stem == "server":
            (directory / "server-bundle.pem").write_bytes(_pem(cert) + _key_pem(key))
    return directory
