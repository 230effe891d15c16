"""Live memory per connection, measured inside the process (the working tree's sidecar).

    /tmp/venv/bin/python -m bench.memory [--count 1000]

RSS per idle connection (what `bench.run` reports, as for HAProxy and stunnel) depends on what the
process did before: memory freed earlier is reused without growing RSS. Allocated bytes do not.
Two measurements, both with glibc's `mallinfo2()` (bytes handed out by malloc, Python's allocator
included, since it takes its arenas from malloc):

1. TLS endpoint: `--count` server-side `TlsEndpoint`s of the benchmark's profile, each after a full
   mutual-TLS handshake with a pyOpenSSL client over memory BIOs (no sockets), kept alive; TLS 1.3
   and TLS 1.2; before and after `release_handshake_buffers`; and a fresh endpoint (`SSL_new` only).
2. Whole proxied connection: a Runtime in this process with the benchmark's configuration, `--count`
   idle mutual-TLS connections opened by a `bench.load idle` subprocess, the backend in another
   process; live malloc and (tracemalloc) the Python objects per connection, biggest sources first.

Linux/glibc only. Loopback only; the load and backend subprocesses are stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import os
import subprocess
import sys
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from . import peers
from . import run as bench_run
from .pki import make_pki


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = _MallInfo2


def allocated() -> int:
    """Bytes currently handed out by malloc: small chunks plus mmapped ones."""
    info = _libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def _config(work: Path, pki: Path, backend_port: int, port: int) -> Path:
    peer = peers.Sidecar(work, pki, backend_port, tickets="default")
    peer.port = port
    path = work / "memory.yaml"
    path.write_text(yaml.safe_dump(peer.config(), sort_keys=False))
    return path


# ---- 1. the TLS endpoint ----------------------------------------------------------------------------
def endpoint_memory(pki: Path, config: Path, count: int) -> dict[str, float]:
    from OpenSSL import SSL

    from sidecar.snapshot import load_snapshot
    from sidecar.tls.engine import TlsEndpoint

    compiled = load_snapshot(config).server_profile("SSLSRV")
    assert compiled is not None and compiled.context is not None
    server_context = compiled.context

    def client_context(tls12: bool) -> SSL.Context:
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.use_certificate_file(str(pki / "client.pem"))
        context.use_privatekey_file(str(pki / "client.key"))
        if tls12:
            context.set_max_proto_version(SSL.TLS1_2_VERSION)
        return context

    def handshaken(client_ctx: SSL.Context) -> TlsEndpoint:
        server = TlsEndpoint(server_context, server_side=True)
        client = SSL.Connection(client_ctx, None)
        client.set_connect_state()
        for _ in range(10):
            with contextlib.suppress(SSL.WantReadError):
                client.do_handshake()
            with contextlib.suppress(SSL.WantReadError):
                server.receive(client.bio_read(65536))
            done = server.do_handshake()
            output = server.take_output()
            if output:
                client.bio_write(bytes(output))
            if done:
                server.facts()
                server.read()
                return server
        raise RuntimeError("the in-memory handshake did not finish")

    def per_item(make: Callable[[], Any]) -> float:
        for _ in range(50):  # warm-up: lazy allocations, caches
            make()
        gc.collect()
        kept = []
        before = allocated()
        for _ in range(count):
            kept.append(make())
        return round((allocated() - before) / count / 1024, 1)

    def released(client_ctx: SSL.Context) -> TlsEndpoint:
        endpoint = handshaken(client_ctx)
        endpoint.release_handshake_buffers()
        return endpoint

    tls13, tls12 = client_context(False), client_context(True)
    return {
        "fresh endpoint (SSL_new only)": per_item(lambda: TlsEndpoint(server_context, server_side=True)),
        "TLS 1.3, after the handshake": per_item(lambda: handshaken(tls13)),
        "TLS 1.3, handshake buffers released": per_item(lambda: released(tls13)),
        "TLS 1.2, after the handshake": per_item(lambda: handshaken(tls12)),
        "TLS 1.2, handshake buffers released": per_item(lambda: released(tls12)),
    }


# ---- 2. the whole proxied connection ----------------------------------------------------------------
async def connection_memory(pki: Path, config: Path, port: int, backend_pid: int, count: int) -> dict[str, Any]:
    from sidecar.runtime import Runtime
    from sidecar.snapshot import load_snapshot

    runtime = Runtime(config, load_snapshot(config))
    await runtime.start()
    try:
        gc.collect()
        tracemalloc.start(1)
        before_python = tracemalloc.take_snapshot()
        # tracemalloc's own bookkeeping comes from malloc too: it is taken out of the difference.
        before = allocated() - tracemalloc.get_tracemalloc_memory()
        load = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.load", "idle", "--port", str(port), "--pki", str(pki),
            "--proxy-pid", str(os.getpid()), "--backend-pid", str(backend_pid), "--count", str(count),
            "--hold", "8", "--settle", "0.5", "--seconds", "60", "--concurrency", "16",
            cwd=peers.REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            for _ in range(1200):  # ≤ 60 s for the connections to be open
                await asyncio.sleep(0.05)
                if len(runtime.connections) >= count:
                    break
            await asyncio.sleep(0.5)
            held = len(runtime.connections)
            after = allocated() - tracemalloc.get_tracemalloc_memory()
            after_python = tracemalloc.take_snapshot()
        finally:
            await asyncio.wait_for(load.communicate(), timeout=90)
        tracemalloc.stop()
        top = after_python.compare_to(before_python, "lineno")[:12]
        return {
            "held": held,
            "allocated KB per connection": round((after - before) / max(held, 1) / 1024, 1),
            "Python objects KB per connection (tracemalloc)": round(
                sum(stat.size_diff for stat in after_python.compare_to(before_python, "filename"))
                / max(held, 1)
                / 1024,
                1,
            ),
            "biggest Python sources (bytes per connection)": [
                f"{stat.size_diff / max(held, 1):.0f}  {stat.traceback[0].filename}:{stat.traceback[0].lineno}"
                for stat in top
            ],
        }
    finally:
        await runtime.stop(drain_timeout=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench.memory", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1000, help="endpoints / connections (default 1000)")
    args = parser.parse_args(argv)
    import uvloop

    with tempfile.TemporaryDirectory(prefix="sidecar-memory-") as tmp:
        work = Path(tmp)
        pki = make_pki(work / "pki")
        backend = bench_run.Backend(None)
        try:
            port = peers.free_port()
            config = _config(work, pki, backend.port, port)
            print("1. TLS endpoint, live malloc per endpoint (KB)", flush=True)
            for label, value in endpoint_memory(pki, config, args.count).items():
                print(f"   {value:6.1f}  {label}", flush=True)
            print(f"2. Proxied idle connection ({args.count} held, uvloop)", flush=True)
            result = uvloop.run(connection_memory(pki, config, port, backend.pid, args.count))
            for key, value in result.items():
                if isinstance(value, list):
                    print(f"   {key}:")
                    for line in value:
                        print(f"      {line}")
                else:
                    print(f"   {key}: {value}")
        finally:
            backend.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
