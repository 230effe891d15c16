"""PROXY protocol headers to the backend (HAProxy's proxy-protocol.txt), v1 text and v2 binary.

v2 carries the TLS facts in `PP2_TYPE_SSL` (client flags, verify result, version, CN, cipher) and the
authenticated identity in the custom range 0xE0-0xEF:

| type | value (UTF-8)                                  |
|------|------------------------------------------------|
| 0xE0 | subject DN, OpenSSL one-line form              |
| 0xE1 | issuer DN, OpenSSL one-line form               |
| 0xE2 | certificate serial, uppercase hexadecimal      |
| 0xE3 | partner id (CFTPART ID) when identified        |
| 0xE4 | SSLAUTH /USER of the deciding ACCEPT statement |

Certificate TLVs carry `identity`, the session verdict's verified certificate (`policy.verdict`): a
tolerated one (verify: optional) is not an identity; the SSL TLV then says "certificate presented,
verify failed".
"""

from __future__ import annotations

import ipaddress
import struct

from ..tls.peer import PeerCert, TlsFacts

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
PP2_TYPE_SSL = 0x20
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_SUBTYPE_SSL_CN = 0x22
PP2_SUBTYPE_SSL_CIPHER = 0x23
PP2_CLIENT_SSL = 0x01
PP2_CLIENT_CERT_CONN = 0x02
PP2_CLIENT_CERT_SESS = 0x04
TLV_SUBJECT = 0xE0
TLV_ISSUER = 0xE1
TLV_SERIAL = 0xE2
TLV_PARTNER = 0xE3
TLV_USER = 0xE4


def _tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


def _addresses(source: tuple[str, int], destination: tuple[str, int]) -> tuple[str, bytes] | None:
    """("TCP4"|"TCP6", packed v2 address block) or None when the families differ or are not IP."""
    try:
        src = ipaddress.ip_address(source[0])
        dst = ipaddress.ip_address(destination[0])
    except ValueError:
        return None
    if isinstance(src, ipaddress.IPv6Address) and src.ipv4_mapped is not None:
        src = src.ipv4_mapped
    if isinstance(dst, ipaddress.IPv6Address) and dst.ipv4_mapped is not None:
        dst = dst.ipv4_mapped
    if src.version != dst.version:
        return None
    family = "TCP4" if src.version == 4 else "TCP6"
    return family, src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])


def encode_v1(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    addresses = _addresses(source, destination)
    if addresses is None:
        return b"PROXY UNKNOWN\r\n"
    family = addresses[0]
    src, dst = (_plain(source[0]), _plain(destination[0]))
    return f"PROXY {family} {src} {dst} {source[1]} {destination[1]}\r\n".encode("ascii")


def _plain(host: str) -> str:
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def encode_v2(
    source: tuple[str, int],
    destination: tuple[str, int],
    facts: TlsFacts | None,
    *,
    identity: PeerCert | None,
    partner: str | None = None,
    user: str | None = None,
) -> bytes:
    addresses = _addresses(source, destination)
    if addresses is None:
        family_byte, block = 0x00, b""  # AF_UNSPEC: the backend must ignore the addresses
    else:
        family_byte, block = (0x11 if addresses[0] == "TCP4" else 0x21), addresses[1]
    tlvs = b""
    if facts is not None:
        flags = PP2_CLIENT_SSL
        if facts.peer is not None:
            flags |= PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS
        verify_result = 0 if facts.verified else 1  # 0 = the client presented a certificate that verified
        sub = _tlv(PP2_SUBTYPE_SSL_VERSION, facts.tls_version.encode()) + _tlv(
            PP2_SUBTYPE_SSL_CIPHER, facts.cipher_name.encode()
        )
        if identity is not None and identity.common_name:
            sub += _tlv(PP2_SUBTYPE_SSL_CN, identity.common_name.encode())
        tlvs += _tlv(PP2_TYPE_SSL, struct.pack("!BI", flags, verify_result) + sub)
        if identity is not None:
            tlvs += _tlv(TLV_SUBJECT, identity.subject.encode())
            tlvs += _tlv(TLV_ISSUER, identity.issuer.encode())
            tlvs += _tlv(TLV_SERIAL, identity.serial_hex.encode())
    if partner:
        tlvs += _tlv(TLV_PARTNER, partner.encode())
    if user:
        tlvs += _tlv(TLV_USER, user.encode())
    body = block + tlvs
    return V2_SIGNATURE + bytes([0x21, family_byte]) + struct.pack("!H", len(body)) + body
