"""PROXY protocol headers to the backend: v1 text, v2 binary with SSL and identity TLVs."""

from __future__ import annotations

import struct
from pathlib import Path

from sidecar import pesit
from sidecar.testing.echo import EchoBackend

from ..support.env import Pki, Sidecar, base_config, tls_exchange

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def _parse_tlvs(data: bytes) -> dict[int, bytes]:
    tlvs: dict[int, bytes] = {}
    while data:
        kind, length = struct.unpack("!BH", data[:3])
        tlvs[kind] = data[3 : 3 + length]
        data = data[3 + length :]
    return tlvs


async def test_v1_header_precedes_the_stream(pki: Pki, backend: EchoBackend, workdir: Path) -> None:
    async with Sidecar(workdir, base_config(pki, backend.port, proxy_protocol="v1")) as sidecar:
        answer = await tls_exchange(sidecar.port(), pki.client_context(pki.client), b"hello")
    assert answer is not None and answer.startswith(b"PROXY TCP4 127.0.0.1 127.0.0.1 ")
    received = bytes(backend.connections[0])
    header, _, rest = received.partition(b"\r\n")
    fields = header.split(b" ")
    assert fields[:4] == [b"PROXY", b"TCP4", b"127.0.0.1", b"127.0.0.1"]
    assert int(fields[5]) == sidecar.port()
    assert rest == b"hello"


async def test_v2_header_carries_tls_and_identity(pki: Pki, backend: EchoBackend, workdir: Path) -> None:
    (workdir / "rules.txt").write_text("ACCEPT /CN=PARIS /USER=PARUSER\n")
    config = base_config(pki, backend.port, proxy_protocol="v2", identify="pesit", sslauth="rules.txt")
    config["partners"] = [{"id": "PARIS", "nrpart": "PARIS"}]
    sidecar = Sidecar(workdir, config)
    await sidecar.start()
    connect = pesit.frame(pesit.encode_connect("PARIS", "SRV"), True)
    try:
        await tls_exchange(sidecar.port(), pki.client_context(pki.client), connect)
    finally:
        await sidecar.stop()
    received = bytes(backend.connections[0])
    assert received[:12] == SIGNATURE
    assert received[12:14] == b"\x21\x11"  # v2 PROXY, TCP over IPv4
    length = struct.unpack("!H", received[14:16])[0]
    body, rest = received[16 : 16 + length], received[16 + length :]
    assert rest == connect  # the PeSIT CONNECT follows the header, verbatim
    assert body[:4] == bytes([127, 0, 0, 1]) and body[4:8] == bytes([127, 0, 0, 1])
    assert struct.unpack("!H", body[10:12])[0] == sidecar.port()
    tlvs = _parse_tlvs(body[12:])
    ssl_value = tlvs[0x20]
    assert ssl_value[0] == 0x07 and ssl_value[1:5] == b"\x00\x00\x00\x00"  # TLS, cert on conn and session, verified
    sub = _parse_tlvs(ssl_value[5:])
    assert sub[0x21] in (b"TLSv1.3", b"TLSv1.2")
    assert sub[0x22] == b"PARIS"
    assert sub[0x23]
    assert tlvs[0xE0] == b"/C=US/ST=NY/L=New York/O=ACME/OU=Paris/CN=PARIS"
    assert tlvs[0xE1] == b"/C=FR/O=ACME/CN=ACME Root CA"
    assert int(tlvs[0xE2], 16) == pki.client.cert.serial_number
    assert tlvs[0xE3] == b"PARIS"
    assert tlvs[0xE4] == b"PARUSER"


async def test_v2_for_an_unverified_session_sends_no_identity(pki: Pki, backend: EchoBackend, workdir: Path) -> None:
    config = base_config(pki, backend.port, proxy_protocol="v2")
    config["profiles"][0]["verify"] = "optional"
    async with Sidecar(workdir, config) as sidecar:
        await tls_exchange(sidecar.port(), pki.client_context(pki.stranger, stem="pp"), b"x")
    received = bytes(backend.connections[0])
    length = struct.unpack("!H", received[14:16])[0]
    tlvs = _parse_tlvs(received[16 + 12 : 16 + length])
    assert tlvs[0x20][0] == 0x07 and tlvs[0x20][1:5] != b"\x00\x00\x00\x00"
    assert 0xE0 not in tlvs and 0x22 not in _parse_tlvs(tlvs[0x20][5:])
