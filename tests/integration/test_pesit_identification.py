"""PeSIT identification (identify: pesit) with a PeSIT-speaking backend, and partner checks."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from pathlib import Path
from typing import Any

import pytest

from sidecar import pesit
from sidecar.admin import counters_now

from ..conftest import LogCapture
from ..support.env import Pki, Sidecar, base_config
from ..support.pesit_backend import PesitBackend
from .test_admin import eventually


@pytest.fixture
async def pesit_backend() -> Any:
    backend = PesitBackend()
    await backend.start()
    yield backend
    await backend.stop()


def _config(pki: Pki, port: int, **partner: Any) -> dict[str, Any]:
    config = base_config(pki, port, identify="pesit")
    config["partners"] = [{"id": "PARIS", "nrpart": "PARIS", **partner}]
    return config


async def _call(port: int, pki: Pki, messages: list[bytes], expect: int) -> bytes:
    """Send each message, return what came back (up to `expect` bytes or EOF)."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=pki.client_context(pki.client, stem="pesit"), server_hostname="localhost"
    )
    received = bytearray()
    try:
        for message in messages:
            writer.write(message)
        while len(received) < expect:
            chunk = await asyncio.wait_for(reader.read(4096), 5)
            if not chunk:
                break
            received.extend(chunk)
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()
    return bytes(received)


LOGON = pesit.frame(pesit.encode_logon("PESIT", "PARIS", "LOGONPW"), True)
ACK = pesit.frame(pesit.ACK0, True)


@pytest.mark.parametrize("framed", [True, False])
@pytest.mark.parametrize("with_logon", [True, False])
async def test_known_partner_reaches_the_backend_with_the_original_bytes(
    framed: bool, with_logon: bool, pki: Pki, pesit_backend: PesitBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    port = pesit_backend.server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    sidecar = Sidecar(workdir, _config(pki, port, nrpassw="NYPASSW"))
    await sidecar.start()
    connect = pesit.frame(pesit.encode_connect("PARIS", "SERVER", password="NYPASSW"), framed)
    messages = ([LOGON] if with_logon and framed else []) + [connect, b"payload"]
    aconnect = pesit.frame(pesit.encode_aconnect(5, 1), framed)
    expected = (ACK if with_logon and framed else b"") + aconnect + b"payload"
    try:
        answer = await _call(sidecar.port(), pki, messages, len(expected))
    finally:
        await sidecar.stop()
    assert answer == expected
    assert bytes(pesit_backend.received[0]) == b"".join(messages)
    close = captured_logs.of("close")[0]
    assert (close["decision"], close["partner"]) == ("accept", "PARIS")


@pytest.mark.parametrize(("partner", "password"), [("NOBODY", None), ("PARIS", "WRONG")])
async def test_unknown_partner_or_bad_password_gets_rconnect_301(
    partner: str, password: str | None, pki: Pki, pesit_backend: PesitBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    port = pesit_backend.server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with Sidecar(workdir, _config(pki, port, nrpassw="NYPASSW")) as sidecar:
        connect = pesit.frame(pesit.encode_connect(partner, "SERVER", password=password, src=7), True)
        answer = await _call(sidecar.port(), pki, [connect], 100)
    assert answer == pesit.frame(pesit.encode_rconnect(7, 301), True)
    assert pesit_backend.received == []  # the backend never saw a connection
    msg_ids = [event["msg_id"] for event in captured_logs.of("cft")]
    assert msg_ids == (["CFTT15E"] if partner == "NOBODY" else ["CFTH22E"])


async def test_partner_profile_dnuser_mismatch_gets_rconnect_304_and_cftt48e(
    pki: Pki, pesit_backend: PesitBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    port = pesit_backend.server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    config = _config(pki, port, ssl="SSLPARIS")
    config["profiles"].append({"id": "SSLPARIS", "direct": "server", "dnuser": "OU=Lyon"})
    async with Sidecar(workdir, config) as sidecar:
        answer = await _call(sidecar.port(), pki, [pesit.frame(pesit.encode_connect("PARIS", "SRV"), False)], 100)
    assert answer == pesit.encode_rconnect(5, 304)
    assert pesit_backend.received == []
    cft = captured_logs.of("cft")
    assert cft[0]["msg_id"] == "CFTT48E"
    assert cft[0]["msg"] == "CFTT48E _ Server Session rejected reason=DNUSER <PART=PARIS SSL=SSLPARIS>"


async def test_missing_partner_profile_logs_cftt47w_and_passes(
    pki: Pki, pesit_backend: PesitBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    port = pesit_backend.server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    sidecar = Sidecar(workdir, _config(pki, port, ssl="NOSUCH"))
    await sidecar.start()
    connect = pesit.frame(pesit.encode_connect("PARIS", "SRV"), True)
    try:
        answer = await _call(sidecar.port(), pki, [connect], len(pesit.frame(pesit.encode_aconnect(5, 1), True)))
    finally:
        await sidecar.stop()
    assert answer == pesit.frame(pesit.encode_aconnect(5, 1), True)
    cft = captured_logs.of("cft")
    assert (
        cft[0]["msg"]
        == "CFTT47W _ No SSL security profile for additional checks <PART=PARIS SSLID=NOSUCH DIRECT=SERVER>"
    )


async def test_missing_partner_profile_rejected_when_configured(
    pki: Pki, pesit_backend: PesitBackend, workdir: Path
) -> None:
    port = pesit_backend.server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    config = _config(pki, port, ssl="NOSUCH")
    config["listeners"][0]["missing_partner_profile"] = "reject"
    async with Sidecar(workdir, config) as sidecar:
        answer = await _call(sidecar.port(), pki, [pesit.frame(pesit.encode_connect("PARIS", "S"), True)], 100)
    assert answer == pesit.frame(pesit.encode_rconnect(5, 304), True)


@pytest.mark.parametrize("rule", [{"prot": ["OTHER"]}, {"host": ["10.9.8.7"], "host_verify": 4}])
async def test_prot_and_host_verify_refusals(
    rule: dict[str, Any], pki: Pki, pesit_backend: PesitBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    port = pesit_backend.server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    config = _config(pki, port, **rule)
    config["listeners"].append({"id": "OTHER", "ssl": "SSLSRV"})  # requester-only: binds nothing
    async with Sidecar(workdir, config) as sidecar:
        answer = await _call(sidecar.port(), pki, [pesit.frame(pesit.encode_connect("PARIS", "S"), True)], 100)
    assert answer == pesit.frame(pesit.encode_rconnect(5, 304), True)
    assert captured_logs.of("close")[0]["reason"] == ("prot" if "prot" in rule else "host")
    assert captured_logs.of("cft")[0]["msg_id"] == ("CFTT10E" if "prot" in rule else "CFTH22E")
    assert pesit_backend.received == []


async def test_client_that_never_sends_connect_is_closed_at_the_deadline(
    pki: Pki, pesit_backend: PesitBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    port = pesit_backend.server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    config = _config(pki, port)
    config["limits"]["handshake_timeout"] = 0.5
    async with Sidecar(workdir, config) as sidecar:
        answer = await _call(sidecar.port(), pki, [LOGON], 100)  # LOGON acknowledged, then silence
    assert answer == ACK
    assert captured_logs.of("close")[0]["reason"] == "identification_timeout"
    assert pesit_backend.received == []


@pytest.mark.parametrize("how", ["close_notify", "reset"])
async def test_client_that_leaves_before_its_connect_is_refused_at_once(
    how: str, pki: Pki, pesit_backend: PesitBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    """A partner that sends its LOGON and goes away (cleanly or not) is refused as soon as it has
    gone, not at the identification deadline; the backend never hears of it."""
    port = pesit_backend.server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with Sidecar(workdir, _config(pki, port)) as sidecar:  # handshake_timeout 5 s
        runtime = sidecar.runtime
        assert runtime is not None
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", sidecar.port(), ssl=pki.client_context(pki.client, stem="leaves"), server_hostname="localhost"
        )
        writer.write(LOGON)
        assert await asyncio.wait_for(reader.readexactly(len(ACK)), 5) == ACK
        began = asyncio.get_running_loop().time()
        if how == "reset":
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        else:
            writer.close()
            with contextlib.suppress(ssl.SSLError, ConnectionError):
                await writer.wait_closed()
        await eventually(lambda: not runtime.connections, timeout=5)
        assert asyncio.get_running_loop().time() - began < 2
    close = captured_logs.of("close")[0]
    assert (close["reason"], close["detail"]) == ("protocol", "connection closed before the PeSIT CONNECT")
    assert pesit_backend.received == []


async def test_backend_nak0_is_passed_to_the_client(pki: Pki, workdir: Path) -> None:
    backend = PesitBackend(refuse_logon=True)
    port = await backend.start()
    sidecar = Sidecar(workdir, _config(pki, port))
    await sidecar.start()
    try:
        connect = pesit.frame(pesit.encode_connect("PARIS", "S"), True)
        answer = await _call(sidecar.port(), pki, [LOGON, connect], 100)
    finally:
        await sidecar.stop()
        await backend.stop()
    assert answer == ACK + pesit.frame(pesit.NAK0, True)


async def test_a_client_gone_while_the_backend_is_dialled_ends_the_backend_connection_too(
    pki: Pki, workdir: Path, captured_logs: LogCapture
) -> None:
    """The client leaves while the proxy replays its LOGON to a slow backend: once the backend
    answers, its connection is closed at once — not left open until the idle timeout."""
    backend = PesitBackend(logon_delay=0.5)
    port = await backend.start()
    connect = pesit.frame(pesit.encode_connect("PARIS", "SERVER"), True)
    try:
        async with Sidecar(workdir, _config(pki, port)) as sidecar:  # idle_timeout 30 s
            runtime = sidecar.runtime
            assert runtime is not None
            reader, writer = await asyncio.open_connection(
                "127.0.0.1",
                sidecar.port(),
                ssl=pki.client_context(pki.client, stem="gone"),
                server_hostname="localhost",
            )
            writer.write(LOGON + connect)
            assert await asyncio.wait_for(reader.readexactly(len(ACK)), 5) == ACK  # the proxy's own ACK0
            await eventually(lambda: len(backend.received) == 1)  # the backend is being dialled
            # A reset, not a FIN (which the proxy would pass on as an EOF): the client is just gone.
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            await eventually(lambda: not runtime.connections and len(backend.ended) == 1, timeout=5)
    finally:
        await backend.stop()
    close = captured_logs.of("close")[0]
    assert (close["decision"], close["reason"], close["partner"]) == ("accept", "reset", "PARIS")


async def test_identify_certificate_uses_the_verified_cn(pki: Pki, workdir: Path, captured_logs: LogCapture) -> None:
    backend = PesitBackend()
    port = await backend.start()
    config = base_config(pki, port, identify="certificate")
    config["partners"] = [{"id": "LYON", "nrpart": "LYON"}]
    sidecar = Sidecar(workdir, config)
    await sidecar.start()
    try:
        answer = await _call(sidecar.port(), pki, [b"hello"], 100)
    finally:
        await sidecar.stop()
        await backend.stop()
    assert answer == b""
    assert captured_logs.of("close")[0]["reason"] == "unknown_partner"


async def test_unreachable_backend_answers_rconnect_302(pki: Pki, workdir: Path, captured_logs: LogCapture) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    async with Sidecar(workdir, _config(pki, port)) as sidecar:
        connect = pesit.frame(pesit.encode_connect("PARIS", "SERVER", src=9), True)
        answer = await _call(sidecar.port(), pki, [connect], 100)
    assert answer == pesit.frame(pesit.encode_rconnect(9, 302), True)
    close = captured_logs.of("close")[0]
    assert (close["decision"], close["reason"], close["partner"]) == ("error", "backend_unreachable", "PARIS")
    stats = sidecar.runtime.stats  # type: ignore[union-attr]
    assert stats.listener("PESITSSL").errors == {"backend_unreachable": 1}
    assert stats.partner("PARIS").closed == {"backend_unreachable": 1} and stats.partner("PARIS").active == 0


async def test_byte_counters_grow_while_a_session_relays_and_count_only_relayed_bytes(
    pki: Pki, pesit_backend: PesitBackend, workdir: Path
) -> None:
    port = pesit_backend.server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    sidecar = Sidecar(workdir, _config(pki, port))
    runtime = await sidecar.start()
    connect = pesit.frame(pesit.encode_connect("PARIS", "SERVER"), True)
    aconnect = pesit.frame(pesit.encode_aconnect(5, 1), True)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", sidecar.port(), ssl=pki.client_context(pki.client, stem="live"), server_hostname="localhost"
    )
    try:
        writer.write(LOGON)
        assert await asyncio.wait_for(reader.readexactly(len(ACK)), 5) == ACK  # the proxy's own ACK0
        writer.write(connect + b"x" * 1000)
        expected = aconnect + b"x" * 1000
        assert await asyncio.wait_for(reader.readexactly(len(expected)), 5) == expected
        # Still open: the counters already show what was relayed, and the partner's session is active.
        now = counters_now(runtime)
        listener, partner = now["listeners"]["PESITSSL"], now["partners"]["PARIS"]
        up = len(LOGON) + len(connect) + 1000  # LOGON and CONNECT were relayed (replayed) to the backend
        down = len(aconnect) + 1000  # the backend's ACK0 to the replayed LOGON stays with the proxy
        assert (listener.bytes_up, listener.bytes_down) == (up, down)
        assert (partner.bytes_up, partner.bytes_down, partner.active) == (up, down, 1)
        assert runtime.stats.listener("PESITSSL").bytes_up == 0  # nothing added to the totals until it ends
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()
    for _ in range(200):
        if not runtime.connections:
            break
        await asyncio.sleep(0.01)
    await sidecar.stop()
    ended = counters_now(runtime)["partners"]["PARIS"]
    assert (ended.bytes_up, ended.bytes_down, ended.active) == (up, down, 0)
    # A refused session's bytes are not counted.
    sidecar = Sidecar(workdir, _config(pki, port, nrpassw="secret"))
    runtime = await sidecar.start()
    try:
        await _call(sidecar.port(), pki, [LOGON, connect], 100)
    finally:
        await sidecar.stop()
    refused = runtime.stats.listener("PESITSSL")
    assert (refused.bytes_up, refused.bytes_down, refused.rejected["bad_password"]) == (0, 0, 1)
