"""Per-handshake cost that does not depend on the machine's load: instructions and system calls.

    /tmp/venv/bin/python -m bench.cost HEAD~1 worktree bare          # each build, one after the other
    /tmp/venv/bin/python -m bench.cost HEAD --policy --count 300
    /tmp/venv/bin/python -m bench.cost HEAD bare --rtt --count 5000 --no-syscalls   # per 1-byte round trip
    /tmp/venv/bin/python -m bench.cost main HEAD --bulk up --count 48               # per MB through one connection

On a shared 2-core VM, handshakes per CPU-second of the same build move ±20 % from one window to the
next, so a change worth 1-3 % cannot be seen in `bench.ab` without dozens of rounds. Two counts do
not move: the user-space instructions the proxy executes per proxied handshake (valgrind's
callgrind, ±0.2 % between runs) and the system calls it makes per connection (strace -c). For each
build: a pinned proxy (a git revision exported like `bench.ab` does, `worktree`, or `bare`, the
floor), the benchmark's configuration and load (TLS 1.3, 8 in flight, `--policy` for the full
policy); 60 warm-up handshakes, then `--count` measured ones. `--bulk up|down` counts per MB
through one connection instead (8 MB of warm-up, then `--count` MB): the number to trust for CPU
per GB, which `bench.ab` measures within ±10 % on this machine. Instructions are not time: cache
misses and kernel time are not in them (see bench/README.md, "The floor"). Needs valgrind and
strace (Debian packages of the same names).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import peers
from . import run as bench_run
from .pki import make_pki

WARMUP = 60
BULK_WARMUP_MB = 8


def _peer(kind: type[peers.Peer], work: Path, pki: Path, backend_port: int, policy: bool, wrap: list[str]) -> Any:
    class Wrapped(kind):  # type: ignore[misc, valid-type]
        def command(self) -> list[str]:
            return [*wrap, *super().command()]

    return Wrapped(work, pki, backend_port, tickets="default", policy=policy)


def _load(peer: peers.Peer, pki: Path, backend: bench_run.Backend, count: int, args: Any) -> int:
    if args.bulk:  # `count` MB through one connection
        result = bench_run.load_once(
            "bulk", peer.port, pki, pinned=True, proxy_pid=peer.pid, backend_pid=backend.pid, timeout=900,
            direction=args.bulk, conns=1, bytes=count << 20, seconds=600,
        )  # fmt: skip
        if "failed" in result:
            raise RuntimeError(f"load failed: {result}")
        return count
    if args.rtt:  # one connection, `count` 1-byte round trips (after the load's own 500 warm-up ones)
        result = bench_run.load_once(
            "rtt", peer.port, pki, pinned=True, proxy_pid=peer.pid, backend_pid=backend.pid, timeout=900,
            size=1, count=count, seconds=600,
        )  # fmt: skip
        if "failed" in result:
            raise RuntimeError(f"load failed: {result}")
        return int(result["round_trips"]) + 500
    result = bench_run.load_once(
        "handshakes", peer.port, pki, pinned=True, proxy_pid=peer.pid, backend_pid=backend.pid, timeout=900,
        tls="1.3", seconds=600, warmup=0, concurrency=8, max=count, payload="pesit" if args.policy else "x",
    )  # fmt: skip
    if result.get("errors") or not result.get("handshakes"):
        raise RuntimeError(f"load failed: {result}")
    return int(result["handshakes"])


def instructions(kind: type[peers.Peer], work: Path, pki: Path, backend: bench_run.Backend, args: Any) -> float:
    """Instructions per handshake: callgrind, collecting only while the measured handshakes run."""
    out = work / "callgrind.out"
    wrap = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    peer = _peer(kind, work, pki, backend.port, args.policy, wrap)
    wait_port = peers.wait_port
    peers.wait_port = lambda port, process, timeout=15.0: wait_port(port, process, 180.0)  # slow start
    try:
        with bench_run.running(peer, {bench_run.PROXY_CPU}):
            _load(peer, pki, backend, _warmup(args), args)
            subprocess.run(["callgrind_control", "-i", "on", str(peer.pid)], check=True, capture_output=True)
            count = _load(peer, pki, backend, args.count, args)
            subprocess.run(["callgrind_control", "-i", "off", str(peer.pid)], check=True, capture_output=True)
            subprocess.run(["callgrind_control", "-d", str(peer.pid)], check=True, capture_output=True)
            time.sleep(1)
    finally:
        peers.wait_port = wait_port
    total = 0
    for dump in out.parent.glob(out.name + "*"):
        for line in dump.read_text(errors="replace").splitlines():
            if line.startswith(("totals:", "summary:")):
                total = max(total, int(line.split()[1]))
        dump.unlink()
    return total / count


def system_calls(kind: type[peers.Peer], work: Path, pki: Path, backend: bench_run.Backend, args: Any) -> str:
    """System calls per accepted connection (strace -c -f), the most frequent first."""
    out = work / "strace.txt"
    peer = _peer(kind, work, pki, backend.port, args.policy, [])
    with bench_run.running(peer, {bench_run.PROXY_CPU}):
        _load(peer, pki, backend, _warmup(args), args)
        tracer = subprocess.Popen(
            ["strace", "-c", "-f", "-o", str(out), "-p", str(peer.pid)], stderr=subprocess.DEVNULL
        )
        try:
            time.sleep(1.0)
            _load(peer, pki, backend, args.count, args)
            time.sleep(0.5)
        finally:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=30)
    rows: dict[str, int] = {}
    for line in out.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
            rows[parts[-1]] = int(parts[3])
    # The load counts finished handshakes; connections in flight at the edges are accepted too.
    per, unit = (args.count, "MB") if args.bulk else (rows.get("accept4") or rows.get("accept") or 1, "connection")
    ranked = sorted(rows.items(), key=lambda item: -item[1])
    total = sum(rows.values()) / per
    return f"{total:.1f} per {unit}: " + ", ".join(f"{name} {calls / per:.1f}" for name, calls in ranked)


def _warmup(args: Any) -> int:
    return BULK_WARMUP_MB if args.bulk else WARMUP


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench.cost", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("builds", nargs="+", help="git revisions, 'worktree', or 'bare' (the floor)")
    parser.add_argument("--count", type=int, default=200, help="measured handshakes, round trips or MB (default 200)")
    parser.add_argument("--policy", action="store_true", help="the full-policy configuration and PeSIT first message")
    parser.add_argument("--no-syscalls", action="store_true", help="instructions only")
    parser.add_argument(
        "--rtt", action="store_true", help="per 1-byte round trip on one connection instead of per handshake"
    )
    parser.add_argument("--bulk", choices=("up", "down"), help="per MB through one connection instead of per handshake")
    args = parser.parse_args(argv)
    missing = [tool for tool in ("valgrind", "callgrind_control", "strace") if not shutil.which(tool)]
    if missing:
        print(f"bench.cost needs {', '.join(missing)} (apt-get install valgrind strace)", file=sys.stderr)
        return 2
    os.sched_setaffinity(0, {bench_run.LOAD_CPU})
    with tempfile.TemporaryDirectory(prefix="sidecar-cost-") as tmp:
        work = Path(tmp)
        pki = make_pki(work / "pki")
        backend = bench_run.Backend({bench_run.LOAD_CPU})
        try:
            for number, build in enumerate(args.builds):
                kind: type[peers.Peer] = peers.Bare if build == "bare" else peers.Sidecar
                if build != "bare":
                    peers.export_sidecar(build, work / f"sidecar-{number}")
                where = "bench/bare.py" if build == "bare" else peers.SidecarSource.revision
                line = f"{build} ({where}){' policy' if args.policy else ''}: "
                unit = f"MB ({args.bulk})" if args.bulk else "round trip" if args.rtt else "handshake"
                line += f"{instructions(kind, work, pki, backend, args) / 1000:,.1f} k instructions per {unit}"
                if not args.no_syscalls:
                    line += f"; system calls {system_calls(kind, work, pki, backend, args)}"
                print(line, flush=True)
        finally:
            backend.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
