"""Live re-judgement at scale: N relaying sessions judged again by one reload (SPEC §8.3).

    python -m bench.recheck [--connections 1000] [--partners 20]

One process, loopback only: an echo backend, a Runtime (the proxy, as `sidecar run` builds it)
on the same uvloop loop, and N mutual-TLS client connections spread over a few partners
(identified by certificate, an SSLAUTH file of 1,000 statements, a CRL). Each connection has
relayed a few bytes. Then two reloads: one whose SSLAUTH file gains a statement that concerns
nobody (every session is judged again, none refused: the pure cost of judging), one whose SSLAUTH
file revokes one partner in ten. Reported per reload:

* `recheck_ms`   — from the first re-judgement to the last (the slices included);
* `slice_max_ms` — the longest run of re-judgements without yielding to the loop;
* `loop_stall_max_ms` — the longest lateness of a 1 ms ticker running on the loop during the
  whole reload (snapshot built in a thread, swap, re-judgement): what a relay could have waited;
* `revoked` and the sessions still open afterwards.

Bounded: at most 5,000 connections, a 120 s deadline for the whole run. The clients share the
loop with the proxy, so the stall also counts their callbacks: an upper bound for the proxy's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
import yaml

from sidecar import logs
from sidecar.runtime import Runtime
from sidecar.snapshot import load_snapshot
from sidecar.testing.echo import EchoBackend
from sidecar.testing.pki import Issued, issue, make_ca, make_crl

MAX_CONNECTIONS = 5000
DEADLINE_S = 120


class Ticker:
    """A 1 ms sleeper on the loop: its lateness is how long the loop was busy elsewhere."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.001)
            self.worst = max(self.worst, loop.time() - before - 0.001)

    def start(self) -> None:
        self.worst = 0.0
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> float:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        return self.worst


def _rules(partners: list[str], revoked: set[str], extra: str = "") -> str:
    lines = [f"REVOKE /CN={name}" for name in sorted(revoked)] + ([extra] if extra else [])
    lines += [f"ACCEPT /CN=FILLER{i:04d} /O=Elsewhere" for i in range(1000 - len(partners))]  # a realistic size
    lines += [f"ACCEPT /CN={name} /O=ACME /USER={name.lower()}" for name in partners]
    return "\n".join(lines) + "\n"


def _config(directory: Path, backend_port: int, partners: list[str]) -> dict[str, Any]:
    profile = {"id": "SSLSRV", "direct": "server", "usercid": "SRVCERT", "rootcid": ["ROOTCA"], "verify": "required",
               "crl": [str(directory / "partners.crl")]}  # fmt: skip
    listener = {"id": "PESITSSL", "listen": "127.0.0.1:0", "ssl": "SSLSRV", "backend": f"127.0.0.1:{backend_port}",
                "identify": "certificate", "sslauth": str(directory / "sslauth.txt")}  # fmt: skip
    return {
        "pki": {
            "ROOTCA": {"cert": str(directory / "root.pem")},
            "SRVCERT": {"cert": str(directory / "server.pem"), "key": str(directory / "server.key")},
        },
        "profiles": [profile],
        "listeners": [listener],
        "partners": [{"id": name} for name in partners],
        "limits": {"max_connections": MAX_CONNECTIONS + 10, "idle_timeout": 600, "handshake_timeout": 60},
        "logging": {"format": "json", "level": "error"},
    }


async def _open(port: int, context: ssl.SSLContext) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
    writer.write(b"hello")
    await writer.drain()
    await reader.readexactly(5)
    return reader, writer


async def _reload(runtime: Runtime, ticker: Ticker) -> dict[str, Any]:
    measured: dict[str, Any] = {}
    recheck = runtime.live.recheck

    async def timed(old: Any, new: Any) -> Any:
        report = await recheck(old, new)
        measured.update(recheck_ms=round(report.seconds * 1000, 2), slice_max_ms=round(report.longest_slice * 1000, 2),
                        rechecked=report.rechecked, revoked=report.revoked)  # fmt: skip
        return report

    runtime.live.recheck = timed  # type: ignore[method-assign]
    ticker.start()
    started = time.perf_counter()
    _, issues = await runtime.reload()
    measured["reload_ms"] = round((time.perf_counter() - started) * 1000, 1)
    measured["loop_stall_max_ms"] = round(await ticker.stop() * 1000, 2)
    runtime.live.recheck = recheck  # type: ignore[method-assign]
    assert not issues, issues
    return measured


async def run(count: int, partner_count: int, directory: Path) -> dict[str, Any]:
    root = make_ca("/C=FR/O=ACME/CN=ACME Root CA")
    (directory / "root.pem").write_bytes(root.cert_pem())
    issue(root, "/C=FR/O=ACME/CN=localhost", server=True, client=False).write(directory, "server")
    (directory / "partners.crl").write_bytes(make_crl(root, []))
    partners = [f"P{i:03d}" for i in range(partner_count)]
    certs: dict[str, Issued] = {name: issue(root, f"/C=FR/O=ACME/CN={name}") for name in partners}
    contexts = []
    for name, cert in certs.items():
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.load_verify_locations(cadata=root.cert_pem().decode())
        context.load_cert_chain(*cert.write(directory, f"client-{name}"))
        contexts.append(context)
    (directory / "sslauth.txt").write_text(_rules(partners, set()))
    backend = EchoBackend()
    await backend.start()
    config_path = directory / "sidecar.yaml"
    config_path.write_text(yaml.safe_dump(_config(directory, backend.port, partners), sort_keys=False))
    runtime = Runtime(config_path, load_snapshot(config_path))
    await runtime.start()
    port = int(runtime.bound["PESITSSL"].rsplit(":", 1)[1])
    streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        opened = time.perf_counter()
        for start in range(0, count, 50):  # 50 handshakes at a time: a steady, not a thundering, herd
            batch = [_open(port, contexts[i % len(contexts)]) for i in range(start, min(count, start + 50))]
            streams.extend(await asyncio.gather(*batch))
        open_s = time.perf_counter() - opened
        assert len(runtime.connections) == count
        ticker = Ticker()
        # A policy change that refuses nobody: a reload with the same files would judge nobody.
        (directory / "sslauth.txt").write_text(_rules(partners, set(), "REVOKE /CN=NOBODY /O=Elsewhere"))
        unchanged = await _reload(runtime, ticker)
        revoked_partners = set(partners[::10])
        (directory / "sslauth.txt").write_text(_rules(partners, revoked_partners))
        revoking = await _reload(runtime, ticker)
        await asyncio.sleep(0.5)
        revoking["still_open"] = len(runtime.connections)
        return {
            "connections": count,
            "partners": partner_count,
            "open_s": round(open_s, 1),
            "reload_refusing_nobody": unchanged,
            "reload_revoking_one_partner_in_ten": revoking,
            "python": sys.version.split()[0],
        }
    finally:
        for _, writer in streams:
            writer.close()
        await runtime.stop(drain_timeout=2)
        await backend.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--partners", type=int, default=20)
    args = parser.parse_args()
    count = max(1, min(args.connections, MAX_CONNECTIONS))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, 4 * count + 256))  # client, proxy (2) and backend sockets per connection
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    logs.configure("json", "error")  # the close lines of a thousand sessions are not the result

    async def bounded() -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="bench-recheck-") as directory:
            async with asyncio.timeout(DEADLINE_S):
                return await run(count, max(1, args.partners), Path(directory))

    print(json.dumps(uvloop.run(bounded()), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
