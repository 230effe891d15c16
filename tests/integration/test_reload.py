"""Reload: build a whole new configuration, swap it; refuse a bad one and keep serving the old one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from sidecar.testing.echo import EchoBackend
from sidecar.testing.pki import Issued, issue

from ..conftest import LogCapture
from ..support.env import Pki, Sidecar, base_config, hashed_stream, tls_exchange
from .test_admin import TOKEN, admin_config, get_json, running

SIDECAR = [sys.executable, "-m", "sidecar"]


def _der(issued: Issued) -> bytes:
    return issued.cert.public_bytes(serialization.Encoding.DER)


def _new_server_cert(pki: Pki, workdir: Path, config: dict[str, Any]) -> Issued:
    """A second server certificate, written next to the config and named by SRVCERT."""
    server = issue(pki.root, "/C=FR/O=ACME/CN=localhost", server=True, client=False)
    cert_path, key_path = server.write(workdir, "server-2")
    config["pki"]["SRVCERT"] = {"cert": str(cert_path), "key": str(key_path)}
    return server


async def _peer_certificate(port: int, context: ssl.SSLContext) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
    try:
        writer.write(b"ping")
        await writer.drain()
        assert await reader.readexactly(4) == b"ping"
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert isinstance(der, bytes)
        return der
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()


async def _post_reload(session: aiohttp.ClientSession, sidecar: Sidecar) -> tuple[int, Any]:
    async with session.post(sidecar.url("/reload")) as response:
        return response.status, await response.json()


async def test_reload_swaps_the_server_certificate(pki: Pki, backend: EchoBackend, workdir: Path) -> None:
    config = admin_config(pki, backend.port)
    async with running(workdir, config) as (sidecar, session):
        context = pki.client_context(pki.client)
        assert await _peer_certificate(sidecar.port(), context) == _der(pki.server)
        server = _new_server_cert(pki, workdir, config)
        sidecar.write(config)
        assert await _post_reload(session, sidecar) == (200, {"generation": 2})
        assert await _peer_certificate(sidecar.port(), context) == _der(server)
        _, stats = await get_json(session, sidecar.url("/stats"))
        assert stats["generation"] == 2 and stats["reloads"] == {"ok": 1, "refused": 0}


async def test_a_reload_logs_the_warnings_of_the_new_configuration(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    config = base_config(pki, backend.port)
    async with Sidecar(workdir, config) as sidecar:
        assert sidecar.runtime is not None
        assert not captured_logs.of("config_warning")
        config["pki_warn_days"] = 3000  # every certificate now ends "soon"
        sidecar.write(config)
        assert await sidecar.runtime.reload() == (2, [])
    warnings = captured_logs.of("config_warning")
    assert warnings and all(event["path"].startswith("pki.") for event in warnings)  # type: ignore[union-attr]
    events = [event["event"] for event in captured_logs.events]
    assert events.index("reloaded") < events.index("config_warning")


async def test_with_live_recheck_off_a_revoke_refuses_new_connections_but_not_live_ones(
    pki: Pki, backend: EchoBackend, workdir: Path
) -> None:
    config = admin_config(pki, backend.port, live_recheck=False)
    async with running(workdir, config) as (sidecar, session):
        context = pki.client_context(pki.client)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", sidecar.port(), ssl=context, server_hostname="localhost"
        )
        try:
            writer.write(b"before")
            assert await reader.readexactly(6) == b"before"

            (workdir / "sslauth.txt").write_text("* PARIS is no longer welcome\nREVOKE /CN=PARIS\n")
            config["listeners"][0]["sslauth"] = "sslauth.txt"
            sidecar.write(config)
            assert await _post_reload(session, sidecar) == (200, {"generation": 2})

            assert await tls_exchange(sidecar.port(), context, b"after") is None
            # `live_recheck: false`: the connection accepted under generation 1 keeps its
            # configuration and flows both ways (live_policy tests the default).
            writer.write(b"still here")
            await writer.drain()
            assert await reader.readexactly(10) == b"still here"
        finally:
            writer.close()
            with contextlib.suppress(ssl.SSLError, ConnectionError):
                await writer.wait_closed()
        _, stats = await get_json(session, sidecar.url("/stats"))
        assert stats["listeners"]["PESITSSL"]["rejected"] == {"sslauth": 1}
    assert backend.connections[0] == bytearray(b"beforestill here")


def _bad_yaml(workdir: Path, config: dict[str, Any], sidecar: Sidecar) -> str:
    sidecar.config_path.write_text("listeners: [\n  {id: PESITSSL\n")
    return "sidecar.yaml:3: invalid YAML"


def _missing_key(workdir: Path, config: dict[str, Any], sidecar: Sidecar) -> str:
    config["pki"]["SRVCERT"]["key"] = str(workdir / "missing.key")
    sidecar.write(config)
    return "pki.SRVCERT.key: cannot read"


def _bad_sslauth_line(workdir: Path, config: dict[str, Any], sidecar: Sidecar) -> str:
    (workdir / "rules.txt").write_text("ACCEPT /CN=PARIS\nACCEPT /cn=lowercase\n")
    config["listeners"][0]["sslauth"] = "rules.txt"
    sidecar.write(config)
    return "rules.txt:2:"


def _many_problems(workdir: Path, config: dict[str, Any], sidecar: Sidecar) -> list[str]:
    (workdir / "rules.txt").write_text("ACCEPT /cn=a\nACCEPT /CN=PARIS\nREVOKE /XYZ=1\n")
    config["listeners"][0]["sslauth"] = "rules.txt"
    config["pki"]["SRVCERT"]["key"] = str(workdir / "missing.key")
    config["profiles"][0]["ciphlist"] = [49195, 1234]
    text = yaml.safe_dump(config, sort_keys=False)
    text = text.replace("  verify: required\n", "  verify: required\n  verify: none\n")
    sidecar.config_path.write_text(text)
    return [
        "profiles[0].verify: given twice",
        "pki.SRVCERT.key: cannot read",
        "profiles[0].ciphlist[1]: unknown cipher suite 1234",
        "listeners[0].sslauth: rules.txt:1:",
        "listeners[0].sslauth: rules.txt:3:",
    ]


@pytest.mark.parametrize(
    "breakage", [_bad_yaml, _missing_key, _bad_sslauth_line, _many_problems], ids=lambda f: f.__name__[1:]
)
async def test_a_broken_reload_is_refused_and_the_old_config_keeps_serving(
    breakage: Any, pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    config = admin_config(pki, backend.port)
    async with running(workdir, config) as (sidecar, session):
        assert sidecar.runtime is not None
        before = sidecar.runtime.snapshot
        expected = breakage(workdir, config, sidecar)
        status, body = await _post_reload(session, sidecar)
        assert status == 422
        assert body["errors"] and all(isinstance(error, str) for error in body["errors"])
        for text in [expected] if isinstance(expected, str) else expected:
            assert any(text in error for error in body["errors"]), (text, body)
        assert sidecar.runtime.snapshot is before
        assert await tls_exchange(sidecar.port(), pki.client_context(pki.client), b"alive") == b"alive"
        _, stats = await get_json(session, sidecar.url("/stats"))
        assert stats["generation"] == 1 and stats["reloads"] == {"ok": 0, "refused": 1}
    refused = captured_logs.of("reload_refused")
    assert len(refused) == 1 and refused[0]["errors"] == body["errors"]


async def test_a_reload_while_50_connections_stream_loses_no_byte(
    pki: Pki, backend: EchoBackend, workdir: Path
) -> None:
    config = admin_config(pki, backend.port)
    async with running(workdir, config) as (sidecar, session):
        assert sidecar.runtime is not None
        size = 256 * 1024
        halfway = [asyncio.Event() for _ in range(50)]
        reloaded = asyncio.Event()
        context = pki.client_context(pki.client)
        streams = [
            asyncio.create_task(hashed_stream(sidecar.port(), context, size, halfway[i], reloaded)) for i in range(50)
        ]
        try:
            async with asyncio.timeout(20):
                await asyncio.gather(*(event.wait() for event in halfway))
            # Every stream is open with half its bytes sent; some are still coming back.
            assert len(sidecar.runtime.connections) == 50
            server = _new_server_cert(pki, workdir, config)
            sidecar.write(config)
            assert await _post_reload(session, sidecar) == (200, {"generation": 2})
            reloaded.set()
            async with asyncio.timeout(20):
                results = await asyncio.gather(*streams)
        finally:
            for task in streams:
                task.cancel()
            await asyncio.gather(*streams, return_exceptions=True)
        assert results == [True] * 50
        assert sorted(len(received) for received in backend.connections) == [size] * 50
        assert await _peer_certificate(sidecar.port(), context) == _der(server)


async def test_a_listener_added_by_reload_is_bound_and_reported(
    pki: Pki, backend: EchoBackend, workdir: Path, captured_logs: LogCapture
) -> None:
    config = admin_config(pki, backend.port)
    async with running(workdir, config) as (sidecar, session):
        assert sidecar.runtime is not None
        first_port = sidecar.port()
        config["listeners"].append({**config["listeners"][0], "id": "SECOND"})
        sidecar.write(config)
        assert await _post_reload(session, sidecar) == (200, {"generation": 2})

        second = sidecar.port("SECOND")
        assert second > 0 and second != first_port
        assert sidecar.port() == first_port  # unchanged listeners keep their socket
        reloaded = captured_logs.of("reloaded")
        assert reloaded[-1]["listeners"] == {"PESITSSL": f"127.0.0.1:{first_port}", "SECOND": f"127.0.0.1:{second}"}
        assert await tls_exchange(second, pki.client_context(pki.client), b"new") == b"new"
        _, stats = await get_json(session, sidecar.url("/stats"))
        assert stats["listeners"]["SECOND"]["accepted"] == 1

        # And removed again: its socket is closed, the other one still serves.
        config["listeners"].pop()
        sidecar.write(config)
        assert await _post_reload(session, sidecar) == (200, {"generation": 3})
        assert set(sidecar.runtime.bound) == {"PESITSSL"}
        with pytest.raises(ConnectionRefusedError):
            _, writer = await asyncio.open_connection("127.0.0.1", second)
            writer.close()
        assert await tls_exchange(first_port, pki.client_context(pki.client), b"old") == b"old"


async def test_a_listener_that_cannot_bind_refuses_the_reload(pki: Pki, backend: EchoBackend, workdir: Path) -> None:
    config = admin_config(pki, backend.port)
    async with running(workdir, config) as (sidecar, session):
        assert sidecar.runtime is not None
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            config["listeners"].append({**config["listeners"][0], "id": "FRESH"})
            config["listeners"].append({**config["listeners"][0], "id": "TAKEN",
                                        "listen": f"127.0.0.1:{taken.getsockname()[1]}"})  # fmt: skip
            sidecar.write(config)
            status, body = await _post_reload(session, sidecar)
        assert status == 422 and body["errors"][0].startswith("listeners[2].listen: cannot bind")
        assert set(sidecar.runtime.bound) == {"PESITSSL"}  # FRESH, bound first, was let go again
        assert sidecar.runtime.snapshot.generation == 1


# ---- the real process: signals ------------------------------------------------------------------
class Process:
    """`sidecar run` in a subprocess; its stderr JSON lines are read by a thread as they come."""

    def __init__(self, config_path: Path) -> None:
        self.popen = subprocess.Popen([*SIDECAR, "run", "-c", str(config_path)], stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            with contextlib.suppress(ValueError):
                self.lines.put(json.loads(line))

    def wait_for(self, event: str, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(line)
            if line.get("event") == event:
                return line
        raise AssertionError(f"no {event!r} line; saw {[line.get('event') for line in self.seen]}")

    def close(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        self._reader.join(5)
        if self.popen.stderr is not None:
            self.popen.stderr.close()


def _peer_certificate_sync(address: str, context: ssl.SSLContext) -> bytes:
    host, port = address.rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def _reload_command(config_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SIDECAR, "reload", "-c", str(config_path), *extra],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_sighup_reloads_and_sigterm_drains_a_real_process(pki: Pki, tmp_path: Path) -> None:
    with _threaded_echo_backend() as backend_port:
        _sighup_then_sigterm(pki, tmp_path, backend_port)


def _sighup_then_sigterm(pki: Pki, tmp_path: Path, backend_port: int) -> None:
    (tmp_path / "token").write_text(TOKEN)
    config = admin_config(pki, backend_port)
    config["admin"]["token_file"] = "token"
    config["limits"]["drain_timeout"] = 10  # room for the checks made during the drain
    # A fixed port, so that `sidecar reload -c` can find the endpoint in the file as an operator would.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        config["admin"]["listen"] = f"127.0.0.1:{probe.getsockname()[1]}"
    config_path = tmp_path / "sidecar.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    context = pki.client_context(pki.client)
    process = Process(config_path)
    try:
        ready = process.wait_for("ready")
        admin = ready["admin"]
        assert admin == config["admin"]["listen"]
        assert _peer_certificate_sync(ready["listeners"]["PESITSSL"], context) == _der(pki.server)

        server = _new_server_cert(pki, tmp_path, config)
        config["listeners"].append({**config["listeners"][0], "id": "SECOND"})
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        process.popen.send_signal(signal.SIGHUP)
        reloaded = process.wait_for("reloaded")
        assert reloaded["generation"] == 2
        assert reloaded["listeners"]["PESITSSL"] == ready["listeners"]["PESITSSL"]
        assert _peer_certificate_sync(reloaded["listeners"]["SECOND"], context) == _der(server)

        # `sidecar reload` finds the endpoint and the token through the config file.
        result = _reload_command(config_path)
        assert (result.returncode, result.stdout.strip()) == (0, "reloaded: generation 3"), result.stderr
        config["pki"]["SRVCERT"]["key"] = str(tmp_path / "missing.key")
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        result = _reload_command(config_path)
        assert result.returncode == 2 and "error: pki.SRVCERT.key: cannot read" in result.stderr
        process.wait_for("reload_refused")
        config_path.write_text("listeners: [\n")  # unreadable here too: --admin says where to go
        result = _reload_command(config_path, "--admin", f"http://{admin}", "--token-file", str(tmp_path / "token"))
        assert result.returncode == 2 and "sidecar.yaml:2: invalid YAML" in result.stderr, result.stderr
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            result = _reload_command(config_path, "--admin", f"127.0.0.1:{closed.getsockname()[1]}")
        assert result.returncode == 1 and "cannot reach the admin endpoint" in result.stderr

        # SIGTERM with a connection in flight: the drain lets it finish while /readyz says 503.
        listener = ready["listeners"]["PESITSSL"].rsplit(":", 1)
        with (
            socket.create_connection((listener[0], int(listener[1])), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as held,
        ):
            held.sendall(b"held")
            assert _read_exactly(held, 4) == b"held"
            process.popen.send_signal(signal.SIGTERM)
            process.wait_for("draining")
            assert _admin_get(admin, "/readyz") == (503, {"status": "draining"})
            assert _admin_get(admin, "/healthz") == (200, {"status": "ok"})
            held.sendall(b"more")
            assert _read_exactly(held, 4) == b"more"
            assert process.popen.poll() is None
        assert process.popen.wait(timeout=20) == 0
        process.wait_for("stopped")
    finally:
        process.close()


def _read_exactly(tls: ssl.SSLSocket, size: int) -> bytes:
    data = b""
    while len(data) < size and (chunk := tls.recv(size - len(data))):
        data += chunk
    return data


def _admin_get(admin: str, path: str) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://{admin}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.load(exc)


@contextlib.contextmanager
def _threaded_echo_backend() -> Iterator[int]:
    """A plaintext echo server on its own threads, for tests that have no event loop."""

    class Echo(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            with contextlib.suppress(OSError):
                while data := self.request.recv(65536):
                    self.request.sendall(data)

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        block_on_close = False

    with Server(("127.0.0.1", 0), Echo) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield int(server.server_address[1])
        finally:
            server.shutdown()
            thread.join(5)
