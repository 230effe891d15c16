"""The certificate database: loads what `pki` ids name (certificates, keys) and CRL files.

Every problem is returned as an Issue with the YAML path of the entry that named the file, so
`sidecar check` and a refused reload list them all at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from .config import Config
from .errors import Issue
from .tls.peer import name_rdns, oneline

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey


@dataclass(frozen=True, slots=True)
class PkiMaterial:
    id: str
    certs: tuple[x509.Certificate, ...]  # first = own certificate when a key is given, then its chain
    key: PrivateKey | None


def _read(path: Path, where: str, issues: list[Issue]) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError as exc:
        issues.append(Issue(where, f"cannot read {path}: {exc.strerror or exc}"))
        return None


def load_certificates(data: bytes) -> list[x509.Certificate]:
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificates(data)
    return [x509.load_der_x509_certificate(data)]


def load_pki(config: Config) -> tuple[dict[str, PkiMaterial], list[Issue]]:
    issues: list[Issue] = []
    materials: dict[str, PkiMaterial] = {}
    for entry in config.pki:
        path = f"pki.{entry.id}"
        data = _read(entry.cert, f"{path}.cert", issues)
        if data is None:
            continue
        try:
            certs = load_certificates(data)
        except ValueError as exc:
            issues.append(Issue(f"{path}.cert", f"{entry.cert} holds no readable certificate: {exc}"))
            continue
        key: PrivateKey | None = None
        if entry.key is not None:
            key = _load_key(entry.key, entry.key_password_file, path, issues)
            if key is not None and _public_der(key) != _cert_public_der(certs[0]):
                issues.append(Issue(f"{path}.key", f"{entry.key} does not match the certificate in {entry.cert}"))
                continue
        materials[entry.id] = PkiMaterial(id=entry.id, certs=tuple(certs), key=key)
    return materials, issues


def _load_key(key_path: Path, password_file: Path | None, path: str, issues: list[Issue]) -> PrivateKey | None:
    data = _read(key_path, f"{path}.key", issues)
    if data is None:
        return None
    password: bytes | None = None
    if password_file is not None:
        secret = _read(password_file, f"{path}.key_password_file", issues)
        if secret is None:
            return None
        password = secret.rstrip(b"\r\n")
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=password)
        else:
            key = serialization.load_der_private_key(data, password=password)
    except TypeError as exc:  # password needed but absent, or given for a clear key
        issues.append(Issue(f"{path}.key", f"{key_path}: {exc}"))
        return None
    except ValueError as exc:
        issues.append(Issue(f"{path}.key", f"{key_path}: cannot load the private key ({exc})"))
        return None
    if not isinstance(
        key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
    ):
        issues.append(Issue(f"{path}.key", f"{key_path}: unsupported key type {type(key).__name__}"))
        return None
    return key


def _public_der(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _cert_public_der(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_crls(
    paths: Iterable[Path],
    anchors: Iterable[x509.Certificate],
    where: str,
    issues: list[Issue],
    next_updates: dict[Path, datetime | None] | None = None,
) -> frozenset[tuple[str, int]]:
    """Revoked (issuer one-line DN, serial) pairs of CRLs signed by one of `anchors`.

    A CRL whose signature does not verify with a trusted CA's key is refused: an unsigned list could
    otherwise revoke anyone, or be replaced by an empty one. The nextUpdate of each accepted file
    goes into `next_updates` when given (the metrics show it).
    """
    trusted = list(anchors)
    revoked: set[tuple[str, int]] = set()
    for i, crl_path in enumerate(paths):
        data = _read(crl_path, f"{where}[{i}]", issues)
        if data is None:
            continue
        try:
            crl = x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data)
        except ValueError as exc:
            issues.append(Issue(f"{where}[{i}]", f"{crl_path} is not a readable CRL: {exc}"))
            continue
        signers = [ca for ca in trusted if ca.subject == crl.issuer]
        if not any(_signed_by(crl, ca) for ca in signers):
            issues.append(Issue(f"{where}[{i}]", f"{crl_path}: not signed by a CA of the profile's rootcid"))
            continue
        if next_updates is not None:
            next_updates[crl_path] = crl.next_update_utc
        issuer = oneline(name_rdns(crl.issuer))
        revoked.update((issuer, entry.serial_number) for entry in crl)
    return frozenset(revoked)


def _signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    public_key = ca.public_key()
    if not isinstance(
        public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
    ):
        return False
    return crl.is_signature_valid(public_key)
