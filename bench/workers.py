"""`workers: 2` against `workers: 1`: handshakes per proxy CPU-second, the share each worker took,
memory per worker and per idle connection.

    python -m bench.workers [--quick] [--out bench/results/DATE-workers.json]

For each worker count the proxy runs unpinned (every worker may use every core) behind the same
echo backend, with TLS 1.3 session tickets off. Measured:
* `handshakes` (bench.load): full mutual-TLS handshakes with one echoed byte, at a fixed
  concurrency; CPU is the whole process tree's (supervisor and workers), so the supervisor's cost
  and any loss from sharing the sockets show up in handshakes per proxy CPU-second;
* the share of those connections each worker took, from the `worker` field of the close lines
  (logging at info in both runs, so the per-connection line costs the same in both);
* RSS of each process at rest, then `idle` (bench.load): connections held open, RSS growth per
  connection over the whole tree.

The machine is shared and has two cores: the load generator and the backend compete with the
workers for them, so the rate is not what two cores give a proxy alone; the per-CPU-second figure is
the one to compare. Do not run this while tests run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from . import peers, procstat
from .pki import make_pki
from .run import Backend, load_once


class SidecarWorkers(peers.Sidecar):
    def __init__(self, workdir: Path, pki: Path, backend_port: int, workers: int) -> None:
        self.workers = workers  # before the base class: its label names the log file
        super().__init__(workdir, pki, backend_port, tickets="off")

    @property
    def label(self) -> str:
        return f"sidecar-workers-{self.workers}"

    def config(self) -> dict[str, Any]:
        config = super().config()
        config["workers"] = self.workers
        config["logging"] = {"format": "json", "level": "info"}  # close lines carry `worker`
        return config

    def close_lines_by_worker(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for line in self.log_path.read_text(errors="replace").splitlines():
            if '"event": "close"' in line:
                counts[str(json.loads(line).get("worker", 0))] += 1
        return dict(sorted(counts.items()))


def measure(workers: int, work: Path, pki: Path, backend: Backend, quick: bool) -> dict[str, Any]:
    peer = SidecarWorkers(work, pki, backend.port, workers)
    peer.start(None)
    try:
        time.sleep(1.0 if workers > 1 else 0.2)  # every worker ready (the port answers with the first)
        pids = procstat.tree(peer.pid)
        rss_at_rest = {str(pid): procstat.rss_bytes([pid]) // 1024 for pid in pids}
        handshakes = load_once(
            "handshakes", peer.port, pki, pinned=False, proxy_pid=peer.pid, backend_pid=backend.pid,
            timeout=120, seconds=3 if quick else 20, warmup=0.5 if quick else 2, concurrency=16,
        )  # fmt: skip
        time.sleep(0.5)
        shares = peer.close_lines_by_worker()
        idle = load_once(
            "idle", peer.port, pki, pinned=False, proxy_pid=peer.pid, backend_pid=backend.pid,
            timeout=240, count=200 if quick else 2000, seconds=60, concurrency=32, hold=1,
        )  # fmt: skip
    finally:
        peer.stop()
    total = sum(shares.values()) or 1
    return {
        "workers": workers,
        "processes": len(pids),
        "handshakes_per_proxy_cpu_s": handshakes.get("per_proxy_cpu_s"),
        "handshake_rate": handshakes.get("rate"),
        "proxy_cpu_util": (handshakes.get("util") or {}).get("proxy"),
        "handshake_errors": handshakes.get("errors"),
        "share_by_worker": {worker: round(count / total, 3) for worker, count in shares.items()},
        "rss_at_rest_kb": rss_at_rest,
        "kb_per_idle_conn": idle.get("kb_per_conn"),
        "idle_held": idle.get("held"),
        "raw": {"handshakes": handshakes, "idle": idle},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.workers")
    parser.add_argument("--quick", action="store_true", help="3-second windows, 200 idle connections")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as folder:
        work = Path(folder)
        pki = make_pki(work / "pki")
        backend = Backend(None)
        try:
            results = [measure(n, work / f"w{n}", pki, backend, args.quick) for n in (1, 2)]
        finally:
            backend.stop()
    one, two = results
    ratio = None
    if one["handshakes_per_proxy_cpu_s"] and two["handshakes_per_proxy_cpu_s"]:
        ratio = round(two["handshakes_per_proxy_cpu_s"] / one["handshakes_per_proxy_cpu_s"], 3)
    summary = {"quick": args.quick, "efficiency_2_vs_1": ratio, "runs": results}
    text = json.dumps(summary, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    for run in results:
        print(
            f"workers={run['workers']}: {run['handshakes_per_proxy_cpu_s']} handshakes/proxy-CPU-s, "
            f"{run['handshake_rate']}/s at {run['proxy_cpu_util']} cores, shares {run['share_by_worker']}, "
            f"RSS at rest {run['rss_at_rest_kb']} KB, {run['kb_per_idle_conn']} KB/idle connection",
            file=sys.stderr,
        )
    print(f"efficiency workers=2 / workers=1 (per proxy CPU-second): {ratio}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
