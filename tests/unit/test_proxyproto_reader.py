"""The PROXY protocol reader on the cases of HAProxy's proxy-protocol.txt, as a table."""

from __future__ import annotations

import struct

import pytest

from sidecar.proxy.proxyproto import V2_SIGNATURE, NeedMore, ProxyError, ProxyHeader, looks_like_proxy, parse


def v2(ver_cmd: int, family: int, body: bytes, length: int | None = None) -> bytes:
    return V2_SIGNATURE + bytes([ver_cmd, family]) + struct.pack("!H", len(body) if length is None else length) + body


INET = bytes([192, 0, 2, 10, 10, 0, 0, 1]) + struct.pack("!HH", 40000, 1762)
INET6 = bytes(15) + b"\x01" + bytes(15) + b"\x02" + struct.pack("!HH", 5, 6)
TLV = bytes([0x04, 0x00, 0x02]) + b"ab"  # PP2_TYPE_NOOP


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            b"PROXY TCP4 192.0.2.10 10.0.0.1 40000 1762\r\n\x16",
            ProxyHeader(1, "proxy", ("192.0.2.10", 40000), ("10.0.0.1", 1762), 43),
        ),
        (b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n", ProxyHeader(1, "proxy", ("2001:db8::1", 1), ("::1", 2), 32)),
        (b"PROXY UNKNOWN\r\n", ProxyHeader(1, "proxy", None, None, 15)),
        (b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n", ProxyHeader(1, "proxy", None, None, 31)),
        (b"PROXY TCP4 192.0.2.10 10.0.0.1 40000 1762", NeedMore()),
        (b"PROX", NeedMore()),
        (b"", NeedMore()),
        (b"PROXY TCP4 192.0.2.10 10.0.0.1 40000 1762\n", ProxyError("PROXY v1 line not ended by CRLF")),
        (b"PROXY TCP4 192.0.2.10 10.0.0.1 40000 70000\r\n", ProxyError("PROXY v1 port 70000 is out of range")),
        (b"PROXY TCP4 192.0.2.10 10.0.0.1 040000 1762\r\n", ProxyError("PROXY v1 port '040000' is not a decimal port")),
        (b"PROXY TCP4 ::1 10.0.0.1 1 2\r\n", ProxyError("PROXY v1 address '::1' is not TCP4")),
        (b"PROXY TCP4 192.0.2.10  10.0.0.1 1 2\r\n", ProxyError("PROXY v1 line has 7 fields, 6 expected")),
        (
            b"PROXY UDP4 192.0.2.10 10.0.0.1 1 2\r\n",
            ProxyError("PROXY v1 protocol 'UDP4' is not TCP4, TCP6 or UNKNOWN"),
        ),
        (b"PROXY " + b"x" * 120, ProxyError("PROXY v1 line longer than 107 bytes")),
        (b"PROXX TCP4", ProxyError("not a PROXY protocol header")),
        (b"\x16\x03\x01\x00", ProxyError("not a PROXY protocol header")),
        (v2(0x21, 0x11, INET), ProxyHeader(2, "proxy", ("192.0.2.10", 40000), ("10.0.0.1", 1762), 28)),
        (v2(0x21, 0x11, INET + TLV) + b"\x16", ProxyHeader(2, "proxy", ("192.0.2.10", 40000), ("10.0.0.1", 1762), 33)),
        (v2(0x21, 0x21, INET6), ProxyHeader(2, "proxy", ("::1", 5), ("::2", 6), 52)),
        (v2(0x20, 0x00, b""), ProxyHeader(2, "local", None, None, 16)),  # LOCAL: the balancer's health check
        (v2(0x20, 0x11, INET), ProxyHeader(2, "local", None, None, 28)),  # LOCAL: addresses ignored
        (v2(0x21, 0x00, b""), ProxyHeader(2, "proxy", None, None, 16)),  # UNSPEC: keep the real endpoints
        (v2(0x21, 0x31, bytes(216)), ProxyHeader(2, "proxy", None, None, 232)),  # UNIX: no IP address
        (v2(0x21, 0x11, INET)[:20], NeedMore()),
        (V2_SIGNATURE[:7], NeedMore()),
        (v2(0x21, 0x11, INET[:8]), ProxyError("PROXY v2 header length 8 is shorter than its address block (12)")),
        (v2(0x11, 0x11, INET), ProxyError("PROXY v2 header with version 1")),
        (v2(0x22, 0x11, INET), ProxyError("PROXY v2 header with unknown command 2")),
        (v2(0x21, 0x12, INET), ProxyError("PROXY v2 header for a datagram (DGRAM) connection")),
        (v2(0x21, 0x41, INET), ProxyError("PROXY v2 header with unknown address family or transport 0x41")),
        (b"\r\n\r\n\x00\r\nQUIX\n" + bytes(8), ProxyError("not a PROXY protocol header")),
    ],
)
def test_reader(data: bytes, expected: object) -> None:
    assert parse(data) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"PROXY TCP4", True),
        (b"PRO", True),
        (V2_SIGNATURE + b"\x21", True),
        (V2_SIGNATURE[:3], True),
        (b"\x16\x03\x01", False),
        (b"PROXX", False),
        (b"GET / HTTP/1.1\r\n", False),
        (b"", False),
    ],
)
def test_signature_detection(data: bytes, expected: bool) -> None:
    assert looks_like_proxy(data) is expected
