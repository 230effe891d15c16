"""A/B: two builds of sidecar on one scenario, alternated round after round in one run.

    /tmp/venv/bin/python -m bench.ab --scenario hs1.3                 # HEAD~1 against the working tree
    /tmp/venv/bin/python -m bench.ab --a main --b HEAD --scenario bulk-up --rounds 8
    /tmp/venv/bin/python -m bench.ab --a bare --b HEAD --scenario hs1.3      # sidecar against its floor
    /tmp/venv/bin/python -m bench.ab --a HEAD~1 --scenario hs1.3 --floor     # both, and each against the floor

On a shared 2-core machine the same build measures ±10-15 % from one run to the next, so a change
of a few per cent is invisible when two full runs are compared. Here both builds run in the same
minutes, in ABBA order (A B, B A, A B, ...), each freshly started per round, pinned like the full
run (proxy on CPU 0, load and backend on CPU 1); the result is the median of each side, their
ratio, and in how many rounds B beat A (paired by round). Everything else is `bench.run`'s: the same
PKI, backend, load client, configuration and per-window CPU accounting.

The floor: `bare` (as `--a` or `--b`) is the bare relay on sidecar's own TLS engine (bench/bare.py:
no policy, no log, no timeouts; never a session ticket, like sidecar). `--floor` measures it as a
third build in every round, so that each side is also given as a ratio to the floor of the same
minutes. In the policy scenario the floor relays the same first message (the PeSIT CONNECT) and
judges nothing.

Scenarios and their metric (lower is better unless marked):
  hs1.3, hs1.2          handshakes per proxy CPU-second (higher is better)
  hs1.3-policy          the same with the full policy (SSLAUTH, DN patterns, PeSIT)
  bulk-up, bulk-down    proxy CPU-seconds per GB through one connection
  bulk-up-4             the same through four connections
  rtt                   proxy CPU-µs per 1-byte round trip
  idle                  RSS per idle TLS connection (KB, 1,000 connections)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import peers
from . import run as bench_run
from .pki import make_pki


@dataclass(frozen=True)
class Scenario:
    load: str  # bench.load scenario
    options: dict[str, Any]
    metric: str  # key in the load result; "a.b" for nested keys
    unit: str
    higher_is_better: bool = False
    policy: bool = False


SCENARIOS = {
    "hs1.3": Scenario("handshakes", {"tls": "1.3"}, "per_proxy_cpu_s", "handshakes/CPU-s", higher_is_better=True),
    "hs1.2": Scenario("handshakes", {"tls": "1.2"}, "per_proxy_cpu_s", "handshakes/CPU-s", higher_is_better=True),
    "hs1.3-policy": Scenario(
        "handshakes", {"tls": "1.3"}, "per_proxy_cpu_s", "handshakes/CPU-s", higher_is_better=True, policy=True
    ),
    "bulk-up": Scenario("bulk", {"direction": "up", "conns": 1}, "proxy_cpu_s_per_gb", "CPU-s/GB"),
    "bulk-down": Scenario("bulk", {"direction": "down", "conns": 1}, "proxy_cpu_s_per_gb", "CPU-s/GB"),
    "bulk-up-4": Scenario("bulk", {"direction": "up", "conns": 4}, "proxy_cpu_s_per_gb", "CPU-s/GB"),
    "rtt": Scenario("rtt", {"size": 1, "count": 20_000, "seconds": 1.0}, "proxy_cpu_us_per_rt", "CPU-µs/round trip"),
    "idle": Scenario("idle", {"count": 1000, "seconds": 60, "concurrency": 16, "hold": 1}, "kb_per_conn", "KB/conn"),
}
HANDSHAKE_OPTIONS = {"concurrency": 8, "seconds": 2.5, "warmup": 0.5, "max": 50_000}
BULK_BYTES = 1536 << 20
LOAD_TIMEOUT = 120.0


FLOOR = "bare"


@dataclass(frozen=True)
class Build:
    label: str  # "A", "B", or "F" (the floor)
    revision: str  # a git revision, "worktree", or FLOOR
    path: Path  # where its `sidecar` package is imported from (unused for the floor)
    description: str

    @property
    def bare(self) -> bool:
        return self.revision == FLOOR


def _export(label: str, revision: str, work: Path) -> Build:
    if revision == FLOOR:
        return Build(label, revision, peers.REPO, "the bare relay on sidecar's TLS engine (bench/bare.py)")
    peers.export_sidecar(revision, work / f"sidecar-{label}")
    return Build(label, revision, peers.SidecarSource.path, peers.SidecarSource.revision)


def _measure(build: Build, scenario: Scenario, work: Path, pki: Path, backend: bench_run.Backend) -> float:
    peers.SidecarSource.path, peers.SidecarSource.revision = build.path, build.description
    options = dict(scenario.options)
    if scenario.load == "handshakes":
        options |= HANDSHAKE_OPTIONS
        if scenario.policy and peers.POLICY_IDENTIFY == "pesit":
            options["payload"] = "pesit"
    elif scenario.load == "bulk":
        options |= {"bytes": BULK_BYTES, "seconds": 60}
    kind = peers.Bare if build.bare else peers.Sidecar
    peer = kind(work, pki, backend.port, tickets="default", policy=scenario.policy)
    with bench_run.running(peer, {bench_run.PROXY_CPU}):
        result = bench_run.load(
            scenario.load,
            peer.port,
            pki,
            pinned=True,
            proxy_pid=peer.pid,
            backend_pid=backend.pid,
            timeout=LOAD_TIMEOUT,
            **options,
        )
    value = result.get(scenario.metric)
    if not isinstance(value, int | float):
        raise RuntimeError(f"{build.label} ({build.revision}): no {scenario.metric} in {result}")
    return float(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench.ab", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--a", default="HEAD~1", help="baseline: a git revision, 'worktree', or 'bare' (the floor; default HEAD~1)"
    )
    parser.add_argument("--b", default="worktree", help="candidate: a git revision, 'worktree' (default), or 'bare'")
    parser.add_argument("--floor", action="store_true", help="also measure the bare relay in every round")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), required=True)
    parser.add_argument("--rounds", type=int, default=6, help="rounds; each runs A and B once (default 6)")
    args = parser.parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        print("bench.ab needs at least 2 CPUs (proxy and load are pinned apart)", file=sys.stderr)
        return 2
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    scenario = SCENARIOS[args.scenario]
    os.sched_setaffinity(0, {bench_run.LOAD_CPU})
    with tempfile.TemporaryDirectory(prefix="sidecar-ab-") as tmp:
        work = Path(tmp)
        builds = (_export("A", args.a, work), _export("B", args.b, work))
        if args.floor:
            builds = (*builds, _export("F", FLOOR, work))
        for build in builds:
            print(f"{build.label}: {build.revision} = {build.description}", flush=True)
        pki = make_pki(work / "pki")
        backend = bench_run.Backend({bench_run.LOAD_CPU})
        values: dict[str, list[float]] = {build.label: [] for build in builds}
        try:
            for round_number in range(args.rounds):
                order = builds if round_number % 2 == 0 else builds[::-1]
                for build in order:
                    value = _measure(build, scenario, work, pki, backend)
                    values[build.label].append(value)
                    where = f"round {round_number + 1}/{args.rounds} {build.label}"
                    print(f"{where}: {value:.3f} {scenario.unit}", flush=True)
        finally:
            backend.stop()
    print(summary(args.scenario, scenario, values))
    return 0


def summary(name: str, scenario: Scenario, values: dict[str, list[float]]) -> str:
    a, b = statistics.median(values["A"]), statistics.median(values["B"])
    pairs = zip(values["A"], values["B"], strict=True)
    wins = sum(1 for x, y in pairs if (y > x if scenario.higher_is_better else y < x))
    direction = "higher is better" if scenario.higher_is_better else "lower is better"
    lines = [f"{name}: {scenario.unit} ({direction}), {len(values['A'])} rounds"]
    for label in values:
        lines.append(
            f"  {label} median {statistics.median(values[label]):.3f}  "
            f"(min {min(values[label]):.3f}, max {max(values[label]):.3f})"
        )
    lines.append(f"  B / A = {b / a:.3f}; B better than A in {wins} of {len(values['A'])} rounds")
    if "F" in values:
        floor = statistics.median(values["F"])
        # Per round as well: the floor of the same minutes is the fairest reference on a shared machine.
        for label in ("A", "B"):
            per_round = [x / f for x, f in zip(values[label], values["F"], strict=True)]
            lines.append(
                f"  {label} / floor = {statistics.median(values[label]) / floor:.3f} "
                f"(median of per-round ratios {statistics.median(per_round):.3f})"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
