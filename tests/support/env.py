"""A running sidecar for tests: PKI on disk, config file, echo backend, Runtime on the test's loop."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sidecar.admin import AdminServer, start_admin
from sidecar.runtime import Runtime
from sidecar.snapshot import load_snapshot
from sidecar.testing.pki import Issued, issue, make_ca


@dataclass
class Pki:
    directory: Path
    root: Issued = field(init=False)
    server: Issued = field(init=False)
    client: Issued = field(init=False)
    other_root: Issued = field(init=False)
    stranger: Issued = field(init=False)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.root = make_ca("/C=FR/O=ACME/CN=ACME Root CA")
        self.server = issue(self.root, "/C=FR/O=ACME/CN=localhost", server=True, client=False)
        self.client = issue(self.root, "/C=US/ST=NY/L=New York/O=ACME/OU=Paris/CN=PARIS")
        self.other_root = make_ca("/C=XX/O=Elsewhere/CN=Other Root")
        self.stranger = issue(self.other_root, "/C=US/O=ACME/OU=Paris/CN=PARIS")
        (self.directory / "root.pem").write_bytes(self.root.cert_pem())
        (self.directory / "other-root.pem").write_bytes(self.other_root.cert_pem())
        self.server.write(self.directory, "server")
        self.client.write(self.directory, "client")
        self.stranger.write(self.directory, "stranger")

    def write_client(self, cert: Issued, stem: str) -> tuple[Path, Path]:
        return cert.write(self.directory, stem)

    def client_context(
        self,
        cert: Issued | None = None,
        *,
        trust: Issued | None = None,
        tls: tuple[ssl.TLSVersion, ssl.TLSVersion] | None = None,
        ciphers: str | None = None,
        stem: str = "c",
    ) -> ssl.SSLContext:
        """A stdlib (system OpenSSL) client: an independent implementation to talk to ours."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.load_verify_locations(cadata=(trust or self.root).cert_pem().decode())
        if cert is not None:
            cert_path, key_path = cert.write(self.directory, f"client-{stem}")
            context.load_cert_chain(cert_path, key_path)
        if tls is not None:
            context.minimum_version, context.maximum_version = tls
        if ciphers is not None:
            context.set_ciphers(ciphers)
        return context


def base_config(pki: Pki, backend_port: int, **listener: Any) -> dict[str, Any]:
    profile = {
        "id": "SSLSRV",
        "direct": "server",
        "usercid": "SRVCERT",
        "rootcid": ["ROOTCA"],
        "verify": "required",
    }
    return {
        "pki": {
            "ROOTCA": {"cert": str(pki.directory / "root.pem")},
            "SRVCERT": {"cert": str(pki.directory / "server.pem"), "key": str(pki.directory / "server.key")},
        },
        "profiles": [profile],
        "listeners": [
            {
                "id": "PESITSSL",
                "listen": "127.0.0.1:0",
                "ssl": "SSLSRV",
                "backend": f"127.0.0.1:{backend_port}",
                **listener,
            }
        ],
        "limits": {"handshake_timeout": 5, "idle_timeout": 30, "connect_timeout": 2, "drain_timeout": 2},
        "logging": {"format": "json", "level": "debug"},
    }


class Sidecar:
    """A running sidecar for a test: the config dict written to a file (so reload and `check` see the
    same thing), a Runtime on the test's loop, and the admin endpoint when the config has one —
    started the way `sidecar run` starts (admin first, then the listeners).

        async with Sidecar(workdir, config) as sidecar:
            ... sidecar.port(), sidecar.runtime, sidecar.url("/stats") ...
    """

    def __init__(self, directory: Path, config: dict[str, Any]) -> None:
        self.directory = directory
        self.config_path = directory / "sidecar.yaml"
        self.write(config)
        self.runtime: Runtime | None = None
        self.admin: AdminServer | None = None
        self.last_bound: dict[str, str] = {}  # the listeners' addresses, still readable after stop()

    def write(self, config: dict[str, Any]) -> None:
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    async def start(self) -> Runtime:
        snapshot = load_snapshot(self.config_path)
        self.runtime = Runtime(self.config_path, snapshot)
        if snapshot.config.admin is not None:
            self.admin = await start_admin(self.runtime, snapshot.config.admin)
        await self.runtime.start()
        return self.runtime

    async def __aenter__(self) -> Sidecar:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def port(self, listener_id: str = "PESITSSL") -> int:
        assert self.runtime is not None
        bound = self.runtime.bound or self.last_bound
        return int(bound[listener_id].rsplit(":", 1)[1])

    def url(self, path: str) -> str:
        assert self.admin is not None, "the config has no admin section"
        return f"http://{self.admin.address}{path}"

    async def stop(self) -> None:
        if self.runtime is not None:
            self.last_bound = self.runtime.bound
            await self.runtime.stop(drain_timeout=1)
        if self.admin is not None:
            await self.admin.cleanup()
            self.admin = None


async def tls_exchange(
    port: int, context: ssl.SSLContext, payload: bytes = b"x", *, timeout: float = 5
) -> bytes | None:
    """Send `payload`, half-close, read everything back. None = rejected (handshake error or EOF first).

    Under TLS 1.3 a client refused after the handshake sees a finished handshake then EOF/alert,
    so "nothing came back" counts as rejected too.
    """
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
            return await echoed(reader, writer, payload)
    except (ssl.SSLError, ConnectionError, OSError):
        return None


async def echoed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes) -> bytes | None:
    """Send `payload`, read back as many bytes (or until EOF), close; None when nothing came back."""
    try:
        writer.write(payload)
        await writer.drain()
        received = bytearray()
        while len(received) < len(payload):
            chunk = await reader.read(65536)
            if not chunk:
                break
            received.extend(chunk)
        return bytes(received) if received else None
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError, OSError):
            await writer.wait_closed()


async def hashed_stream(
    port: int, context: ssl.SSLContext, size: int, halfway: asyncio.Event, reloaded: asyncio.Event
) -> bool:
    """Send `size` random bytes in two halves (the reload happens between them), read all back, compare."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
    sent, received = hashlib.sha256(), hashlib.sha256()
    total = 0

    async def send() -> None:
        for part in range(2):
            if part == 1:
                halfway.set()
                await reloaded.wait()
            for _ in range(size // 2 // 16384):
                block = os.urandom(16384)
                sent.update(block)
                writer.write(block)
                await writer.drain()

    async def receive() -> None:
        nonlocal total
        while total < size and (chunk := await reader.read(65536)):
            received.update(chunk)
            total += len(chunk)

    try:
        await asyncio.gather(send(), receive())
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()
    return total == size and sent.digest() == received.digest()
