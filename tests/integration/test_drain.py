"""Stopping: live connections may finish by themselves within `drain_timeout`; past it the proxy
closes whatever is left — relayed sessions (which have no task) and connections still in their
handshake alike — and each one's close line and counter say `shutdown`."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from sidecar.testing.echo import EchoBackend

from ..conftest import LogCapture
from ..support.env import Pki, Sidecar, base_config
from .test_admin import eventually


async def _closed_by_peer(reader: asyncio.StreamReader) -> bool:
    with contextlib.suppress(ConnectionError):
        return await asyncio.wait_for(reader.read(), 5) == b""
    return True


async def test_a_drain_out_of_time_closes_what_is_left_as_shutdown(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    sidecar = Sidecar(workdir, base_config(pki, backend.port))  # handshake_timeout 5 s
    runtime = await sidecar.start()
    relayed_reader, relayed = await asyncio.open_connection(
        "127.0.0.1", sidecar.port(), ssl=pki.client_context(pki.client), server_hostname="localhost"
    )
    silent_reader, silent = await asyncio.open_connection("127.0.0.1", sidecar.port())  # never says hello
    try:
        relayed.write(b"ping")
        assert await relayed_reader.readexactly(4) == b"ping"
        await eventually(lambda: len(runtime.connections) == 2)
        loop = asyncio.get_running_loop()
        began = loop.time()
        await runtime.stop(drain_timeout=0.5)
        assert loop.time() - began < 3  # not the handshake timeout, not the idle timeout
        assert await _closed_by_peer(relayed_reader) and await _closed_by_peer(silent_reader)
    finally:
        for writer in (relayed, silent):
            writer.transport.abort()
        await sidecar.stop()
    assert not runtime.connections
    assert sorted(close["reason"] for close in captured_logs.of("close")) == ["shutdown", "shutdown"]
    counters = runtime.stats.listener("PESITSSL")
    assert counters.closed["shutdown"] == 2 and counters.active == 0
    relayed_close = next(close for close in captured_logs.of("close") if close.get("tls_version"))
    assert relayed_close["bytes_up"] == 4 and relayed_close["bytes_down"] == 4


async def test_a_drain_ends_as_soon_as_the_last_session_ends(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    async with Sidecar(workdir, base_config(pki, backend.port)) as sidecar:
        runtime = sidecar.runtime
        assert runtime is not None
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", sidecar.port(), ssl=pki.client_context(pki.client), server_hostname="localhost"
        )
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        drain = asyncio.create_task(runtime.stop(drain_timeout=30))
        await eventually(lambda: runtime.draining)
        await asyncio.sleep(0.2)
        assert not drain.done()  # the session is still relaying
        writer.close()
        await asyncio.wait_for(drain, 5)  # ends with it, long before the drain timeout
    assert [close["reason"] for close in captured_logs.of("close")] == ["eof"]
