"""Live policy (SPEC §8.3): a reload or a time limit reaches sessions that are already relaying."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.testing.echo import EchoBackend
from sidecar.testing.pki import issue, make_crl

from ..conftest import LogCapture
from ..support.env import Pki, Sidecar, hashed_stream, tls_exchange
from .test_admin import admin_config, eventually, get_json, running

LONDON_DN = "/C=GB/O=ACME/OU=London/CN=LONDON"


class Session:
    """One client connection held open: what it sent and received, hashed, and when it was closed."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.closed_at: float | None = None

    @classmethod
    async def open(cls, port: int, context: ssl.SSLContext) -> Session:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
        return cls(reader, writer)

    async def echo(self, payload: bytes) -> bytes:
        self.writer.write(payload)
        await self.writer.drain()
        return await self.reader.readexactly(len(payload))

    async def wait_closed_by_proxy(self, timeout: float) -> float:
        """Read until the proxy ends the stream (close_notify then EOF); return when that happened."""
        async with asyncio.timeout(timeout):
            with contextlib.suppress(ssl.SSLError, ConnectionError):
                while await self.reader.read(65536):
                    pass
        self.closed_at = time.monotonic()
        return self.closed_at

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError, OSError):
            await self.writer.wait_closed()


def two_partners(pki: Pki, backend_port: int) -> tuple[dict[str, Any], ssl.SSLContext, ssl.SSLContext]:
    """PARIS (pki.client) and LONDON, both partners identified by their certificate."""
    config = admin_config(pki, backend_port, identify="certificate")
    config["partners"] = [{"id": "PARIS"}, {"id": "LONDON"}]
    london = issue(pki.root, LONDON_DN)
    return config, pki.client_context(pki.client, stem="paris"), pki.client_context(london, stem="london")


def _sslauth_revoke(workdir: Path, config: dict[str, Any], pki: Pki) -> str:
    (workdir / "sslauth.txt").write_text("* PARIS is no longer welcome\nREVOKE /CN=PARIS\n")
    config["listeners"][0]["sslauth"] = "sslauth.txt"
    return "sslauth.txt:2"


def _crl_listing(workdir: Path, config: dict[str, Any], pki: Pki) -> str:
    (workdir / "partners.crl").write_bytes(make_crl(pki.root, [pki.client.cert.serial_number]))
    config["profiles"][0]["crl"] = ["partners.crl"]
    return "profiles[0].crl"


def _dnuser_change(workdir: Path, config: dict[str, Any], pki: Pki) -> str:
    config["profiles"][0]["dnuser"] = ["O=ACME/OU=London"]
    return "profiles[0].dnuser"


def _partner_removed(workdir: Path, config: dict[str, Any], pki: Pki) -> str | None:
    config["partners"] = [{"id": "LONDON"}]
    return None


REVOCATIONS: list[Callable[[Path, dict[str, Any], Pki], str | None]] = [
    _sslauth_revoke, _crl_listing, _dnuser_change, _partner_removed,
]  # fmt: skip


async def _post_reload(session: aiohttp.ClientSession, sidecar: Sidecar) -> tuple[int, Any]:
    async with session.post(sidecar.url("/reload")) as response:
        return response.status, await response.json()


@pytest.mark.parametrize("revocation", REVOCATIONS, ids=lambda f: f.__name__[1:])
async def test_a_revoked_partner_is_closed_at_the_reload_while_another_transfer_goes_on_intact(
    revocation: Callable[[Path, dict[str, Any], Pki], str | None],
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture,
) -> None:  # fmt: skip
    config, paris, london = two_partners(pki, backend.port)
    async with running(workdir, config) as (sidecar, http):
        port = sidecar.port()
        halfway, reloaded = asyncio.Event(), asyncio.Event()
        size = 512 * 1024
        transfer = asyncio.create_task(hashed_stream(port, london, size, halfway, reloaded))
        revoked = await Session.open(port, paris)
        try:
            assert await revoked.echo(b"before") == b"before"
            async with asyncio.timeout(10):
                await halfway.wait()
            rule = revocation(workdir, config, pki)
            sidecar.write(config)
            assert await _post_reload(http, sidecar) == (200, {"generation": 2})
            answered = time.monotonic()
            reloaded.set()
            closed = await revoked.wait_closed_by_proxy(timeout=5)
            assert closed - answered < 1.0
            async with asyncio.timeout(20):
                assert await transfer is True  # not one byte of the other partner's transfer lost
        finally:
            transfer.cancel()
            await revoked.close()
        await eventually(lambda: not sidecar.runtime.connections)  # type: ignore[union-attr]
        _, stats = await get_json(http, sidecar.url("/stats"))
        assert stats["listeners"]["PESITSSL"]["rejected"] == {"revoked_live": 1}
        assert stats["partners"]["PARIS"]["rejected"] == {"revoked_live": 1}
        assert stats["partners"]["LONDON"]["rejected"] == {}
        async with http.get(sidecar.url("/metrics")) as response:
            families = {f.name: f for f in text_string_to_metric_families(await response.text())}
        closed_samples = [s for s in families["sidecar_connections_closed"].samples
                          if s.labels.get("reason") == "revoked_live"]  # fmt: skip
        assert sum(sample.value for sample in closed_samples) >= 1
    lines = [line for line in captured_logs.of("close") if line.get("reason") == "revoked_live"]
    assert len(lines) == 1
    line = lines[0]
    assert line["decision"] == "reject" and line["partner"] == "PARIS" and line.get("rule") == rule
    assert "CN=PARIS" in str(line["subject"])
    reloaded_line = captured_logs.of("reloaded")[-1]
    assert (reloaded_line["live_rechecked"], reloaded_line["live_revoked"]) == (2, 1)
    # The revoked session's bytes before the reload reached the backend; nothing after it.
    assert bytearray(b"before") in backend.connections


async def test_a_certificate_expiring_during_a_session_closes_it_at_not_after(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    config = admin_config(pki, backend.port)
    not_after = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=3)
    short = issue(pki.root, "/C=US/O=ACME/OU=Paris/CN=PARIS", not_after=not_after)
    async with running(workdir, config) as (sidecar, http):
        session = await Session.open(sidecar.port(), pki.client_context(short, stem="short"))
        try:
            assert await session.echo(b"while valid") == b"while valid"
            _, (live,) = await get_json(http, sidecar.url("/connections"))
            assert 0 < live["closes_in_s"] <= 3  # /connections says when the time limit closes it
            await session.wait_closed_by_proxy(timeout=10)
        finally:
            await session.close()
        closed_wall = dt.datetime.now(dt.UTC)
        assert not_after <= closed_wall < not_after + dt.timedelta(seconds=2)
        await eventually(lambda: not sidecar.runtime.connections)  # type: ignore[union-attr]
        assert sidecar.runtime.stats.listener("PESITSSL").rejected == {"expired_live": 1}  # type: ignore[union-attr]
    [line] = [line for line in captured_logs.of("close") if line.get("reason") == "expired_live"]
    assert "notAfter" in str(line["detail"])


async def test_sessions_of_one_certificate_all_close_at_its_not_after_though_one_ended_before(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    """The sessions of one certificate share their time limit's timer: one of them ending early
    leaves the others' limit armed, and at notAfter every one still open is closed."""
    config = admin_config(pki, backend.port)
    not_after = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=3)
    short = issue(pki.root, "/C=US/O=ACME/OU=Paris/CN=PARIS", not_after=not_after)
    context = pki.client_context(short, stem="shared")
    async with running(workdir, config) as (sidecar, http):
        assert sidecar.runtime is not None
        sessions = [await Session.open(sidecar.port(), context) for _ in range(3)]
        try:
            for session in sessions:
                assert await session.echo(b"while valid") == b"while valid"
            await sessions[0].close()  # ends long before notAfter
            await eventually(lambda: len(sidecar.runtime.connections) == 2)  # type: ignore[union-attr]
            _, listed = await get_json(http, sidecar.url("/connections"))
            assert [0 < live["closes_in_s"] <= 3 for live in listed] == [True, True]
            for session in sessions[1:]:
                await session.wait_closed_by_proxy(timeout=10)
        finally:
            for session in sessions:
                await session.close()
        assert dt.datetime.now(dt.UTC) < not_after + dt.timedelta(seconds=2)
        await eventually(lambda: not sidecar.runtime.connections)  # type: ignore[union-attr]
    reasons = sorted(line["reason"] for line in captured_logs.of("close"))
    assert reasons == ["eof", "expired_live", "expired_live"]


async def test_an_sslauth_window_ending_during_a_session_closes_it_at_the_end_of_etime(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    """/ETIME has minute precision: the proxy's wall clock is moved to 3 s before a minute's end."""
    real = dt.datetime.now().astimezone()
    shift = dt.timedelta(seconds=(57 - real.second) % 60, microseconds=-real.microsecond)
    shifted = real + shift
    rules = f"ACCEPT /CN=PARIS /EDATE={shifted:%Y%m%d} /ETIME={shifted:%H%M}\n"
    (workdir / "sslauth.txt").write_text(rules)
    config = admin_config(pki, backend.port, sslauth="sslauth.txt")
    async with running(workdir, config) as (sidecar, _):
        assert sidecar.runtime is not None
        sidecar.runtime.live.clock = lambda: dt.datetime.now().astimezone() + shift
        session = await Session.open(sidecar.port(), pki.client_context(pki.client))
        started = time.monotonic()
        try:
            assert await session.echo(b"inside the window") == b"inside the window"
            closed = await session.wait_closed_by_proxy(timeout=10)
        finally:
            await session.close()
        assert 1.0 < closed - started < 5.0  # at the minute's end (3 s ahead), not at once
        await eventually(lambda: not sidecar.runtime.connections)  # type: ignore[union-attr]
    [line] = [line for line in captured_logs.of("close") if line.get("reason") == "expired_live"]
    assert line["rule"] == "sslauth.txt:1" and "/ETIME" in str(line["detail"])


async def test_with_live_recheck_off_no_time_limit_ends_a_session(
    pki: Pki, backend: EchoBackend, workdir: Path
) -> None:
    config = admin_config(pki, backend.port, live_recheck=False)
    not_after = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=2)
    short = issue(pki.root, "/C=US/O=ACME/OU=Paris/CN=PARIS", not_after=not_after)
    async with running(workdir, config) as (sidecar, _):
        session = await Session.open(sidecar.port(), pki.client_context(short, stem="short-off"))
        try:
            assert await session.echo(b"valid") == b"valid"
            assert sidecar.runtime is not None
            [conn] = sidecar.runtime.connections.values()
            assert conn.time_limit_timer is None
            await asyncio.sleep((not_after - dt.datetime.now(dt.UTC)).total_seconds() + 0.5)
            assert await session.echo(b"after notAfter") == b"after notAfter"
        finally:
            await session.close()


async def test_a_refused_reload_reaches_no_live_session(pki: Pki, backend: EchoBackend, workdir: Path) -> None:
    config = admin_config(pki, backend.port)
    async with running(workdir, config) as (sidecar, http):
        session = await Session.open(sidecar.port(), pki.client_context(pki.client))
        try:
            assert await session.echo(b"one") == b"one"
            (workdir / "sslauth.txt").write_text("REVOKE /CN=PARIS\nREVOKE /cn=broken\n")
            config["listeners"][0]["sslauth"] = "sslauth.txt"
            sidecar.write(config)
            status, _ = await _post_reload(http, sidecar)
            assert status == 422
            assert await session.echo(b"two") == b"two"
        finally:
            await session.close()
        assert await tls_exchange(sidecar.port(), pki.client_context(pki.client), b"new") == b"new"


async def test_a_session_identified_after_the_reload_is_judged_by_it_before_relaying(
    pki: Pki, workdir: Path, captured_logs: LogCapture
) -> None:
    """PeSIT: TLS done under generation 1, the CONNECT read after a reload that removed the partner.

    Its verdict was taken on the configuration it was accepted under; it is judged again when it
    starts relaying, before the CONNECT is replayed to the backend.
    """
    from sidecar import pesit

    from ..support.pesit_backend import PesitBackend
    from .test_pesit_identification import _config

    backend = PesitBackend()
    config = _config(pki, await backend.start())
    config["partners"].append({"id": "LYON"})
    try:
        async with Sidecar(workdir, config) as sidecar:
            runtime = sidecar.runtime
            assert runtime is not None
            session = await Session.open(sidecar.port(), pki.client_context(pki.client, stem="pesit-late"))
            try:
                await eventually(lambda: any(conn.facts for conn in runtime.connections.values()))
                config["partners"] = [{"id": "LYON"}]
                sidecar.write(config)
                assert (await runtime.reload())[1] == []
                session.writer.write(pesit.frame(pesit.encode_connect("PARIS", "SERVER"), True))
                await session.wait_closed_by_proxy(timeout=5)
            finally:
                await session.close()
            await eventually(lambda: not runtime.connections)
    finally:
        await backend.stop()
    [line] = captured_logs.of("close")
    assert (line["reason"], line["partner"]) == ("revoked_live", "PARIS")
    assert all(not received for received in backend.received)  # not a byte of the CONNECT replayed


async def test_an_outbound_session_is_closed_when_its_client_profile_no_longer_accepts_the_server(
    pki: Pki, workdir: Path, captured_logs: LogCapture
) -> None:
    from .test_outbound import TlsPartner, outbound_config

    server = issue(pki.root, "/C=FR/O=ACME/OU=Transfer/CN=paris.example", server=True, client=False)
    partner = TlsPartner(pki, server)
    config = outbound_config(pki, await partner.start())
    try:
        async with Sidecar(workdir, config) as sidecar:
            runtime = sidecar.runtime
            assert runtime is not None
            local = int(runtime.bound_outbound["TOPARIS"].rsplit(":", 1)[1])
            reader, writer = await asyncio.open_connection("127.0.0.1", local)
            try:
                writer.write(b"out")
                assert await reader.readexactly(3) == b"out"
                config["listeners"] = [{"id": "UNRELATED"}]  # a reload that leaves the client profile alone
                sidecar.write(config)
                assert (await runtime.reload())[1] == []
                writer.write(b"still")
                assert await reader.readexactly(5) == b"still"
                config["profiles"][1]["dnuser"] = ["OU=Lyon"]
                sidecar.write(config)
                assert (await runtime.reload())[1] == []
                async with asyncio.timeout(5):
                    assert await reader.read() == b""
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
            await eventually(lambda: not runtime.connections)
    finally:
        await partner.stop()
    [line] = captured_logs.of("close")
    assert (line["reason"], line["rule"], line["outbound"]) == ("revoked_live", "profiles[1].dnuser", "TOPARIS")
    assert runtime.stats.outbound_entry("TOPARIS").rejected == {"revoked_live": 1}
    assert [r["live_rechecked"] for r in captured_logs.of("reloaded")] == [0, 1]


async def test_a_reload_that_leaves_the_policy_alone_judges_nobody_again(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    """A renewed server certificate (cert-manager, watch mode) changes no verdict: no session is judged."""
    config = admin_config(pki, backend.port)
    async with running(workdir, config) as (sidecar, http):
        assert sidecar.runtime is not None
        session = await Session.open(sidecar.port(), pki.client_context(pki.client))
        try:
            assert await session.echo(b"one") == b"one"
            [conn] = sidecar.runtime.connections.values()
            timer = conn.time_limit_timer
            assert timer is not None  # the client certificate's notAfter
            renewed = issue(pki.root, "/C=FR/O=ACME/CN=localhost", server=True, client=False)
            cert_path, key_path = renewed.write(workdir, "server-renewed")
            config["pki"]["SRVCERT"] = {"cert": str(cert_path), "key": str(key_path)}
            sidecar.write(config)
            assert await _post_reload(http, sidecar) == (200, {"generation": 2})
            assert conn.time_limit_timer is timer
            assert await session.echo(b"two") == b"two"
        finally:
            await session.close()
    reloaded = captured_logs.of("reloaded")[-1]
    assert (reloaded["live_rechecked"], reloaded["live_revoked"]) == (0, 0)
