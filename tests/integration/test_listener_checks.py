"""Listener profile behaviour on real handshakes: verify levels, ciphlist, versions, timeouts, backend down."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import warnings
from pathlib import Path

import pytest

from sidecar.testing.echo import EchoBackend
from sidecar.testing.pki import issue

from ..conftest import LogCapture
from ..support.env import Pki, Sidecar, base_config, tls_exchange

TLS12 = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
TLS13 = (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3)


async def test_client_from_untrusted_ca_is_refused(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    async with Sidecar(workdir, base_config(pki, backend.port)) as sidecar:
        for tls in (TLS12, TLS13):
            assert await tls_exchange(sidecar.port(), pki.client_context(pki.stranger, tls=tls)) is None
    assert backend.connections == []
    closes = captured_logs.of("close")
    assert [c["reason"] for c in closes] == ["handshake_verify", "handshake_verify"]
    assert sidecar.runtime is not None
    assert sidecar.runtime.stats.listener("PESITSSL").handshake_failures["verify"] == 2
    # What is known of the refused certificate is in the close line, although it did not verify.
    stranger = pki.stranger.cert
    for close in closes:
        assert close["subject"] == "/C=US/O=ACME/OU=Paris/CN=PARIS"
        assert close["issuer"] == "/C=XX/O=Elsewhere/CN=Other Root"
        assert close["serial"] == format(stranger.serial_number, "X")
        assert close["verify_error"] == "depth 0: unable to get local issuer certificate (20)"


async def test_expired_client_certificate_is_named_in_the_refusal(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    long_dn = "/C=FR/O=ACME" + "".join(f"/OU={'X' * 60}" for _ in range(20)) + "/CN=LONG"
    expired = issue(pki.root, long_dn, days=(-30, -1))
    async with Sidecar(workdir, base_config(pki, backend.port)) as sidecar:
        assert await tls_exchange(sidecar.port(), pki.client_context(expired, stem="expired")) is None
    (close,) = captured_logs.of("close")
    assert close["reason"] == "handshake_verify"
    assert close["verify_error"] == "depth 0: certificate has expired (10)"
    subject = str(close["subject"])  # DN texts in logs are cut at 1,024 characters
    assert len(subject) == 1025 and subject.startswith("/C=FR/O=ACME/OU=XXX") and subject.endswith("…")
    assert close["issuer"] == "/C=FR/O=ACME/CN=ACME Root CA"


async def test_no_client_certificate_under_verify_required_is_refused(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    async with Sidecar(workdir, base_config(pki, backend.port)) as sidecar:
        for tls in (TLS12, TLS13):
            assert await tls_exchange(sidecar.port(), pki.client_context(None, tls=tls)) is None
    assert backend.connections == []
    assert all(c["decision"] == "reject" for c in captured_logs.of("close"))


async def test_verify_none_serves_clients_without_certificate(pki: Pki, backend: EchoBackend, workdir: Path) -> None:
    config = base_config(pki, backend.port)
    config["profiles"][0]["verify"] = "none"  # type: ignore[index]
    async with Sidecar(workdir, config) as sidecar:
        for tls in (TLS12, TLS13):
            assert await tls_exchange(sidecar.port(), pki.client_context(None, tls=tls), b"hello") == b"hello"


async def test_ciphlist_with_one_tls12_suite_negotiates_it_and_refuses_others(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    config = base_config(pki, backend.port)
    config["profiles"][0]["ciphlist"] = [49196]  # type: ignore[index]  # ECDHE-ECDSA-AES256-GCM-SHA384
    async with Sidecar(workdir, config) as sidecar:
        offering_all = pki.client_context(pki.client, stem="all")
        assert await tls_exchange(sidecar.port(), offering_all) == b"x"
        offering_other = pki.client_context(pki.client, tls=TLS12, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256", stem="o")
        assert await tls_exchange(sidecar.port(), offering_other) is None
    closes = captured_logs.of("close")
    assert closes[0]["cipher"] == "ECDHE-ECDSA-AES256-GCM-SHA384"
    assert closes[0]["tls_version"] == "TLSv1.2"  # no TLS 1.3 suite listed: TLS 1.3 is off
    assert closes[1]["reason"] == "handshake_protocol"
    assert len(backend.connections) == 1


async def test_tls13_only_client_refused_by_profile_without_tls13_suite(
    pki: Pki, backend: EchoBackend, workdir: Path
) -> None:
    config = base_config(pki, backend.port)
    config["profiles"][0]["ciphlist"] = [49195, 49196]  # type: ignore[index]
    async with Sidecar(workdir, config) as sidecar:
        assert await tls_exchange(sidecar.port(), pki.client_context(pki.client, tls=TLS13)) is None
        assert await tls_exchange(sidecar.port(), pki.client_context(pki.client, tls=TLS12)) == b"x"


LEGACY_SUITE = "ECDHE-ECDSA-AES128-SHA"  # 49161: a TLS 1.0 partner's suite (CBC, SHA-1 MAC)


def _legacy_client(pki: Pki, version: ssl.TLSVersion, stem: str = "legacy") -> ssl.SSLContext:
    """A TLS 1.0/1.1-only partner (the stdlib deprecates the versions: that is the point here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return pki.client_context(pki.client, tls=(version, version), ciphers=f"{LEGACY_SUITE}:@SECLEVEL=0", stem=stem)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
async def test_a_profile_that_allows_tls10_serves_legacy_partners(
    version: ssl.TLSVersion, pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    """`version.min: tls1.0` (CFT's tlsv1) must work: OpenSSL 3+ refuses TLS 1.0/1.1 at its default
    security level, so such a profile runs at security level 0 (its own choice of legacy)."""
    config = base_config(pki, backend.port)
    config["profiles"][0]["version"] = {"min": "tls1.0", "max": "tls1.3"}  # type: ignore[index]
    config["profiles"][0]["ciphlist"] = [49161, 4865]  # type: ignore[index]
    async with Sidecar(workdir, config) as sidecar:
        legacy = _legacy_client(pki, version)
        assert await tls_exchange(sidecar.port(), legacy) == b"x"
        assert await tls_exchange(sidecar.port(), pki.client_context(pki.client, tls=TLS13)) == b"x"
    closes = captured_logs.of("close")
    assert [line["tls_version"] for line in closes] == [
        {ssl.TLSVersion.TLSv1: "TLSv1", ssl.TLSVersion.TLSv1_1: "TLSv1.1"}[version],
        "TLSv1.3",
    ]
    assert closes[0]["cipher"] == LEGACY_SUITE


def _sha1_signatures_only_exchange(pki: Pki, port: int) -> bytes | None:
    """A TLS 1.2 client that accepts and makes only ECDSA-SHA1 handshake signatures: the default
    security level refuses SHA-1 signatures, level 0 admits them. Blocking pyOpenSSL (the stdlib
    cannot restrict signature algorithms), run in a thread."""
    from OpenSSL import SSL
    from OpenSSL._util import lib

    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_max_proto_version(SSL.TLS1_2_VERSION)
    context.set_cipher_list(b"ECDHE-ECDSA-AES128-GCM-SHA256:@SECLEVEL=0")
    assert lib.SSL_CTX_set1_sigalgs_list(context._context, b"ECDSA+SHA1") == 1
    cert_path, key_path = pki.client.write(pki.directory, "client-sha1-sigalgs")
    context.use_certificate_file(str(cert_path))
    context.use_privatekey_file(str(key_path))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        # pyOpenSSL wants a blocking socket; the kernel's receive timeout still bounds every wait.
        sock.settimeout(None)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 5, 0))
        connection = SSL.Connection(context, sock)
        connection.set_connect_state()
        try:
            connection.do_handshake()
            connection.sendall(b"x")
            return connection.recv(1) or None
        except (SSL.Error, OSError):
            return None


async def test_only_the_legacy_profile_runs_at_the_lowest_security_level(
    pki: Pki, backend: EchoBackend, workdir: Path
) -> None:
    """Two listeners in one process: the profile that allows TLS 1.0 runs at level 0, the other one
    keeps the library's default level (which refuses SHA-1 handshake signatures)."""
    config = base_config(pki, backend.port)
    profile = config["profiles"][0]  # type: ignore[index]
    legacy_profile = {**profile, "id": "SSLOLD", "version": "tlsv1", "ciphlist": [49161, 49195]}
    config["profiles"].append(legacy_profile)  # type: ignore[union-attr]
    listener = config["listeners"][0]  # type: ignore[index]
    config["listeners"].append({**listener, "id": "LEGACY", "ssl": "SSLOLD"})  # type: ignore[union-attr]
    async with Sidecar(workdir, config) as sidecar:
        assert await asyncio.to_thread(_sha1_signatures_only_exchange, pki, sidecar.port("LEGACY")) == b"x"
        assert await asyncio.to_thread(_sha1_signatures_only_exchange, pki, sidecar.port()) is None


async def test_tlsv1_without_a_tls10_suite_is_tls12_at_the_default_level(
    pki: Pki, backend: EchoBackend, workdir: Path
) -> None:
    """`tlsv1` with only AEAD suites (the default list): TLS 1.0 has nothing to negotiate, so the
    profile starts at TLS 1.2 and keeps the default security level."""
    config = base_config(pki, backend.port)
    config["profiles"][0]["version"] = "tlsv1"  # type: ignore[index]
    async with Sidecar(workdir, config) as sidecar:
        assert await tls_exchange(sidecar.port(), _legacy_client(pki, ssl.TLSVersion.TLSv1)) is None
        assert await asyncio.to_thread(_sha1_signatures_only_exchange, pki, sidecar.port()) is None
        assert await tls_exchange(sidecar.port(), pki.client_context(pki.client, tls=TLS12)) == b"x"


async def test_a_profile_from_tls12_refuses_tls10(pki: Pki, backend: EchoBackend, workdir: Path) -> None:
    config = base_config(pki, backend.port)
    config["profiles"][0]["ciphlist"] = [49161, 4865]  # type: ignore[index]
    async with Sidecar(workdir, config) as sidecar:
        legacy = _legacy_client(pki, ssl.TLSVersion.TLSv1)
        assert await tls_exchange(sidecar.port(), legacy) is None


async def test_tls13_suites_limited_to_the_list(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    config = base_config(pki, backend.port)
    config["profiles"][0]["ciphlist"] = ["TLS_CHACHA20_POLY1305_SHA256"]  # type: ignore[index]
    async with Sidecar(workdir, config) as sidecar:
        assert await tls_exchange(sidecar.port(), pki.client_context(pki.client, tls=TLS13)) == b"x"
        assert await tls_exchange(sidecar.port(), pki.client_context(pki.client, tls=TLS12)) is None
    assert captured_logs.of("close")[0]["cipher"] == "TLS_CHACHA20_POLY1305_SHA256"


async def test_backend_down_closes_client_and_keeps_serving(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    dead_port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    config = base_config(pki, dead_port)
    config["listeners"].append(  # type: ignore[union-attr]
        {"id": "LIVE", "listen": "127.0.0.1:0", "ssl": "SSLSRV", "backend": f"127.0.0.1:{backend.port}"}
    )
    async with Sidecar(workdir, config) as sidecar:
        assert await tls_exchange(sidecar.port(), pki.client_context(pki.client)) is None
        assert await tls_exchange(sidecar.port("LIVE"), pki.client_context(pki.client)) == b"x"
    dead = [c for c in captured_logs.of("close") if c["listener"] == "PESITSSL"]
    assert dead[0]["reason"] == "backend_unreachable"
    assert str(dead_port) in str(dead[0]["detail"])


async def test_idle_timeout_closes_both_sides(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    config = base_config(pki, backend.port)
    config["limits"]["idle_timeout"] = 0.3  # type: ignore[index]
    async with Sidecar(workdir, config) as sidecar:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", sidecar.port(), ssl=pki.client_context(pki.client), server_hostname="localhost"
        )
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(reader.read(10), 5) == b""  # closed by the proxy, not by us
        assert asyncio.get_running_loop().time() - started >= 0.25
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()
    assert captured_logs.of("close")[0]["reason"] == "idle_timeout"


async def test_handshake_timeout_closes_a_silent_client(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    config = base_config(pki, backend.port)
    config["limits"]["handshake_timeout"] = 0.3  # type: ignore[index]
    async with Sidecar(workdir, config) as sidecar:
        reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port())
        assert await asyncio.wait_for(reader.read(10), 5) == b""
        writer.close()
        await writer.wait_closed()
    assert captured_logs.of("close")[0]["reason"] == "handshake_timeout"
    assert backend.connections == []


async def test_plaintext_on_a_tls_listener_is_refused(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    async with Sidecar(workdir, base_config(pki, backend.port)) as sidecar:
        reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port())
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        assert await asyncio.wait_for(reader.read(10), 5) == b""
        writer.close()
        await writer.wait_closed()
    assert captured_logs.of("close")[0]["reason"] == "handshake_plaintext"
    assert backend.connections == []


async def test_max_connections_closes_new_connections_at_once(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    config = base_config(pki, backend.port)
    config["limits"]["max_connections"] = 1  # type: ignore[index]
    async with Sidecar(workdir, config) as sidecar:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", sidecar.port(), ssl=pki.client_context(pki.client), server_hostname="localhost"
        )
        writer.write(b"a")
        assert await reader.readexactly(1) == b"a"
        assert await tls_exchange(sidecar.port(), pki.client_context(pki.client)) is None
        writer.write(b"b")
        assert await reader.readexactly(1) == b"b"  # the first one is untouched
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()
    assert any(c.get("reason") == "max_connections" for c in captured_logs.of("close"))


def _open_fds() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


async def test_no_file_descriptor_leaks_after_mixed_connections(pki: Pki, backend: EchoBackend, workdir: Path) -> None:
    async with Sidecar(workdir, base_config(pki, backend.port)) as sidecar:
        await tls_exchange(sidecar.port(), pki.client_context(pki.client))  # warm up lazy imports and caches
        before = _open_fds()
        for _ in range(10):
            assert await tls_exchange(sidecar.port(), pki.client_context(pki.client, stem="ok")) == b"x"
            assert await tls_exchange(sidecar.port(), pki.client_context(pki.stranger, stem="bad")) is None
            _, writer = await asyncio.open_connection("127.0.0.1", sidecar.port())
            writer.write(b"\x00garbage")
            writer.close()
            await writer.wait_closed()
        assert sidecar.runtime is not None
        for _ in range(100):  # the proxy side closes asynchronously
            if _open_fds() <= before and not sidecar.runtime.connections:
                break
            await asyncio.sleep(0.02)
        assert _open_fds() <= before
        assert not sidecar.runtime.connections


@pytest.mark.parametrize("level", ["debug", "info", "warning"])
async def test_a_connection_that_sends_nothing_is_counted_as_empty(
    level: str, pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    config = base_config(pki, backend.port)
    config["logging"]["empty_connections"] = level  # type: ignore[index]
    async with Sidecar(workdir, config) as sidecar:
        for _ in range(2):  # a load balancer's TCP health check: connect, close
            _, writer = await asyncio.open_connection("127.0.0.1", sidecar.port())
            writer.close()
            await writer.wait_closed()
        # A client that sends a byte and goes away is a handshake failure, not an empty connection.
        _, writer = await asyncio.open_connection("127.0.0.1", sidecar.port())
        writer.write(b"\x16")
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        counters = sidecar.runtime.stats.listener("PESITSSL")  # type: ignore[union-attr]
        for _ in range(100):
            if len(captured_logs.of("close")) == 3:
                break
            await asyncio.sleep(0.02)
    closes = captured_logs.of("close")
    empty = [close for close in closes if close["reason"] == "empty"]
    assert len(empty) == 2 and all(close["level"] == level for close in empty)
    assert [close["reason"] for close in closes if close not in empty] == ["handshake_reset"]
    assert counters.empty == 2 and counters.closed["empty"] == 2
    assert counters.handshake_failures == {"reset": 1}
