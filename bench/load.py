"""The load generator: one process, pyOpenSSL (the OpenSSL bundled with `cryptography`) on sockets.

    python -m bench.load handshakes|bulk|rtt|idle --port P --pki DIR [options]

Prints one JSON object on stdout. Every loop is bounded by a count and by a deadline and stops by
itself. Beside its own numbers it reads, at the start and the end of its measured window, the CPU
time of the proxy's process tree (`--proxy-pid`), of the backend (`--backend-pid`), of itself, and
the busy time of every core (/proc/stat), so that rates can be given per proxy CPU-second and the
saturated side can be named.

Client TLS settings (the same for every peer): TLS 1.3 `TLS_AES_128_GCM_SHA256` or TLS 1.2
`ECDHE-ECDSA-AES128-GCM-SHA256`, key exchange on P-256 only (so that no peer negotiates a costlier
hybrid group), the client certificate always presented, sessions never reused (full handshakes).
For handshake rates the client does not verify the *server's* chain (`--verify-server` turns it
on): it is client-side work the same for every peer, and skipping it lets the single load core
push harder. The server still verifies the client's chain, and TLS 1.3 still checks the server's
CertificateVerify signature.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import resource
import selectors
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from OpenSSL import SSL, crypto

from . import procstat

ADDRESS = "127.0.0.1"
SINK_DONE = b"SINKDONE"


# ---- TLS context ----------------------------------------------------------------------------------
def client_context(pki: Path, tls: str, *, verify_server: bool = False) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    version = SSL.TLS1_3_VERSION if tls == "1.3" else SSL.TLS1_2_VERSION
    ctx.set_min_proto_version(version)
    ctx.set_max_proto_version(version)
    if tls == "1.3":
        ctx.set_tls13_ciphersuites(b"TLS_AES_128_GCM_SHA256")
    else:
        ctx.set_cipher_list(b"ECDHE-ECDSA-AES128-GCM-SHA256")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.set_tmp_ecdh(crypto.get_elliptic_curve("prime256v1"))  # groups = P-256 only
    ctx.use_certificate_file(str(pki / "client.pem"))
    ctx.use_privatekey_file(str(pki / "client.key"))
    ctx.load_verify_locations(str(pki / "root.pem"))
    ctx.set_verify(SSL.VERIFY_PEER if verify_server else SSL.VERIFY_NONE)
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    return ctx


# ---- measurement window ---------------------------------------------------------------------------
@dataclass
class Probe:
    """CPU of the proxy tree, the backend and this process, and per-core busy time, at one instant."""

    proxy_pid: int | None
    backend_pid: int | None
    t: float = 0.0
    proxy: float = 0.0
    proxy_sys: float = 0.0
    backend: float = 0.0
    client: float = 0.0
    cores: procstat.CoreTimes | None = None

    def take(self) -> Probe:
        snap = Probe(self.proxy_pid, self.backend_pid)
        snap.t = time.perf_counter()
        if self.proxy_pid:
            user, system = procstat.cpu_split(procstat.tree(self.proxy_pid))
            snap.proxy, snap.proxy_sys = user + system, system
        snap.backend = procstat.tree_cpu_seconds(self.backend_pid) if self.backend_pid else 0.0
        usage = resource.getrusage(resource.RUSAGE_SELF)
        snap.client = usage.ru_utime + usage.ru_stime
        snap.cores = procstat.CoreTimes.read()
        return snap


def window(start: Probe, end: Probe) -> dict[str, Any]:
    wall = end.t - start.t
    cpu = {
        "proxy": round(end.proxy - start.proxy, 3),
        "client": round(end.client - start.client, 3),
        "backend": round(end.backend - start.backend, 3),
    }
    assert start.cores is not None and end.cores is not None
    return {
        "wall_s": round(wall, 4),
        "cpu_s": cpu,
        "util": {key: round(value / wall, 3) if wall > 0 else 0.0 for key, value in cpu.items()},
        "proxy_sys_share": round((end.proxy_sys - start.proxy_sys) / cpu["proxy"], 3) if cpu["proxy"] > 0 else None,
        "cores_busy": end.cores.busy_fraction_since(start.cores),
    }


def percentiles(samples: list[float]) -> dict[str, float | None]:
    if not samples:
        return {"p50": None, "p99": None, "n": 0}
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)

    return {"p50": pick(0.50), "p99": pick(0.99), "n": len(ordered)}


# ---- many TLS connections on one selector -----------------------------------------------------------
CONNECTING, HANDSHAKE, SEND, RECV, HELD = range(5)


@dataclass(eq=False)
class Conn:
    sock: socket.socket
    t0: float
    state: int = CONNECTING
    tls: SSL.Connection | None = None
    got: int = 0
    t_handshake: float = 0.0
    events: int = 0


@dataclass
class Engine:
    """Drives many non-blocking client connections: connect, handshake, send `payload`, read it back."""

    ctx: SSL.Context | None
    port: int
    payload: bytes
    keep: bool = False  # hold connections open after the echo (idle test) instead of closing them
    sel: selectors.BaseSelector = field(default_factory=selectors.EpollSelector)
    in_flight: int = 0
    done: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    counting: bool = False
    counted: int = 0
    connect_ms: list[float] = field(default_factory=list)
    handshake_ms: list[float] = field(default_factory=list)
    held: list[Conn] = field(default_factory=list)

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Conn(sock, time.perf_counter())
        code = sock.connect_ex((ADDRESS, self.port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self._error(f"connect: {os.strerror(code)}")
            return
        self.in_flight += 1
        self._watch(conn, selectors.EVENT_WRITE)

    def _watch(self, conn: Conn, events: int) -> None:
        if conn.events == events:
            return
        if conn.events:
            self.sel.modify(conn.sock, events, conn)
        else:
            self.sel.register(conn.sock, events, conn)
        conn.events = events

    def _unwatch(self, conn: Conn) -> None:
        if conn.events:
            self.sel.unregister(conn.sock)
            conn.events = 0

    def _error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(text)

    def poll(self, timeout: float) -> None:
        for key, _ in self.sel.select(timeout):
            self.step(key.data)

    def step(self, conn: Conn) -> None:
        try:
            if conn.state == CONNECTING:
                code = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    raise ConnectionError(f"connect: {os.strerror(code)}")
                if self.ctx is None:
                    conn.state = SEND
                else:
                    conn.tls = SSL.Connection(self.ctx, conn.sock)
                    conn.tls.set_connect_state()
                    conn.state = HANDSHAKE
            if conn.state == HANDSHAKE:
                assert conn.tls is not None
                try:
                    conn.tls.do_handshake()
                except SSL.WantReadError:
                    self._watch(conn, selectors.EVENT_READ)
                    return
                except SSL.WantWriteError:
                    self._watch(conn, selectors.EVENT_WRITE)
                    return
                conn.t_handshake = time.perf_counter()
                conn.state = SEND
            if conn.state == SEND:
                sent = conn.tls.send(self.payload) if conn.tls is not None else conn.sock.send(self.payload)
                if sent != len(self.payload):
                    raise ConnectionError(f"short send {sent}")
                conn.got = 0
                conn.state = RECV
            if conn.state == RECV:
                while conn.got < len(self.payload):
                    try:
                        data = conn.tls.recv(65536) if conn.tls is not None else conn.sock.recv(65536)
                    except (SSL.WantReadError, BlockingIOError):
                        self._watch(conn, selectors.EVENT_READ)
                        return
                    if not data:
                        raise ConnectionError("EOF before the echo (rejected?)")
                    conn.got += len(data)
                self._finished(conn)
        except (SSL.Error, OSError, ConnectionError) as exc:
            self._unwatch(conn)
            self.in_flight -= 1
            self._error(f"{type(exc).__name__}: {exc}"[:200])
            conn.sock.close()

    def _finished(self, conn: Conn) -> None:
        now = time.perf_counter()
        self.in_flight -= 1
        self.done += 1
        if self.counting:
            self.counted += 1
            self.connect_ms.append((now - conn.t0) * 1000)
            if conn.t_handshake:
                self.handshake_ms.append((conn.t_handshake - conn.t0) * 1000)
        if self.keep:
            self._unwatch(conn)
            conn.state = HELD
            self.held.append(conn)
            return
        self._unwatch(conn)
        self.close(conn)

    @staticmethod
    def close(conn: Conn) -> None:
        if conn.tls is not None:
            with contextlib.suppress(SSL.Error, OSError):
                conn.tls.shutdown()  # close_notify; we do not wait for the peer's
        conn.sock.close()

    def echo_held(self, deadline: float) -> int:
        """Send the payload again on every held connection and wait for the echo: failures count."""
        self.keep = True
        pending = self.held
        self.held = []
        self.counting = False
        for conn in pending:
            conn.state = SEND
            self.in_flight += 1
            self.step(conn)
        while self.in_flight > 0 and time.perf_counter() < deadline:
            self.poll(0.2)
        failures = len(pending) - len(self.held)
        return failures

    def close_all(self) -> None:
        for key in list(self.sel.get_map().values()):
            conn = key.data
            self.sel.unregister(conn.sock)
            conn.sock.close()
        for conn in self.held:
            self.close(conn)
        self.held = []
        self.sel.close()


# ---- scenarios -------------------------------------------------------------------------------------
def run_handshakes(args: argparse.Namespace) -> dict[str, Any]:
    ctx = client_context(args.pki, args.tls, verify_server=args.verify_server)
    engine = Engine(ctx, args.port, _payload(args.payload))
    probe = Probe(args.proxy_pid, args.backend_pid)
    t_begin = time.perf_counter()
    warmup_end = t_begin + args.warmup
    deadline = warmup_end + args.seconds
    start = end = None
    while True:
        now = time.perf_counter()
        if start is None and now >= warmup_end:
            start = probe.take()
            engine.counting = True
        if now >= deadline or engine.counted >= args.max:
            end = probe.take()
            engine.counting = False
            break
        while engine.in_flight < args.concurrency:
            engine.start()
        engine.poll(0.05)
    drain_deadline = time.perf_counter() + 5
    while engine.in_flight > 0 and time.perf_counter() < drain_deadline:
        engine.poll(0.05)
    engine.close_all()
    assert start is not None and end is not None
    result = window(start, end)
    wall = result["wall_s"]
    result.update(
        handshakes=engine.counted,
        rate=round(engine.counted / wall, 1) if wall else 0.0,
        per_proxy_cpu_s=round(engine.counted / result["cpu_s"]["proxy"], 1) if result["cpu_s"]["proxy"] else None,
        connect_ms=percentiles(engine.connect_ms),
        handshake_ms=percentiles(engine.handshake_ms),
        errors=engine.errors,
        error_samples=engine.error_samples,
        concurrency=args.concurrency,
    )
    return result


def run_idle(args: argparse.Namespace) -> dict[str, Any]:
    """Open `--count` mutual-TLS connections, each echoing once, hold them, measure the proxy's RSS."""
    ctx = client_context(args.pki, args.tls)
    payload = _payload(args.payload)
    # Warm up first (lazy allocations, first handshake), then take the baseline.
    warm = Engine(ctx, args.port, payload)
    for _ in range(min(50, args.count)):
        warm.start()
    limit = time.perf_counter() + 10
    while warm.in_flight > 0 and time.perf_counter() < limit:
        warm.poll(0.05)
    warm.close_all()
    time.sleep(args.settle)
    pids = procstat.tree(args.proxy_pid)
    rss_before = procstat.rss_bytes(pids)
    engine = Engine(ctx, args.port, payload, keep=True)
    engine.counting = True
    t0 = time.perf_counter()
    deadline = t0 + args.seconds
    while len(engine.held) + engine.errors < args.count and time.perf_counter() < deadline:
        while engine.in_flight < args.concurrency and engine.done + engine.errors + engine.in_flight < args.count:
            engine.start()
        engine.poll(0.05)
    open_s = time.perf_counter() - t0
    time.sleep(args.settle)
    pids = procstat.tree(args.proxy_pid)
    rss_after = procstat.rss_bytes(pids)
    held = len(engine.held)
    hold_until = time.perf_counter() + args.hold
    while time.perf_counter() < hold_until:
        time.sleep(0.1)
    echo_failures = engine.echo_held(time.perf_counter() + max(10.0, args.count / 500))
    engine.close_all()
    return {
        "requested": args.count,
        "held": held,
        "open_errors": engine.errors,
        "error_samples": engine.error_samples,
        "echo_failures_after_hold": echo_failures,
        "hold_s": args.hold,
        "open_s": round(open_s, 2),
        "proxy_processes": len(pids),
        "proxy_threads": sum(procstat.threads(pid) for pid in pids),
        "rss_before_kb": rss_before // 1024,
        "rss_after_kb": rss_after // 1024,
        "kb_per_conn": round((rss_after - rss_before) / 1024 / held, 2) if held else None,
        "connect_ms": percentiles(engine.connect_ms),
    }


def _connect_blocking(args: argparse.Namespace, ctx: SSL.Context | None) -> Any:
    sock = socket.create_connection((ADDRESS, args.port), timeout=30)
    sock.settimeout(None)  # pyOpenSSL drives the raw descriptor: it must be really blocking
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if ctx is None:
        return sock
    conn = SSL.Connection(ctx, sock)
    conn.set_connect_state()
    conn.do_handshake()
    return conn


def _recv_exactly(conn: Any, view: memoryview, n: int) -> None:
    got = 0
    while got < n:
        k = conn.recv_into(view[got:], n - got)
        if not k:
            raise ConnectionError("EOF")
        got += k


def run_rtt(args: argparse.Namespace) -> dict[str, Any]:
    ctx = None if args.plain else client_context(args.pki, args.tls, verify_server=True)
    conn = _connect_blocking(args, ctx)
    message = b"x" * args.size
    buffer = bytearray(args.size)
    view = memoryview(buffer)
    probe = Probe(args.proxy_pid, args.backend_pid)
    samples: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(min(500, args.count)):  # warm-up
        conn.sendall(message)
        _recv_exactly(conn, view, args.size)
    start = probe.take()
    deadline = time.perf_counter() + args.seconds
    for i in range(args.count):
        t0 = clock()
        conn.sendall(message)
        _recv_exactly(conn, view, args.size)
        samples.append((clock() - t0) / 1000)
        if i % 256 == 0 and time.perf_counter() > deadline:
            break
    end = probe.take()
    _close_blocking(conn)
    result = window(start, end)
    result.update(size=args.size, rtt_us=percentiles(samples), round_trips=len(samples))
    result["mean_us"] = round(sum(samples) / len(samples), 2) if samples else None
    result["proxy_cpu_us_per_rt"] = round(result["cpu_s"]["proxy"] * 1e6 / len(samples), 2) if samples else None
    return result


def _close_blocking(conn: Any) -> None:
    if isinstance(conn, SSL.Connection):
        with contextlib.suppress(SSL.Error, OSError):
            conn.shutdown()
        conn.close()  # delegated to the socket
    else:
        conn.close()


def run_bulk(args: argparse.Namespace) -> dict[str, Any]:
    ctx = None if args.plain else client_context(args.pki, args.tls, verify_server=True)
    conns = [_connect_blocking(args, ctx) for _ in range(args.conns)]
    per_conn = args.bytes // args.conns
    chunk = b"\x5a" * args.chunk
    errors: list[str] = []
    deadline = time.monotonic() + args.seconds

    def upload(conn: Any) -> None:
        try:
            conn.sendall(b"S" + per_conn.to_bytes(8, "big"))
            left = per_conn
            while left > 0:
                if time.monotonic() > deadline:
                    raise TimeoutError("bulk deadline passed")
                piece = chunk if left >= len(chunk) else chunk[:left]
                conn.sendall(piece)
                left -= len(piece)
            ack = bytearray(len(SINK_DONE))
            _recv_exactly(conn, memoryview(ack), len(ack))
            if bytes(ack) != SINK_DONE:
                raise ConnectionError(f"bad ack {bytes(ack)!r}")
        except Exception as exc:  # reported, never raised out of the thread
            errors.append(f"{type(exc).__name__}: {exc}"[:200])

    def download(conn: Any) -> None:
        try:
            conn.sendall(b"D" + per_conn.to_bytes(8, "big"))
            buffer = bytearray(args.chunk)
            view = memoryview(buffer)
            left = per_conn
            while left > 0:
                if time.monotonic() > deadline:
                    raise TimeoutError("bulk deadline passed")
                k = conn.recv_into(view, min(len(buffer), left))
                if not k:
                    raise ConnectionError("EOF")
                left -= k
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:200])

    work = upload if args.direction == "up" else download
    threads = [threading.Thread(target=work, args=(conn,), daemon=True) for conn in conns]
    probe = Probe(args.proxy_pid, args.backend_pid)
    start = probe.take()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(1.0, deadline - time.monotonic() + 5))
    end = probe.take()
    for conn in conns:
        _close_blocking(conn)
    result = window(start, end)
    total = per_conn * args.conns
    wall = result["wall_s"]
    proxy_cpu = result["cpu_s"]["proxy"]
    result.update(
        direction=args.direction,
        conns=args.conns,
        bytes=total,
        mb_per_s=round(total / wall / 1e6, 1) if wall and not errors else None,
        proxy_cpu_s_per_gb=round(proxy_cpu / (total / 1e9), 3) if not errors else None,
        errors=len(errors),
        error_samples=errors[:5],
    )
    return result


def _payload(kind: str) -> bytes:
    if kind == "pesit":
        from sidecar.pesit import encode_connect, frame

        return frame(encode_connect("PARIS", "SERVER"), True)
    return b"x"


# ---- command line ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.load")
    parser.add_argument("scenario", choices=("handshakes", "idle", "rtt", "bulk"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pki", type=Path, required=True)
    parser.add_argument("--tls", choices=("1.2", "1.3"), default="1.3")
    parser.add_argument("--plain", action="store_true", help="plaintext, straight to the backend (harness floor)")
    parser.add_argument("--proxy-pid", type=int)
    parser.add_argument("--backend-pid", type=int)
    parser.add_argument("--cpus", help="pin this process to these CPUs, e.g. 1")
    parser.add_argument("--payload", choices=("x", "pesit"), default="x", help="first message (echoed back)")
    parser.add_argument("--verify-server", action="store_true")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured window / deadline")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--max", type=int, default=100_000, help="stop after this many handshakes")
    parser.add_argument("--count", type=int, default=1000, help="idle: connections; rtt: round trips")
    parser.add_argument("--settle", type=float, default=1.0)
    parser.add_argument("--hold", type=float, default=2.0)
    parser.add_argument("--size", type=int, default=1)
    parser.add_argument("--bytes", type=int, default=256 * 1024 * 1024)
    parser.add_argument("--conns", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=256 * 1024)
    parser.add_argument("--direction", choices=("up", "down"), default="up")
    args = parser.parse_args(argv)
    if args.cpus:
        os.sched_setaffinity(0, {int(cpu) for cpu in args.cpus.split(",")})
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    runner = {"handshakes": run_handshakes, "idle": run_idle, "rtt": run_rtt, "bulk": run_bulk}[args.scenario]
    result = runner(args)
    result["scenario"] = args.scenario
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
