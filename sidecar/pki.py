"""The certificate database: loads what `pki` ids name (certificates, keys) and CRL files.

Every problem is returned as an Issue with the YAML path of the entry that named the file, so
`sidecar check` and a refused reload list them all at once. Messages speak of the file, not of the
library that read it: "not a PEM or DER certificate", "the key is encrypted: set
key_password_file", never a parser's exception text.

Reading is strict where a lenient reader would hide a mistake: a PEM file must end after its last
`-----END …-----` line (text after it is a truncated or concatenated file, and a CA file with a
valid certificate followed by garbage would otherwise silently trust only the first part), every
`-----BEGIN` needs its `-----END`, and each certificate block must parse on its own.

Lifetimes (`lifetime_issues`): an own certificate or a CA past its notAfter, or a CRL past its
nextUpdate, is an error; one that ends within `pki_warn_days` is a warning.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from .config import Config
from .errors import Issue, os_reason
from .tls.peer import name_rdns, oneline

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey

MAX_FILE = 16 * 1024 * 1024  # a CA bundle is a few hundred KB; a CRL of a big CA some MB

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END ([A-Z0-9 ]+)-----", re.DOTALL)


@dataclass(frozen=True, slots=True)
class PkiMaterial:
    id: str
    certs: tuple[x509.Certificate, ...]  # first = own certificate when a key is given, then its chain
    key: PrivateKey | None


class PemProblem(ValueError):
    """A file that is not what it should be; the message is in an operator's words."""


def read_bounded(path: Path, limit: int) -> bytes | None:
    """At most `limit` bytes of `path`; None when it holds more (a device, a file given by mistake).

    Read, not stat-ed: `/dev/zero` or a FIFO has no size to ask.
    """
    with path.open("rb") as file:
        data = file.read(limit + 1)
    return data if len(data) <= limit else None


def _read(path: Path, where: str, issues: list[Issue]) -> bytes | None:
    try:
        data = read_bounded(path, MAX_FILE)
    except OSError as exc:
        issues.append(Issue(where, f"cannot read {path}: {os_reason(exc)}"))
        return None
    if data is None:
        issues.append(Issue(where, f"{path}: larger than {MAX_FILE // (1024 * 1024)} MB, not a PKI file"))
    return data


def pem_blocks(data: bytes, what: str) -> list[tuple[str, bytes, int]]:
    """(label, whole block, line) of every PEM block; PemProblem if the text around them is wrong.

    Text before the first block is allowed (OpenSSL writes `subject=…` and bag attributes there);
    anything but blanks after the last one is not, nor a BEGIN without its END.
    """
    blocks: list[tuple[str, bytes, int]] = []
    end = 0
    for match in _PEM_BLOCK.finditer(data):
        label, closing = match.group(1).decode(), match.group(3).decode()
        line = data.count(b"\n", 0, match.start()) + 1
        if label != closing:
            raise PemProblem(f"line {line}: BEGIN {label} is closed by END {closing}")
        if b"-----BEGIN" in match.group(2):
            raise PemProblem(f"line {line}: BEGIN {label} has no END line")
        blocks.append((label, match.group(0), line))
        end = match.end()
    rest = data[end:]
    if b"-----BEGIN" in rest:
        line = data.count(b"\n", 0, end + rest.index(b"-----BEGIN")) + 1
        raise PemProblem(f"line {line}: a BEGIN line without its END (a truncated file?)")
    if blocks and rest.strip():
        line = data.count(b"\n", 0, end) + 1 + (1 if rest.startswith((b"\n", b"\r\n")) else 0)
        raise PemProblem(f"unexpected text after the last {what} (line {line}): a truncated or concatenated file?")
    return blocks


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM (one or more) or DER file; PemProblem in operator words otherwise."""
    if b"-----BEGIN" not in data:
        try:
            return [x509.load_der_x509_certificate(data)]
        except ValueError:
            raise PemProblem("not a PEM or DER certificate") from None
    blocks = pem_blocks(data, "certificate")
    certs: list[x509.Certificate] = []
    labels = []
    for label, block, line in blocks:
        labels.append(label)
        if label not in ("CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"):
            continue  # a key or parameters kept in the same file: not ours to read here
        try:
            certs.append(x509.load_pem_x509_certificate(block))
        except ValueError:
            raise PemProblem(f"the certificate at line {line} is damaged (not valid base64 DER)") from None
    if not certs:
        found = ", ".join(sorted(set(labels)))
        raise PemProblem(f"holds no certificate (found {found})")
    return certs


def load_pki(config: Config) -> tuple[dict[str, PkiMaterial], list[Issue]]:
    issues: list[Issue] = []
    materials: dict[str, PkiMaterial] = {}
    for entry in config.pki:
        path = f"pki.{entry.id}"
        data = _read(entry.cert, f"{path}.cert", issues)
        key: PrivateKey | None = None
        if entry.key is not None:
            key = _load_key(entry.key, entry.key_password_file, path, issues)
        if data is None:
            continue
        try:
            certs = load_certificates(data)
        except PemProblem as exc:
            issues.append(Issue(f"{path}.cert", f"{entry.cert}: {exc}"))
            continue
        if entry.key is not None:
            if key is None:
                continue
            if _public_der(key) != _cert_public_der(certs[0]):
                issues.append(
                    Issue(f"{path}.key", f"{entry.key} does not match the certificate (the first one in {entry.cert})")
                )
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
            blocks = [(label, block) for label, block, _ in pem_blocks(data, "key") if "PRIVATE KEY" in label]
            if not blocks:
                raise PemProblem("holds no private key")
            key = serialization.load_pem_private_key(blocks[0][1], password=password)
        else:
            key = serialization.load_der_private_key(data, password=password)
    except PemProblem as exc:
        issues.append(Issue(f"{path}.key", f"{key_path}: {exc}"))
        return None
    except TypeError:  # a password needed but absent, or given for a clear key
        if password is None:
            issues.append(Issue(f"{path}.key", f"{key_path}: the key is encrypted: set key_password_file"))
        else:
            issues.append(Issue(f"{path}.key_password_file", f"given, but {key_path} is not encrypted"))
        return None
    except ValueError:
        if password is not None:
            message = "cannot be decrypted with key_password_file (wrong password?), or is not a private key"
        else:
            message = "not a PEM or DER private key"
        issues.append(Issue(f"{path}.key", f"{key_path}: {message}"))
        return None
    except Exception:  # an unsupported algorithm surfaces as various library errors
        issues.append(Issue(f"{path}.key", f"{key_path}: not a usable private key"))
        return None
    if not isinstance(
        key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
    ):
        issues.append(Issue(f"{path}.key", f"{key_path}: unsupported key type (RSA, EC, Ed25519 or Ed448 only)"))
        return None
    return key


def _public_der(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _cert_public_der(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """One CRL, PEM or DER; PemProblem in operator words otherwise."""
    try:
        if b"-----BEGIN" not in data:
            return x509.load_der_x509_crl(data)
        blocks = [block for label, block, _ in pem_blocks(data, "CRL") if label == "X509 CRL"]
        if len(blocks) != 1:
            raise PemProblem("holds no CRL" if not blocks else "holds more than one CRL: give each its own file")
        return x509.load_pem_x509_crl(blocks[0])
    except ValueError as exc:
        if isinstance(exc, PemProblem):
            raise
        raise PemProblem("not a PEM or DER CRL") from None


@dataclass(frozen=True, slots=True)
class LoadedCrl:
    where: str  # the YAML path that named it
    path: Path
    next_update: datetime | None


def load_crls(
    paths: Iterable[Path],
    anchors: Iterable[x509.Certificate],
    where: str,
    issues: list[Issue],
    loaded: list[LoadedCrl] | None = None,
) -> frozenset[tuple[str, int]]:
    """Revoked (issuer one-line DN, serial) pairs of CRLs signed by one of `anchors`.

    A CRL whose signature does not verify with a trusted CA's key is refused: an unsigned list could
    otherwise revoke anyone, or be replaced by an empty one. Each CRL read is appended to `loaded`
    (for its lifetime check, and the metrics show its nextUpdate).
    """
    trusted = list(anchors)
    revoked: set[tuple[str, int]] = set()
    for i, crl_path in enumerate(paths):
        data = _read(crl_path, f"{where}[{i}]", issues)
        if data is None:
            continue
        try:
            crl = load_crl(data)
        except PemProblem as exc:
            issues.append(Issue(f"{where}[{i}]", f"{crl_path}: {exc}"))
            continue
        signers = [ca for ca in trusted if ca.subject == crl.issuer]
        if not any(_signed_by(crl, ca) for ca in signers):
            issues.append(Issue(f"{where}[{i}]", f"{crl_path}: not signed by a CA of the profile's rootcid"))
            continue
        if loaded is not None:
            loaded.append(LoadedCrl(f"{where}[{i}]", crl_path, crl.next_update_utc))
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


# ---- lifetimes -----------------------------------------------------------------------------------


def _subject(cert: x509.Certificate) -> str:
    return oneline(name_rdns(cert.subject))


def _days_left(end: datetime, now: datetime) -> int:
    return (end - now).days


def lifetime_issues(
    config: Config, pki: dict[str, PkiMaterial], crls: Iterable[LoadedCrl], now: datetime | None = None
) -> tuple[list[Issue], list[Issue]]:
    """(errors, warnings) about the lifetimes of what the profiles use: usercid, rootcid, CRLs."""
    now = now or datetime.now(UTC)
    warn_days = config.pki_warn_days
    errors: list[Issue] = []
    warnings: list[Issue] = []
    used: dict[str, str] = {}  # pki id -> the role it plays, in profile order
    for profile in config.profiles:
        if profile.usercid is not None:
            used.setdefault(profile.usercid, "own certificate")
        for root in profile.rootcid:
            used.setdefault(root, "CA")
    for pki_id in used:
        material = pki.get(pki_id)
        if material is None:
            continue
        # An own certificate: the leaf and the chain sent with it; a CA file: every certificate.
        certs = material.certs
        for position, cert in enumerate(certs):
            which = "" if len(certs) == 1 else f"certificate {position + 1} of {len(certs)} ({_subject(cert)}): "
            end = cert.not_valid_after_utc
            if end <= now:
                errors.append(Issue(f"pki.{pki_id}", f"{which}expired on {end.date().isoformat()}"))
            elif _days_left(end, now) < warn_days:
                warnings.append(
                    Issue(f"pki.{pki_id}", f"{which}expires {end.date().isoformat()} (in {_days_left(end, now)} days)")
                )
            start = cert.not_valid_before_utc
            if start > now:
                warnings.append(Issue(f"pki.{pki_id}", f"{which}not valid before {start.date().isoformat()}"))
    for crl in crls:
        if crl.next_update is None:
            continue
        if crl.next_update <= now:
            errors.append(
                Issue(crl.where, f"{crl.path}: out of date since {crl.next_update.date().isoformat()} (nextUpdate)")
            )
        elif _days_left(crl.next_update, now) < warn_days:
            days = _days_left(crl.next_update, now)
            warnings.append(
                Issue(crl.where, f"{crl.path}: next update due {crl.next_update.date().isoformat()} (in {days} days)")
            )
    return errors, warnings
