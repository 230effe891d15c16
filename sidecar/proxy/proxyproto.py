"""PROXY protocol (HAProxy's proxy-protocol.txt): headers to the backend, and the reader for headers
that a load balancer in front of a listener sends (`accept_proxy`).

Encoding (to the backend): v1 text and v2 binary.

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
from dataclasses import dataclass
from typing import Literal

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


# ---- reading (sans-IO) -------------------------------------------------------------------------
#
# Wire layout (proxy-protocol.txt, sections 2.1 and 2.2):
#
# v1: one ASCII line of at most 107 bytes, CRLF included:
#     "PROXY" SP ("TCP4" | "TCP6") SP src-ip SP dst-ip SP src-port SP dst-port CRLF
#     "PROXY" SP "UNKNOWN" [anything up to CRLF] CRLF
#   Exactly one space between fields; ports are decimal 0-65535; the addresses are of the stated family.
#
# v2: 16 bytes, then `length` bytes:
#     12-byte signature | ver_cmd (0x2_ version, low nibble 0 LOCAL / 1 PROXY) |
#     family (high nibble 0 UNSPEC / 1 INET / 2 INET6 / 3 UNIX, low nibble 0 UNSPEC / 1 STREAM / 2 DGRAM) |
#     length (16-bit big endian) | addresses (INET 12, INET6 36, UNIX 216 bytes) | TLVs
#
# Choices where the text leaves room, all of them the specification's receiver rules:
# * LOCAL (the balancer's own health checks), UNSPEC family and v1 UNKNOWN are valid headers that carry
#   no client address: the connection keeps its real endpoints (`source` is None).
# * UNIX family: a valid header without an IP address for us: the real endpoints too.
# * DGRAM, an unknown version, command, family or transport, or a length shorter than the family's
#   address block: an error (the specification says such connections must be dropped).
# * TLVs are skipped: nothing a balancer says about itself changes a decision here.
# * The reader never raises on any input and never needs more than 16 + 65535 bytes.

V1_PREFIX = b"PROXY "
V1_MAX_LENGTH = 107
V2_HEADER_LENGTH = 16
_V2_ADDRESS_LENGTHS = {0x1: 12, 0x2: 36, 0x3: 216}


@dataclass(frozen=True, slots=True)
class NeedMore:
    """Not enough bytes yet to decide."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    version: Literal[1, 2]
    command: Literal["proxy", "local"]
    source: tuple[str, int] | None  # the client as the balancer saw it; None: keep the real endpoints
    destination: tuple[str, int] | None  # the address the client connected to (the balancer's frontend)
    consumed: int  # header length: the bytes after it are the client's first bytes (its ClientHello)


@dataclass(frozen=True, slots=True)
class ProxyError:
    message: str


ParseResult = NeedMore | ProxyHeader | ProxyError
NEED_MORE = NeedMore()


def looks_like_proxy(data: bytes | bytearray | memoryview) -> bool:
    """True when `data` starts with a PROXY v1 or v2 signature (whole, or as much of it as there is).

    Used to refuse a PROXY header from an address that is not a trusted balancer (`proxy_untrusted`).
    """
    head = bytes(data[: len(V2_SIGNATURE)])
    if not head:
        return False
    return V1_PREFIX.startswith(head[: len(V1_PREFIX)]) or V2_SIGNATURE.startswith(head)


def parse(data: bytes | bytearray | memoryview) -> ParseResult:
    """Read a PROXY v1 or v2 header (auto-detected) at the start of `data`."""
    data = bytes(data[: V2_HEADER_LENGTH + 0xFFFF])
    if not data:
        return NEED_MORE
    if data[:1] == V2_SIGNATURE[:1]:
        if not V2_SIGNATURE.startswith(data[: len(V2_SIGNATURE)]):
            return ProxyError("not a PROXY protocol header")
        return _parse_v2(data)
    if data[:1] == V1_PREFIX[:1]:
        if not V1_PREFIX.startswith(data[: len(V1_PREFIX)]):
            return ProxyError("not a PROXY protocol header")
        return _parse_v1(data)
    return ProxyError("not a PROXY protocol header")


def _parse_v1(data: bytes) -> ParseResult:
    end = data.find(b"\r\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if len(data) >= V1_MAX_LENGTH:
            return ProxyError(f"PROXY v1 line longer than {V1_MAX_LENGTH} bytes")
        if b"\n" in data or b"\r" in data[:-1]:
            return ProxyError("PROXY v1 line not ended by CRLF")
        return NEED_MORE
    consumed = end + 2
    try:
        line = data[:end].decode("ascii")
    except UnicodeDecodeError:
        return ProxyError("PROXY v1 line is not ASCII")
    fields = line.split(" ")
    if len(fields) >= 2 and fields[1] == "UNKNOWN":
        return ProxyHeader(1, "proxy", None, None, consumed)
    if len(fields) != 6:
        return ProxyError(f"PROXY v1 line has {len(fields)} fields, 6 expected")
    _, family, src, dst, src_port, dst_port = fields
    if family not in ("TCP4", "TCP6"):
        return ProxyError(f"PROXY v1 protocol {family[:16]!r} is not TCP4, TCP6 or UNKNOWN")
    version = 4 if family == "TCP4" else 6
    addresses = []
    for text in (src, dst):
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return ProxyError(f"PROXY v1 address {text[:48]!r} is not an IP address")
        if address.version != version or ("%" in text):
            return ProxyError(f"PROXY v1 address {text[:48]!r} is not {family}")
        addresses.append(str(address))
    ports = []
    for text in (src_port, dst_port):
        if not (text.isascii() and text.isdigit()) or len(text) > 5 or (len(text) > 1 and text[0] == "0"):
            return ProxyError(f"PROXY v1 port {text[:16]!r} is not a decimal port")
        port = int(text)
        if port > 65535:
            return ProxyError(f"PROXY v1 port {port} is out of range")
        ports.append(port)
    return ProxyHeader(1, "proxy", (addresses[0], ports[0]), (addresses[1], ports[1]), consumed)


def _parse_v2(data: bytes) -> ParseResult:
    if len(data) < V2_HEADER_LENGTH:
        return NEED_MORE
    version, command = data[12] >> 4, data[12] & 0x0F
    family, transport = data[13] >> 4, data[13] & 0x0F
    length = struct.unpack_from("!H", data, 14)[0]
    if version != 2:
        return ProxyError(f"PROXY v2 header with version {version}")
    if command not in (0x0, 0x1):
        return ProxyError(f"PROXY v2 header with unknown command {command}")
    if family > 0x3 or transport > 0x2:
        return ProxyError(f"PROXY v2 header with unknown address family or transport 0x{data[13]:02x}")
    consumed = V2_HEADER_LENGTH + length
    if command == 0x0:
        # LOCAL: sent by the balancer itself (health checks); the addresses, if any, are ignored.
        return NEED_MORE if len(data) < consumed else ProxyHeader(2, "local", None, None, consumed)
    if transport == 0x2:
        return ProxyError("PROXY v2 header for a datagram (DGRAM) connection")
    needed = _V2_ADDRESS_LENGTHS.get(family, 0)
    if length < needed:
        return ProxyError(f"PROXY v2 header length {length} is shorter than its address block ({needed})")
    if len(data) < consumed:
        return NEED_MORE
    if family == 0x1 and transport != 0x0:
        src = str(ipaddress.IPv4Address(data[16:20]))
        dst = str(ipaddress.IPv4Address(data[20:24]))
        ports = struct.unpack_from("!HH", data, 24)
    elif family == 0x2 and transport != 0x0:
        src = str(ipaddress.IPv6Address(data[16:32]))
        dst = str(ipaddress.IPv6Address(data[32:48]))
        ports = struct.unpack_from("!HH", data, 48)
    else:  # UNSPEC (family or transport) or UNIX: no IP address to take
        return ProxyHeader(2, "proxy", None, None, consumed)
    return ProxyHeader(2, "proxy", (src, ports[0]), (dst, ports[1]), consumed)
