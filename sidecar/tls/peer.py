"""PeerCert: the facts of a certificate that policy needs, parsed once per connection.

Pure: built from DER with `cryptography`; no ssl, socket or asyncio.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# OpenSSL's short names, as its one-line DN form prints them.
_SHORT_NAMES: dict[x509.ObjectIdentifier, str] = {
    NameOID.COUNTRY_NAME: "C",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.LOCALITY_NAME: "L",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.COMMON_NAME: "CN",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.USER_ID: "UID",
    NameOID.STREET_ADDRESS: "street",
    NameOID.POSTAL_CODE: "postalCode",
    NameOID.TITLE: "title",
    NameOID.GIVEN_NAME: "GN",
    NameOID.SURNAME: "SN",
    NameOID.INITIALS: "initials",
    NameOID.GENERATION_QUALIFIER: "generationQualifier",
    NameOID.DN_QUALIFIER: "dnQualifier",
    NameOID.PSEUDONYM: "pseudonym",
    NameOID.BUSINESS_CATEGORY: "businessCategory",
    NameOID.JURISDICTION_COUNTRY_NAME: "jurisdictionC",
    NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier",
}

_EKU_NAMES: dict[x509.ObjectIdentifier, str] = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
}

_KEY_USAGE_FLAGS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
)

RDN = tuple[tuple[str, str], ...]  # one RDN: (short name, value) pairs; usually one pair


def _attribute_name(oid: x509.ObjectIdentifier) -> str:
    return _SHORT_NAMES.get(oid, oid.dotted_string)


def name_rdns(name: x509.Name) -> tuple[RDN, ...]:
    """The RDNs of a name in certificate (encoding) order, with OpenSSL short names."""
    rdns: list[RDN] = []
    for rdn in name.rdns:
        rdns.append(
            tuple(
                (_attribute_name(attr.oid), attr.value if isinstance(attr.value, str) else attr.value.hex())
                for attr in rdn
            )
        )
    return tuple(rdns)


def oneline(rdns: tuple[RDN, ...]) -> str:
    """OpenSSL's one-line DN form in certificate order: `/C=US/O=ACME/CN=partner1`.

    Multi-valued RDNs are joined with `+`, as `X509_NAME_oneline` does.
    """
    return "".join("/" + "+".join(f"{key}={value}" for key, value in rdn) for rdn in rdns)


@dataclass(frozen=True, slots=True)
class PeerCert:
    subject: str  # one-line DN, certificate order
    issuer: str
    subject_rdns: tuple[RDN, ...]
    issuer_rdns: tuple[RDN, ...]
    serial: int
    not_before: datetime  # UTC, timezone-aware
    not_after: datetime
    version: int  # 1 or 3 (X.509 v1 / v3)
    key_usage: frozenset[str] | None  # None: no KeyUsage extension
    extended_key_usage: frozenset[str] | None  # None: no ExtendedKeyUsage extension
    is_ca: bool
    der: bytes

    @classmethod
    def from_der(cls, der: bytes) -> PeerCert:
        return cls.from_x509(x509.load_der_x509_certificate(der))

    @staticmethod
    def cached(der: bytes) -> PeerCert:
        """`from_der` through a bounded cache keyed by the whole DER.

        Partners reconnect with the same certificate all day; parsing one is most of the Python
        cost of a handshake (names and extensions become Python objects). The key is the exact
        encoding and the value is immutable, so a hit is the same answer a fresh parse gives;
        verification is not cached: OpenSSL verifies every chain on every handshake.
        """
        return _cached_peer_cert(der)

    @classmethod
    def from_x509(cls, cert: x509.Certificate) -> PeerCert:
        subject_rdns = name_rdns(cert.subject)
        issuer_rdns = name_rdns(cert.issuer)
        key_usage: frozenset[str] | None = None
        eku: frozenset[str] | None = None
        is_ca = False
        for ext in cert.extensions:
            value = ext.value
            if isinstance(value, x509.KeyUsage):
                flags = {flag for flag in _KEY_USAGE_FLAGS if getattr(value, flag)}
                if value.key_agreement:
                    flags |= {f for f in ("encipher_only", "decipher_only") if getattr(value, f)}
                key_usage = frozenset(flags)
            elif isinstance(value, x509.ExtendedKeyUsage):
                eku = frozenset(_EKU_NAMES.get(oid, oid.dotted_string) for oid in value)
            elif isinstance(value, x509.BasicConstraints):
                is_ca = value.ca
        return cls(
            subject=oneline(subject_rdns),
            issuer=oneline(issuer_rdns),
            subject_rdns=subject_rdns,
            issuer_rdns=issuer_rdns,
            serial=cert.serial_number,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            version=cert.version.value + 1,
            key_usage=key_usage,
            extended_key_usage=eku,
            is_ca=is_ca,
            der=cert.public_bytes(Encoding.DER),
        )

    def subject_values(self, short_name: str) -> tuple[str, ...]:
        """Every value of one attribute of the subject (an attribute may occur several times)."""
        return tuple(value for rdn in self.subject_rdns for key, value in rdn if key == short_name)

    @property
    def common_name(self) -> str | None:
        names = self.subject_values("CN")
        return names[-1] if names else None  # the most specific CN, as OpenSSL-based tools pick it

    @property
    def serial_hex(self) -> str:
        return format(self.serial, "X")


PEER_CERT_CACHE_SIZE = 1024  # distinct peer certificates kept parsed (a few KB each)


@lru_cache(maxsize=PEER_CERT_CACHE_SIZE)
def _cached_peer_cert(der: bytes) -> PeerCert:
    return PeerCert.from_der(der)


@dataclass(frozen=True, slots=True)
class VerifyError:
    depth: int  # 0 = the peer's own certificate
    code: int  # OpenSSL X509_V_ERR_* number
    message: str  # OpenSSL's text for it ("unable to get local issuer certificate")

    def __str__(self) -> str:
        return f"depth {self.depth}: {self.message} ({self.code})"


@dataclass(frozen=True, slots=True)
class TlsFacts:
    """What one finished handshake established; the only thing policy sees of TLS."""

    tls_version: str  # "TLSv1.3"
    cipher_name: str  # OpenSSL name of the negotiated suite
    cipher_code: int  # its IANA code (CFT CIPHLIST number)
    peer: PeerCert | None  # the certificate the peer presented, verified or not
    verified: bool  # the peer's chain verified against the profile's trust anchors and depth
    verify_errors: tuple[VerifyError, ...] = ()
    chain_length: int = 0  # certificates in the verified chain, anchor included
    client_cert_requested: bool | None = None  # client side: did the server ask for a certificate

    @property
    def verified_peer(self) -> PeerCert | None:
        """The peer certificate only when it verified: an unverified one is never an identity."""
        return self.peer if self.verified else None
