"""The admin endpoint over real HTTP, in front of a Runtime that serves real mutual TLS."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.admin import start_admin
from sidecar.config import Address, Admin
from sidecar.runtime import Runtime
from sidecar.snapshot import load_snapshot
from sidecar.testing.echo import EchoBackend
from sidecar.testing.pki import issue

from ..conftest import LogCapture
from ..support.env import Pki, Sidecar, base_config, tls_exchange

TOKEN = "s3cret-admin-token-0123456789"


def admin_config(pki: Pki, backend_port: int, **listener: Any) -> dict[str, Any]:
    config = base_config(pki, backend_port, **listener)
    config["admin"] = {"listen": "127.0.0.1:0"}
    return config


@contextlib.asynccontextmanager
async def running(workdir: Path, config: dict[str, Any]) -> AsyncIterator[tuple[Sidecar, aiohttp.ClientSession]]:
    async with Sidecar(workdir, config) as sidecar, aiohttp.ClientSession() as session:
        yield sidecar, session


async def get_json(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with session.get(url, **kwargs) as response:
        return response.status, await response.json()


async def eventually(condition: Callable[[], bool], timeout: float = 5) -> None:
    """Counters move when the proxy's task runs, which may be just after the client saw the outcome."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_every_route_answers_with_its_shape(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    async with running(workdir, admin_config(pki, backend.port)) as (sidecar, session):
        assert sidecar.admin is not None
        host, port = sidecar.admin.address.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        # The real admin address is in the `ready` line, next to the listeners'.
        ready = captured_logs.of("ready")
        assert ready and ready[0]["admin"] == sidecar.admin.address

        assert await get_json(session, sidecar.url("/healthz")) == (200, {"status": "ok"})
        assert await get_json(session, sidecar.url("/readyz")) == (200, {"status": "ready"})

        status, stats = await get_json(session, sidecar.url("/stats"))
        assert status == 200
        assert set(stats) == {"uptime_s", "generation", "listeners", "partners", "outbound", "reloads"}
        assert stats["generation"] == 1 and stats["uptime_s"] >= 0
        assert stats["reloads"] == {"ok": 0, "refused": 0}
        # A configured listener is listed before it saw any traffic.
        assert stats["listeners"]["PESITSSL"]["accepted"] == 0
        assert set(stats["listeners"]["PESITSSL"]) >= {"accepted", "active", "rejected", "handshake_failures"}

        async with session.get(sidecar.url("/metrics")) as response:
            assert response.status == 200
            assert response.content_type == "text/plain"
            names = {family.name for family in text_string_to_metric_families(await response.text())}
        assert {"sidecar_connections_accepted", "sidecar_config_generation", "sidecar_uptime_seconds"} <= names

        assert await get_json(session, sidecar.url("/connections")) == (200, [])

        async with session.post(sidecar.url("/reload")) as response:
            assert (response.status, await response.json()) == (200, {"generation": 2})

        # Mutations are POST only; unknown routes are JSON errors too.
        status, body = await get_json(session, sidecar.url("/reload"))
        assert status == 405 and body == {"error": "Method Not Allowed"}
        status, body = await get_json(session, sidecar.url("/nope"))
        assert status == 404 and body == {"error": "Not Found"}


@pytest.mark.parametrize("route", ["/healthz", "/readyz", "/stats", "/metrics", "/connections", "/nope"])
async def test_token_is_required_on_every_route(route: str, pki: Pki, backend: EchoBackend, workdir: Path) -> None:
    (workdir / "token").write_text(TOKEN + "\n")
    config = admin_config(pki, backend.port)
    config["admin"]["token_file"] = "token"
    async with running(workdir, config) as (sidecar, session):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                        {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer é"}):  # fmt: skip
            async with session.get(sidecar.url(route), headers=headers) as response:
                assert response.status == 401, headers
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
                assert await response.json() == {"error": "unauthorized"}
        async with session.get(sidecar.url(route), headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            assert response.status == (404 if route == "/nope" else 200)


async def test_reload_without_the_token_changes_nothing(pki: Pki, backend: EchoBackend, workdir: Path) -> None:
    (workdir / "token").write_text(TOKEN)
    config = admin_config(pki, backend.port)
    config["admin"]["token_file"] = str(workdir / "token")
    async with running(workdir, config) as (sidecar, session):
        assert sidecar.runtime is not None
        async with session.post(sidecar.url("/reload")) as response:
            assert response.status == 401
        assert sidecar.runtime.snapshot.generation == 1
        async with session.post(sidecar.url("/reload"), headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            assert await response.json() == {"generation": 2}


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_metrics_count_real_connections_with_bounded_labels(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    lyon = issue(pki.root, "/C=FR/O=ACME/OU=Lyon/CN=LYON")
    (workdir / "sslauth.txt").write_text("REVOKE /CN=LYON\n")
    async with running(workdir, admin_config(pki, backend.port, sslauth="sslauth.txt")) as (sidecar, session):
        assert sidecar.runtime is not None
        assert await tls_exchange(sidecar.port(), pki.client_context(pki.client), b"hello") == b"hello"
        assert await tls_exchange(sidecar.port(), pki.client_context(lyon, stem="lyon")) is None
        assert await tls_exchange(sidecar.port(), pki.client_context(None)) is None  # verify: required
        counters = sidecar.runtime.stats.listener("PESITSSL")
        await eventually(lambda: counters.active == 0 and sum(counters.handshake_failures.values()) == 1)
        (kind,) = counters.handshake_failures  # how a missing certificate is classified is the engine's call

        async with session.get(sidecar.url("/metrics")) as response:
            text = await response.text()
        samples = _samples(text)
        listener = ("listener", "PESITSSL")
        assert samples[("sidecar_connections_accepted_total", (listener,))] == 1
        assert samples[("sidecar_connections_active", (listener,))] == 0
        assert samples[("sidecar_connections_rejected_total", (listener, ("reason", "sslauth")))] == 1
        assert samples[("sidecar_handshake_failures_total", (("kind", kind), listener))] == 1
        # Only relayed bytes count: the refused client's byte never reached the backend.
        assert samples[("sidecar_bytes_total", (("direction", "up"), listener))] == counters.bytes_up == 5
        assert samples[("sidecar_bytes_total", (("direction", "down"), listener))] == 5
        assert samples[("sidecar_config_generation", ())] == 1
        assert samples[("sidecar_reloads_total", (("result", "refused"),))] == 0
        assert samples[("sidecar_ready", ())] == 1
        # Two handshakes completed (the accepted one and the one SSLAUTH refused); the third failed.
        assert samples[("sidecar_handshake_duration_seconds_count", (listener,))] == 2
        assert samples[("sidecar_handshake_duration_seconds_bucket", (("le", "+Inf"), listener))] == 2
        assert 0 < samples[("sidecar_handshake_duration_seconds_sum", (listener,))] < 10
        # Every close line is counted under the very word it logs as its reason.
        reasons = Counter(str(line["reason"]) for line in captured_logs.of("close"))
        assert sum(reasons.values()) == 3
        for reason, count in reasons.items():
            assert samples[("sidecar_connections_closed_total", (listener, ("reason", reason)))] == count

        # Labels come from closed sets: never a DN, a serial or an address.
        for name, labels in samples:
            for key, value in labels:
                assert key in {"listener", "partner", "outbound", "reason", "kind", "direction", "result", "le",
                               "pki_id", "file", "version", "openssl", "python"}, name  # fmt: skip
                assert "=" not in value and "127.0.0.1" not in value and "PARIS" not in value and "LYON" not in value

        _, stats = await get_json(session, sidecar.url("/stats"))
        entry = stats["listeners"]["PESITSSL"]
        assert (entry["accepted"], entry["rejected"], entry["handshake_failures"]) == (1, {"sslauth": 1}, {kind: 1})
        assert (entry["bytes_up"], entry["bytes_down"]) == (counters.bytes_up, 5)


@contextlib.asynccontextmanager
async def held_connection(port: int, context: ssl.SSLContext) -> AsyncIterator[asyncio.StreamWriter]:
    """A TLS connection through the proxy, proven relayed (one echo), held open until the block ends."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
    try:
        writer.write(b"hello")
        await writer.drain()
        assert await reader.readexactly(5) == b"hello"
        yield writer
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()


async def test_connections_lists_a_live_connection(pki: Pki, backend: EchoBackend, workdir: Path) -> None:
    async with running(workdir, admin_config(pki, backend.port)) as (sidecar, session):
        tls13 = (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3)
        async with held_connection(sidecar.port(), pki.client_context(pki.client, tls=tls13)) as writer:
            local = writer.get_extra_info("sockname")
            status, listed = await get_json(session, sidecar.url("/connections"))
            assert status == 200 and len(listed) == 1
            live = listed[0]
            assert live["listener"] == "PESITSSL"
            assert live["peer"] == f"{local[0]}:{local[1]}"
            assert live["subject"] == "/C=US/ST=NY/L=New York/O=ACME/OU=Paris/CN=PARIS"
            assert live["verified"] is True
            assert live["tls_version"] == "TLSv1.3" and live["cipher"].startswith("TLS_")
            assert (live["bytes_up"], live["bytes_down"]) == (5, 5)
            assert isinstance(live["id"], int) and live["age_s"] >= 0
            _, stats = await get_json(session, sidecar.url("/stats"))
            assert stats["listeners"]["PESITSSL"]["active"] == 1
        runtime = sidecar.runtime
        assert runtime is not None
        await eventually(lambda: not runtime.connections)
        assert await get_json(session, sidecar.url("/connections")) == (200, [])


async def test_readyz_answers_503_during_the_drain(pki: Pki, backend: EchoBackend, workdir: Path) -> None:
    async with running(workdir, admin_config(pki, backend.port)) as (sidecar, session):
        runtime = sidecar.runtime
        assert runtime is not None
        async with held_connection(sidecar.port(), pki.client_context(pki.client)):
            drain = asyncio.create_task(runtime.stop(drain_timeout=10))
            await eventually(lambda: runtime.draining)
            assert await get_json(session, sidecar.url("/readyz")) == (503, {"status": "draining"})
            assert await get_json(session, sidecar.url("/healthz")) == (200, {"status": "ok"})
            async with session.post(sidecar.url("/reload")) as response:
                assert response.status == 422
                assert "shutting down" in (await response.json())["errors"][0]
            _, listed = await get_json(session, sidecar.url("/connections"))
            assert len(listed) == 1  # still draining: the held connection is alive
            assert not drain.done()
        # The client hung up: the drain ends well before its timeout.
        await asyncio.wait_for(drain, 5)
        assert await get_json(session, sidecar.url("/readyz")) == (503, {"status": "draining"})


async def test_admin_port_in_use_is_an_oserror(pki: Pki, backend: EchoBackend, workdir: Path) -> None:
    runtime = Runtime(
        workdir / "unused.yaml", load_snapshot(Sidecar(workdir, base_config(pki, backend.port)).config_path)
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            await start_admin(runtime, Admin(listen=Address("127.0.0.1", taken.getsockname()[1])))
    assert runtime.admin_address is None


async def test_backend_check_drives_readiness_and_stats(pki: Pki, workdir: Path, captured_logs: LogCapture) -> None:
    with socket.socket() as probe:  # a port nothing listens on yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = admin_config(pki, port, backend_check=0.1)
    async with running(workdir, config) as (sidecar, session):
        assert sidecar.runtime is not None

        async def ready() -> tuple[int, Any]:
            return await get_json(session, sidecar.url("/readyz"))

        async with asyncio.timeout(5):
            while (await ready())[1].get("status") != "backend_down":
                await asyncio.sleep(0.05)
        assert await ready() == (503, {"status": "backend_down", "listeners": ["PESITSSL"]})
        _, stats = await get_json(session, sidecar.url("/stats"))
        assert stats["listeners"]["PESITSSL"]["backend_up"] is False
        # Known down: the session is refused at once, without a dial.
        assert await tls_exchange(sidecar.port(), pki.client_context(pki.client)) is None
        await eventually(lambda: bool(captured_logs.of("close")))
        close = captured_logs.of("close")[0]
        assert close["reason"] == "backend_unreachable" and "backend_check" in str(close["detail"])

        echo = EchoBackend()
        echo.server = await asyncio.start_server(echo._serve, "127.0.0.1", port)
        try:
            async with asyncio.timeout(5):
                while (await ready())[0] != 200:
                    await asyncio.sleep(0.05)
            _, stats = await get_json(session, sidecar.url("/stats"))
            assert stats["listeners"]["PESITSSL"]["backend_up"] is True
            assert await tls_exchange(sidecar.port(), pki.client_context(pki.client), b"up") == b"up"
        finally:
            await echo.stop()
    # Down, then up; the backend stopped before the sidecar may add one more `backend_down` at the end.
    changes = [event["event"] for event in captured_logs.events if str(event["event"]).startswith("backend_")]
    assert changes[:2] == ["backend_down", "backend_up"] and "backend_up" not in changes[2:]
