"""VERIFY=OPTIONAL tolerating invalid certificates, plaintext and TLS on one port, SSL required per class."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from sidecar import pesit
from sidecar.testing.echo import EchoBackend
from sidecar.testing.pki import issue

from ..conftest import LogCapture
from ..support.env import Pki, Sidecar, base_config, tls_exchange


def _optional(pki: Pki, port: int, **profile: Any) -> dict[str, Any]:
    config = base_config(pki, port)
    config["profiles"][0].update(verify="optional", **profile)
    return config


async def test_optional_tolerates_missing_unknown_and_expired_certificates(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    expired = issue(pki.root, "/C=FR/O=ACME/CN=OLD", days=(-30, -1))
    async with Sidecar(workdir, _optional(pki, backend.port)) as sidecar:
        for cert, stem in ((None, "none"), (pki.stranger, "unknown-ca"), (expired, "expired")):
            assert await tls_exchange(sidecar.port(), pki.client_context(cert, stem=stem), b"hi") == b"hi"
        assert await tls_exchange(sidecar.port(), pki.client_context(pki.client, stem="valid"), b"ok") == b"ok"
    closes = captured_logs.of("close")
    assert [c["verified"] for c in closes] == [False, False, False, True]
    assert "subject" not in closes[0] and closes[1]["subject"] == "/C=US/O=ACME/OU=Paris/CN=PARIS"
    unverified = captured_logs.of("unverified")
    assert len(unverified) == 2
    assert "unable to get local issuer certificate" in str(unverified[0]["errors"])
    assert "certificate has expired" in str(unverified[1]["errors"])
    assert sidecar.runtime is not None and sidecar.runtime.stats.listener("PESITSSL").unverified == 2


async def test_optional_with_dn_check_refuses_an_unverified_certificate(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    # The stranger's DN matches the pattern, but a tolerated certificate is never an identity.
    async with Sidecar(workdir, _optional(pki, backend.port, dnuser="OU=Paris")) as sidecar:
        assert await tls_exchange(sidecar.port(), pki.client_context(pki.stranger, stem="s")) is None
        assert await tls_exchange(sidecar.port(), pki.client_context(pki.client, stem="v")) == b"x"
    assert captured_logs.of("close")[0]["reason"] == "dnuser"


async def test_optional_does_not_feed_sslauth_with_an_unverified_certificate(
    pki: Pki, backend: EchoBackend, workdir: Path
) -> None:
    (workdir / "rules.txt").write_text("ACCEPT /CN=PARIS /USER=P\nREVOKE /CN=PARIS\n")
    config = _optional(pki, backend.port)
    config["listeners"][0]["sslauth"] = "rules.txt"
    async with Sidecar(workdir, config) as sidecar:
        # Unverified: SSLAUTH is not applied (no verified certificate): accepted, no /USER.
        assert await tls_exchange(sidecar.port(), pki.client_context(pki.stranger, stem="s2")) == b"x"


def _plain_config(pki: Pki, port: int, **listener: Any) -> dict[str, Any]:
    config = base_config(pki, port, plaintext="allow", **listener)
    config["profiles"][0]["verify"] = "optional"
    return config


async def _plain_call(port: int, messages: list[bytes], expect: int, pause: float = 0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = bytearray()
    try:
        for message in messages:
            writer.write(message)
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
        while len(received) < expect:
            chunk = await asyncio.wait_for(reader.read(4096), 5)
            if not chunk:
                break
            received.extend(chunk)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return bytes(received)


async def test_plain_and_tls_clients_share_one_port(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    async with Sidecar(workdir, _plain_config(pki, backend.port)) as sidecar:
        assert await _plain_call(sidecar.port(), [b"plain text"], 10) == b"plain text"
        assert await tls_exchange(sidecar.port(), pki.client_context(pki.client), b"tls") == b"tls"
    closes = captured_logs.of("close")
    assert "tls_version" not in closes[0]  # the plain session
    assert closes[1]["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert [bytes(c) for c in backend.connections] == [b"plain text", b"tls"]


async def test_one_byte_then_a_pause_is_not_mistaken_and_loses_nothing(
    pki: Pki, backend: EchoBackend, workdir: Path
) -> None:
    async with Sidecar(workdir, _plain_config(pki, backend.port)) as sidecar:
        assert await _plain_call(sidecar.port(), [b"P", b"eSIT"], 5, pause=0.3) == b"PeSIT"
    assert bytes(backend.connections[0]) == b"PeSIT"


async def test_plaintext_refused_for_a_class_that_requires_encryption(
    pki: Pki, workdir: Path, captured_logs: LogCapture
) -> None:
    echo = EchoBackend()
    port = await echo.start()
    config = _plain_config(pki, port, identify="pesit")
    config["partners"] = [{"id": "PARIS", "nrpart": "PARIS"}, {"id": "LYON", "nrpart": "LYON"}]
    config["user_classes"] = [{"name": "Partners", "user": "PAR*", "address": "127.0.0.0/8"}]
    config["encryption"] = [{"class": "Partners", "encryption": "required"}, {"class": "*", "encryption": "optional"}]
    try:
        async with Sidecar(workdir, config) as sidecar:
            paris = pesit.frame(pesit.encode_connect("PARIS", "SRV", src=9), True)
            assert await _plain_call(sidecar.port(), [paris], 100) == pesit.frame(pesit.encode_rconnect(9, 304), True)
            lyon = pesit.frame(pesit.encode_connect("LYON", "SRV"), True)
            assert await _plain_call(sidecar.port(), [lyon], len(lyon)) == lyon  # optional class: plain is fine
    finally:
        await echo.stop()
    assert [bytes(c) for c in echo.connections] == [lyon]
    close = captured_logs.of("close")[0]
    assert (close["reason"], close["rule"]) == ("encryption_required", "encryption[0]")


async def test_tls_session_satisfies_required_encryption(pki: Pki, backend: EchoBackend, workdir: Path) -> None:
    config = _plain_config(pki, backend.port)
    config["profiles"][0]["verify"] = "required"
    config["user_classes"] = [{"name": "All", "user": "*"}]
    config["encryption"] = [{"class": "All", "encryption": "required"}]
    async with Sidecar(workdir, config) as sidecar:
        assert await tls_exchange(sidecar.port(), pki.client_context(pki.client), b"tls") == b"tls"
        assert await _plain_call(sidecar.port(), [b"plain"], 5) == b""


async def test_plaintext_refuse_closes_non_tls_connections(pki: Pki, backend: EchoBackend, workdir: Path) -> None:
    async with Sidecar(workdir, base_config(pki, backend.port)) as sidecar:
        assert await _plain_call(sidecar.port(), [b"plain"], 5) == b""
    assert backend.connections == []
