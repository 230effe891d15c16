"""accept_proxy: a load balancer's PROXY header (v1 or v2) names the client; from anyone else it is refused."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from pathlib import Path
from typing import Any

import pytest

from sidecar.proxy.proxyproto import V2_SIGNATURE, encode_v1, encode_v2
from sidecar.testing.echo import EchoBackend

from ..conftest import LogCapture
from ..support.env import Pki, Sidecar, base_config, echoed

CLIENT = ("192.0.2.10", 40000)  # the client as the balancer saw it (TEST-NET-1)
FRONTEND = ("203.0.113.5", 1762)  # where the client connected: the balancer's frontend


def v1_header(source: tuple[str, int] = CLIENT) -> bytes:
    return encode_v1(source, FRONTEND)


def v2_header(source: tuple[str, int] = CLIENT) -> bytes:
    return encode_v2(source, FRONTEND, None, identity=None)


async def exchange(port: int, header: bytes, context: ssl.SSLContext | None, payload: bytes = b"hello") -> bytes | None:
    """Send `header` in clear, then (with a context) TLS on the same socket; None = refused."""
    try:
        async with asyncio.timeout(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(header)
                await writer.drain()
                if context is not None:
                    await writer.start_tls(context, server_hostname="localhost")
            except BaseException:
                writer.close()
                raise
            return await echoed(reader, writer, payload)
    except (ssl.SSLError, ConnectionError, OSError):
        return None


def config_for(pki: Pki, backend: EchoBackend, accept_proxy: list[str], **listener: Any) -> dict[str, Any]:
    return base_config(pki, backend.port, accept_proxy=accept_proxy, **listener)


@pytest.mark.parametrize("header", [v1_header(), v2_header()], ids=["v1", "v2"])
async def test_the_header_names_the_peer_everywhere(
    header: bytes, pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    async with Sidecar(workdir, config_for(pki, backend, ["127.0.0.0/8"], proxy_protocol="v1")) as sidecar:
        runtime = sidecar.runtime
        assert runtime is not None
        answer = await exchange(sidecar.port(), header, pki.client_context(pki.client))
    # The backend's own PROXY header carries the client and the frontend the balancer reported.
    assert answer == b"PROXY TCP4 192.0.2.10 203.0.113.5 40000 1762\r\nhello"[: len(answer or b"")]
    assert bytes(backend.connections[0]) == b"PROXY TCP4 192.0.2.10 203.0.113.5 40000 1762\r\nhello"
    close = captured_logs.of("close")[0]
    assert close["peer"] == "192.0.2.10:40000" and close["reason"] == "eof"
    assert str(close["via"]).startswith("127.0.0.1:")
    assert runtime.stats.listener("PESITSSL").accepted == 1


async def test_connections_list_the_client_of_the_header(pki: Pki, backend: EchoBackend, workdir: Path) -> None:
    async with Sidecar(workdir, config_for(pki, backend, ["127.0.0.1"])) as sidecar:
        runtime = sidecar.runtime
        assert runtime is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port())
        writer.write(encode_v2(("2001:db8::7", 5000), ("2001:db8::1", 1762), None, identity=None))
        await writer.start_tls(pki.client_context(pki.client), server_hostname="localhost")
        writer.write(b"x")
        assert await reader.readexactly(1) == b"x"
        (conn,) = runtime.connections.values()
        assert conn.describe()["peer"] == "[2001:db8::7]:5000"
        assert conn.describe()["bytes_up"] == 1
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError, OSError):
            await writer.wait_closed()


@pytest.mark.parametrize(
    ("source", "accepted"), [(("192.0.2.10", 1), True), (("198.51.100.7", 1), False)], ids=["listed", "other"]
)
async def test_host_verify_uses_the_proxy_source(
    source: tuple[str, int], accepted: bool, pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    config = config_for(pki, backend, ["127.0.0.0/8"], identify="certificate")
    config["partners"] = [{"id": "PARIS", "nrpart": "PARIS", "host": ["192.0.2.10"], "host_verify": 10}]
    async with Sidecar(workdir, config) as sidecar:
        answer = await exchange(sidecar.port(), v2_header(source), pki.client_context(pki.client))
    assert (answer == b"hello") is accepted
    assert captured_logs.of("close")[0]["reason"] == ("eof" if accepted else "host")


@pytest.mark.parametrize(
    ("accept_proxy", "header"),
    [([], v1_header()), ([], v2_header()), (["10.0.0.0/8"], v1_header()), (["10.0.0.0/8"], V2_SIGNATURE)],
    ids=["v1-empty-list", "v2-empty-list", "v1-not-listed", "v2-signature-alone-not-listed"],
)
@pytest.mark.parametrize("plaintext", ["refuse", "allow"])
async def test_a_header_from_an_untrusted_address_is_refused(
    accept_proxy: list[str],
    header: bytes,
    plaintext: str,
    pki: Pki,
    backend: EchoBackend,
    workdir: Path,
    captured_logs: LogCapture,
) -> None:
    async with Sidecar(workdir, config_for(pki, backend, accept_proxy, plaintext=plaintext)) as sidecar:
        runtime = sidecar.runtime
        assert runtime is not None
        answer = await exchange(sidecar.port(), header, None)
    assert answer is None
    assert backend.connections == []
    assert captured_logs.of("close")[0]["reason"] == "proxy_untrusted"
    assert runtime.stats.listener("PESITSSL").rejected == {"proxy_untrusted": 1}


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        (b"\x16\x03\x01\x00\x05hello", "not a PROXY protocol header"),  # TLS at once: no header
        (b"PROXY TCP4 192.0.2.10 10.0.0.1 1 2\n", "PROXY v1 line not ended by CRLF"),
        (b"GARBAGE" * 20, "not a PROXY protocol header"),
        (V2_SIGNATURE + b"\x21\x11\x00\x04abcd", "PROXY v2 header length 4 is shorter than its address block (12)"),
        (b"PROXY TCP4 192.0.2.10", "closed before a complete PROXY header"),  # truncated, then EOF
        (V2_SIGNATURE + b"\x21\x11\x00", "closed before a complete PROXY header"),
    ],
    ids=["tls-first", "v1-lf", "garbage", "v2-short", "v1-truncated", "v2-truncated"],
)
async def test_a_trusted_address_without_a_valid_header_is_refused(
    header: bytes, detail: str, pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    async with Sidecar(workdir, config_for(pki, backend, ["127.0.0.1/32"])) as sidecar:
        reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port())
        writer.write(header)
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    close = captured_logs.of("close")[0]
    assert (close["reason"], close["detail"]) == ("proxy_missing", detail)
    assert backend.connections == []


async def test_no_header_in_time_is_refused(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    config = config_for(pki, backend, ["127.0.0.1"])
    config["limits"]["handshake_timeout"] = 0.3
    async with Sidecar(workdir, config) as sidecar:
        reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port())
        writer.write(b"PROXY TCP4 ")  # and then nothing
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    close = captured_logs.of("close")[0]
    assert (close["reason"], close["detail"]) == ("proxy_missing", "no PROXY header in time")


async def test_v2_local_keeps_the_balancer_as_peer(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    local = V2_SIGNATURE + b"\x20\x00" + struct.pack("!H", 0)  # the balancer's own health check
    async with Sidecar(workdir, config_for(pki, backend, ["127.0.0.1"])) as sidecar:
        answer = await exchange(sidecar.port(), local, pki.client_context(pki.client))
    assert answer == b"hello"
    close = captured_logs.of("close")[0]
    assert str(close["peer"]).startswith("127.0.0.1:") and close.get("via") is None


async def test_plaintext_session_after_the_header(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    async with Sidecar(workdir, config_for(pki, backend, ["127.0.0.1"], plaintext="allow")) as sidecar:
        answer = await exchange(sidecar.port(), v1_header() + b"plain ", None, b"words")
    assert answer is not None and answer.startswith(b"plain")
    assert captured_logs.of("close")[0]["peer"] == "192.0.2.10:40000"


async def test_a_balancer_connection_without_a_byte_is_empty_not_proxy_missing(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    # A TCP health check of the balancer itself: connect, close. Counted as empty (SPEC 8.2).
    async with Sidecar(workdir, config_for(pki, backend, ["127.0.0.1"])) as sidecar:
        runtime = sidecar.runtime
        assert runtime is not None
        _, writer = await asyncio.open_connection("127.0.0.1", sidecar.port())
        writer.close()
        await writer.wait_closed()
        for _ in range(100):
            if captured_logs.of("close"):
                break
            await asyncio.sleep(0.02)
    assert captured_logs.of("close")[0]["reason"] == "empty"
    assert runtime.stats.listener("PESITSSL").rejected == {}
