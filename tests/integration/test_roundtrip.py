"""Mutual TLS through the proxy to a plaintext backend: small and large payloads, both TLS versions."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import os
import ssl
from pathlib import Path

import pytest

from sidecar.proxy.relay import Leg, Relay
from sidecar.testing.echo import EchoBackend
from sidecar.testing.pki import issue

from ..conftest import LogCapture
from ..support.env import Pki, Sidecar, base_config, tls_exchange

VERSIONS = {
    "tls1.2": (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2),
    "tls1.3": (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3),
}


@pytest.mark.parametrize("version", VERSIONS)
async def test_one_byte_round_trip(
    version: str, pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    async with Sidecar(workdir, base_config(pki, backend.port)) as sidecar:
        answer = await tls_exchange(sidecar.port(), pki.client_context(pki.client, tls=VERSIONS[version]), b"!")
        assert answer == b"!"
        assert backend.connections == [bytearray(b"!")]
    close = captured_logs.of("close")
    assert len(close) == 1
    line = close[0]
    assert line["decision"] == "accept"
    assert line["tls_version"] == {"tls1.2": "TLSv1.2", "tls1.3": "TLSv1.3"}[version]
    assert line["subject"] == "/C=US/ST=NY/L=New York/O=ACME/OU=Paris/CN=PARIS"
    assert line["bytes_up"] == 1 and line["bytes_down"] == 1
    ready = captured_logs.of("ready")
    assert ready and ready[0]["listeners"] == {"PESITSSL": f"127.0.0.1:{sidecar.port()}"}


async def _stream_both_ways(port: int, context: ssl.SSLContext, size: int) -> tuple[str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
    sent = hashlib.sha256()
    received = hashlib.sha256()
    total = 0

    async def send() -> None:
        remaining = size
        while remaining:
            block = os.urandom(min(remaining, 256 * 1024))
            sent.update(block)
            writer.write(block)
            await writer.drain()
            remaining -= len(block)

    async def receive() -> None:
        nonlocal total
        # asyncio's TLS transport cannot half-close (no write_eof): read exactly what was sent.
        while total < size and (chunk := await reader.read(1 << 20)):
            received.update(chunk)
            total += len(chunk)

    await asyncio.wait_for(asyncio.gather(send(), receive()), 60)
    writer.close()
    with contextlib.suppress(ssl.SSLError, ConnectionError):
        await writer.wait_closed()
    assert total == size
    return sent.hexdigest(), received.hexdigest()


@pytest.mark.parametrize("version", VERSIONS)
async def test_50_mib_both_ways_with_integrity(version: str, pki: Pki, backend: EchoBackend, workdir: Path) -> None:
    async with Sidecar(workdir, base_config(pki, backend.port)) as sidecar:
        sent, received = await _stream_both_ways(
            sidecar.port(), pki.client_context(pki.client, tls=VERSIONS[version]), 50 * 1024 * 1024
        )
        assert sent == received
        assert len(backend.connections[0]) == 50 * 1024 * 1024


def _live(kind: type) -> int:
    """Instances of `kind` the interpreter still tracks, reachable or not (garbage cycles included)."""
    return sum(1 for obj in gc.get_objects() if isinstance(obj, kind))


async def test_finished_connections_are_freed_without_the_cycle_collector(
    pki: Pki, backend: EchoBackend, workdir: Path
) -> None:
    """Legs, relay and TLS state go as soon as a connection ends — relayed, refused by policy or
    failed in the handshake — not at some later garbage collection: under connection churn that is
    memory returned at once and no collector pauses."""
    config = base_config(pki, backend.port)
    config["profiles"][0]["dnuser"] = "CN=PARIS"
    sidecar = Sidecar(workdir, config)
    runtime = await sidecar.start()
    other = issue(pki.root, "/C=US/O=ACME/OU=Lyon/CN=LYON")
    gc.collect()
    gc.disable()
    try:
        assert await tls_exchange(sidecar.port(), pki.client_context(pki.client), b"ping") == b"ping"
        assert await tls_exchange(sidecar.port(), pki.client_context(other, stem="lyon"), b"ping") is None
        assert await tls_exchange(sidecar.port(), pki.client_context(pki.stranger, stem="stranger")) is None
        for _ in range(200):
            if not runtime.connections:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # each connection's task ends just after it leaves the table
        assert not runtime.connections
        assert (_live(Leg), _live(Relay)) == (0, 0)
    finally:
        gc.enable()
        await sidecar.stop()
