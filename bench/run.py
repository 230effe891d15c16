"""The benchmark: sidecar, HAProxy and stunnel side by side, on loopback, in one run.

    /tmp/venv/bin/python -m bench.run            # full run (about 12 minutes on 2 cores)
    /tmp/venv/bin/python -m bench.run --quick    # CI-sized run (under a minute)

Writes bench/results/<date>[-quick].json, .md and one PNG per metric. See bench/README.md.

Order of work: for each repetition, every peer in turn (the order rotates between repetitions so
no peer always runs first), each peer freshly started for each configuration. A measurement is a
`bench.load` subprocess with its own deadline; the orchestrator stops every process it started,
by PID, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import peers, procstat
from .pki import make_pki

HERE = Path(__file__).resolve().parent
PROXY_CPU = 0
LOAD_CPU = 1


@dataclass
class Settings:
    quick: bool
    reps: int
    hs_seconds: float
    hs_warmup: float
    hs_concurrency: int
    hs_c1_count: int
    bulk_bytes: int
    bulk_multi_conns: int
    rtt_count: int
    rtt_seconds: float
    idle_count: int
    scale_count: int  # 0 = skip
    unpinned: bool
    tickets_off: bool
    tls12: bool
    profile: bool
    peers: tuple[str, ...]

    @staticmethod
    def make(args: argparse.Namespace) -> Settings:
        peers_list = tuple(args.peers.split(","))
        # One single-process proxy holds 2 descriptors per connection: stay under the hard limit.
        scale = min(10_000, (peers.FD_HARD_LIMIT - 100) // 2) if peers.FD_HARD_LIMIT > 0 else 10_000
        if args.quick:
            return Settings(
                quick=True,
                reps=args.reps or 1,
                hs_seconds=1.5,
                hs_warmup=0.3,
                hs_concurrency=8,
                hs_c1_count=100,
                bulk_bytes=768 << 20,
                bulk_multi_conns=4,
                rtt_count=3000,
                rtt_seconds=1.0,
                idle_count=200,
                scale_count=0,
                unpinned=False,
                tickets_off=False,
                tls12=False,
                profile=False,
                peers=peers_list,
            )
        return Settings(
            quick=False,
            reps=args.reps or 5,
            hs_seconds=2.5,
            hs_warmup=0.5,
            hs_concurrency=8,
            hs_c1_count=300,
            bulk_bytes=1536 << 20,
            bulk_multi_conns=4,
            rtt_count=20000,
            rtt_seconds=1.0,
            idle_count=1000,
            scale_count=0 if args.no_scale else scale,
            unpinned=True,
            tickets_off=True,
            tls12=True,
            profile=not args.no_profile,
            peers=peers_list,
        )


# ---- processes -----------------------------------------------------------------------------------------
class Backend:
    def __init__(self, cpus: set[int] | None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.backend", "--seconds", "3600"],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            cwd=peers.REPO,
            env=_env(),
            preexec_fn=peers._preexec(cpus),
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        self.port = int(json.loads(line)["port"])
        self.pid = self.process.pid

    def pin(self, cpus: set[int] | None) -> None:
        os.sched_setaffinity(self.pid, cpus or peers.ALL_CPUS)

    def stop(self) -> None:
        peers.stop_pid(self.pid, self.process)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(peers.REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("OPENSSL_CONF", None)
    return env


@contextlib.contextmanager
def running(peer: peers.Peer, cpus: set[int] | None) -> Iterator[peers.Peer]:
    peer.start(cpus)
    try:
        yield peer
    finally:
        peer.stop()


FOREIGN_LIMIT = 0.15  # share of a core used by processes other than ours during a window
RETRIES_PER_MEASUREMENT = 2
RETRY_BUDGET = {"total": 30, "left": 30}  # per run (quick: 6): a busy machine cannot stretch it without bound


def foreign_cpu(result: dict[str, Any], pinned: bool) -> float | None:
    """CPU (in cores) that other processes took during the window: on the proxy's core and on the
    load core when pinned (the larger of the two), or over the whole machine when unpinned."""
    util, cores = result.get("util"), result.get("cores_busy")
    if not isinstance(util, dict) or not cores:
        return None
    load_side = util["client"] + util["backend"]
    if pinned and len(cores) > max(PROXY_CPU, LOAD_CPU):
        return round(max(cores[PROXY_CPU] - util["proxy"], cores[LOAD_CPU] - load_side, 0.0), 3)
    return round(max(sum(cores) - util["proxy"] - load_side, 0.0), 3)


def load(scenario: str, port: int, pki: Path, *, pinned: bool, **kwargs: Any) -> dict[str, Any]:
    """One measurement, repeated (at most twice, within a run-wide budget) when other processes took
    more than FOREIGN_LIMIT of a core we use; the cleanest window is kept and the attempts recorded."""
    attempts: list[dict[str, Any]] = []
    while True:
        result = load_once(scenario, port, pki, pinned=pinned, **kwargs)
        foreign = foreign_cpu(result, pinned)
        result["foreign_cpu"] = foreign
        attempts.append(result)
        if foreign is None or foreign <= FOREIGN_LIMIT:
            break
        if len(attempts) > RETRIES_PER_MEASUREMENT or RETRY_BUDGET["left"] <= 0:
            break
        RETRY_BUDGET["left"] -= 1
        time.sleep(1.0)
    best = min(attempts, key=lambda r: r["foreign_cpu"] if r.get("foreign_cpu") is not None else 9.0)
    best["attempts"] = len(attempts)
    best["foreign_cpu_attempts"] = [r.get("foreign_cpu") for r in attempts]
    best["contended"] = best.get("foreign_cpu") is not None and best["foreign_cpu"] > FOREIGN_LIMIT
    return best


def load_once(
    scenario: str,
    port: int,
    pki: Path,
    *,
    pinned: bool,
    proxy_pid: int | None,
    backend_pid: int,
    timeout: float,
    **options: Any,
) -> dict[str, Any]:
    """One measurement: a bench.load subprocess (killed by PID if it overruns `timeout`)."""
    cmd = [
        sys.executable,
        "-m",
        "bench.load",
        scenario,
        "--port",
        str(port),
        "--pki",
        str(pki),
        "--backend-pid",
        str(backend_pid),
    ]
    if proxy_pid:
        cmd += ["--proxy-pid", str(proxy_pid)]
    # Always explicit: a child would otherwise inherit the orchestrator's pinning to the load CPU.
    cmd += ["--cpus", str(LOAD_CPU) if pinned else ",".join(str(cpu) for cpu in sorted(peers.ALL_CPUS))]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            cmd.append(flag)
        elif value not in (None, False):
            cmd += [flag, str(value)]
    load1 = procstat.loadavg()[0]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=peers.REPO, env=_env())
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        peers.stop_pid(process.pid, process, grace=2)
        return {"failed": f"timed out after {timeout:.0f}s", "loadavg_1m": load1}
    if process.returncode != 0:
        return {"failed": f"exit {process.returncode}: {err.decode(errors='replace')[-800:]}", "loadavg_1m": load1}
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    result["loadavg_1m"] = load1
    return result


def limit_of(result: dict[str, Any], pinned: bool) -> str:
    """Which side was saturated during the window (see README "Which side was the limit")."""
    util = result.get("util")
    if not util:
        return "?"
    cores = result.get("cores_busy") or []
    load_side = util["client"] + util["backend"]
    if pinned:
        if util["proxy"] >= 0.9:
            return "proxy"
        if load_side >= 0.9:
            return "load"
        if len(cores) > LOAD_CPU and cores[LOAD_CPU] >= 0.95:
            return "load core (shared)"
        if len(cores) > PROXY_CPU and cores[PROXY_CPU] >= 0.95:
            return "proxy core (shared)"
        return "neither (latency)"
    if util["proxy"] + load_side >= 1.8 or (cores and min(cores) >= 0.95):
        return "both cores"
    if util["client"] >= 0.9:
        return "load"
    if util["proxy"] >= 0.9:
        return "proxy"
    return "neither (latency)"


# ---- the plan --------------------------------------------------------------------------------------------
@dataclass
class Recorder:
    raw: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def add(self, peer: str, case: str, rep: int, pinned: bool, result: dict[str, Any]) -> None:
        result = dict(result)
        result.update(peer=peer, case=case, rep=rep, pinned=pinned)
        if isinstance(result.get("util"), dict):
            result["util"]["load"] = round(result["util"]["client"] + result["util"]["backend"], 3)
        if "failed" not in result and "util" in result:
            result["limit"] = limit_of(result, pinned)
        self.raw.append(result)
        print(f"{time.monotonic() - self.started:6.0f}s {peer:<10} {case:<22} {_summary(result)}", flush=True)


def _summary(result: dict[str, Any]) -> str:
    if "failed" in result:
        return f"FAILED {result['failed'][:200]}"
    util = result.get("util") or {}
    tail = (
        f"  util proxy {util.get('proxy', 0):.2f} (sys {result.get('proxy_sys_share')}) client "
        f"{util.get('client', 0):.2f} backend {util.get('backend', 0):.2f} cores {result.get('cores_busy')} "
        f"-> {result.get('limit', '')}"
    )
    if result.get("attempts", 1) > 1 or result.get("contended"):
        tail += f"  [foreign {result.get('foreign_cpu_attempts')}{' CONTENDED' if result.get('contended') else ''}]"
    if "handshakes" in result:
        return (
            f"{result['rate']:8.1f}/s  {result['per_proxy_cpu_s'] or 0:8.1f}/proxy-cpu-s  connect p50 "
            f"{result['connect_ms']['p50']} ms  err {result['errors']}" + tail
        )
    if "mb_per_s" in result:
        return (
            f"{result['mb_per_s']} MB/s  {result['proxy_cpu_s_per_gb']} proxy-cpu-s/GB  err {result['errors']}" + tail
        )
    if "rtt_us" in result:
        return f"p50 {result['rtt_us']['p50']} us  p99 {result['rtt_us']['p99']} us" + tail
    if "kb_per_conn" in result:
        return (
            f"{result['held']}/{result['requested']} held  {result['kb_per_conn']} KB/conn  open errors "
            f"{result['open_errors']}  echo failures {result['echo_failures_after_hold']}"
        )
    return json.dumps(result)[:200]


def measure_peer(s: Settings, rec: Recorder, name: str, rep: int, work: Path, pki: Path, backend: Backend) -> None:
    cls = peers.PEERS[name]
    common = {"backend_pid": backend.pid}
    hs = {"seconds": s.hs_seconds, "warmup": s.hs_warmup, "concurrency": s.hs_concurrency}
    hs_timeout = s.hs_seconds + s.hs_warmup + 60
    pinned_proxy = {PROXY_CPU}
    tls_versions = ("1.3", "1.2") if s.tls12 else ("1.3",)

    # 1. default configuration, pinned: everything.
    backend.pin({LOAD_CPU})
    with running(cls(work, pki, backend.port, tickets="default"), pinned_proxy) as peer:
        args = {"pinned": True, "proxy_pid": peer.pid, **common}
        for tls in tls_versions:
            rec.add(
                name,
                f"hs{tls}-default",
                rep,
                True,
                load("handshakes", peer.port, pki, timeout=hs_timeout, tls=tls, **hs, **args),
            )
        rec.add(
            name,
            "hs1.3-c1",
            rep,
            True,
            load(
                "handshakes",
                peer.port,
                pki,
                timeout=hs_timeout,
                tls="1.3",
                seconds=s.hs_seconds,
                warmup=0.2,
                concurrency=1,
                max=s.hs_c1_count,
                **args,
            ),
        )
        for direction, conns in (("up", 1), ("down", 1), ("up", s.bulk_multi_conns)):
            rec.add(
                name,
                f"bulk-{direction}-{conns}",
                rep,
                True,
                load(
                    "bulk",
                    peer.port,
                    pki,
                    timeout=120,
                    direction=direction,
                    conns=conns,
                    bytes=s.bulk_bytes,
                    seconds=60,
                    **args,
                ),
            )
        for size in (1, 1024):
            rec.add(
                name,
                f"rtt-{size}",
                rep,
                True,
                load("rtt", peer.port, pki, timeout=60, size=size, count=s.rtt_count, seconds=s.rtt_seconds, **args),
            )
        rec.add(
            name,
            "idle",
            rep,
            True,
            load("idle", peer.port, pki, timeout=120, count=s.idle_count, seconds=60, concurrency=16, hold=1, **args),
        )

    # 2. session tickets off for real on every peer (own switch + NumTickets = 0), pinned.
    if s.tickets_off:
        with running(cls(work, pki, backend.port, tickets="off"), pinned_proxy) as peer:
            args = {"pinned": True, "proxy_pid": peer.pid, **common}
            for tls in tls_versions:
                rec.add(
                    name,
                    f"hs{tls}-off",
                    rep,
                    True,
                    load("handshakes", peer.port, pki, timeout=hs_timeout, tls=tls, **hs, **args),
                )

    # 3. sidecar: the full policy (SSLAUTH 1,000 statements, DNUSER, DNISSUER[, PeSIT]); the floor
    #    relays the same first message with no policy at all, for the "≥ 0.90× the floor" ratio.
    if name in ("sidecar", "bare"):
        payload = "pesit" if peers.POLICY_IDENTIFY == "pesit" else "x"
        with running(cls(work, pki, backend.port, tickets="default", policy=True), pinned_proxy) as peer:
            args = {"pinned": True, "proxy_pid": peer.pid, **common}
            for tls in tls_versions:
                rec.add(
                    name,
                    f"hs{tls}-policy",
                    rep,
                    True,
                    load("handshakes", peer.port, pki, timeout=hs_timeout, tls=tls, payload=payload, **hs, **args),
                )

    # 4. unpinned: the proxy, the load and the backend may run anywhere.
    if s.unpinned:
        backend.pin(None)
        with running(cls(work, pki, backend.port, tickets="default"), None) as peer:
            args = {"pinned": False, "proxy_pid": peer.pid, **common}
            rec.add(
                name,
                "hs1.3-default-unpinned",
                rep,
                False,
                load("handshakes", peer.port, pki, timeout=hs_timeout, tls="1.3", **hs, **args),
            )
            rec.add(
                name,
                "bulk-up-1-unpinned",
                rep,
                False,
                load(
                    "bulk", peer.port, pki, timeout=120, direction="up", conns=1, bytes=s.bulk_bytes, seconds=60, **args
                ),
            )
            rec.add(
                name,
                "rtt-1-unpinned",
                rep,
                False,
                load("rtt", peer.port, pki, timeout=60, size=1, count=s.rtt_count, seconds=s.rtt_seconds, **args),
            )
        backend.pin({LOAD_CPU})


def measure_floor(s: Settings, rec: Recorder, rep: int, pki: Path, backend: Backend) -> None:
    """The harness alone: plaintext straight to the backend, client and backend on the load core."""
    backend.pin({LOAD_CPU})
    args = {"pinned": True, "proxy_pid": None, "backend_pid": backend.pid, "plain": True}
    rec.add(
        "direct",
        "bulk-up-1",
        rep,
        True,
        load("bulk", backend.port, pki, timeout=120, direction="up", conns=1, bytes=s.bulk_bytes, seconds=60, **args),
    )
    rec.add(
        "direct",
        "bulk-down-1",
        rep,
        True,
        load("bulk", backend.port, pki, timeout=120, direction="down", conns=1, bytes=s.bulk_bytes, seconds=60, **args),
    )
    for size in (1, 1024):
        rec.add(
            "direct",
            f"rtt-{size}",
            rep,
            True,
            load("rtt", backend.port, pki, timeout=60, size=size, count=s.rtt_count, seconds=s.rtt_seconds, **args),
        )


def measure_scale(s: Settings, rec: Recorder, work: Path, pki: Path, backend: Backend) -> None:
    """`scale_count` idle mutual-TLS connections at once, held, then echoed on: errors and memory."""
    backend.pin({LOAD_CPU})
    for name in s.peers:
        with running(peers.PEERS[name](work, pki, backend.port, tickets="default"), {PROXY_CPU}) as peer:
            result = load(
                "idle",
                peer.port,
                pki,
                timeout=240,
                count=s.scale_count,
                seconds=120,
                concurrency=32,
                hold=5,
                pinned=True,
                proxy_pid=peer.pid,
                backend_pid=backend.pid,
            )
            if result.get("open_errors") or result.get("echo_failures_after_hold") or "failed" in result:
                with contextlib.suppress(OSError):  # the peer's own words, before its work dir goes
                    result["peer_log_tail"] = peer.log_path.read_text(errors="replace")[-1500:]
            rec.add(name, "scale", 0, True, result)


def profile_sidecar(s: Settings, work: Path, pki: Path, backend: Backend, out_dir: Path, stem: str) -> dict[str, Any]:
    """py-spy (sampling, from outside) on a pinned sidecar during bulk, small-message and handshake load."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        return {"skipped": "py-spy not installed (pip install py-spy)"}
    backend.pin({LOAD_CPU})
    profiles: dict[str, Any] = {}
    cases = {
        "bulk-up-1": ("bulk", {"direction": "up", "conns": 1, "bytes": s.bulk_bytes * 2, "seconds": 60}),
        "rtt-1": ("rtt", {"size": 1, "count": 200_000, "seconds": 6}),
        "hs1.3": ("handshakes", {"tls": "1.3", "seconds": 6, "warmup": 0.2, "concurrency": s.hs_concurrency}),
        "hs1.3-policy": (
            "handshakes",
            {
                "tls": "1.3",
                "seconds": 6,
                "warmup": 0.2,
                "concurrency": s.hs_concurrency,
                "payload": "pesit" if peers.POLICY_IDENTIFY == "pesit" else "x",
            },
        ),
    }
    for case, (scenario, options) in cases.items():
        sidecar = peers.Sidecar(work, pki, backend.port, tickets="default", policy=case.endswith("-policy"))
        with running(sidecar, {PROXY_CPU}) as peer:
            raw = out_dir / f"{stem}-profile-{case}.txt"
            spy = subprocess.Popen(
                [
                    pyspy,
                    "record",
                    "--pid",
                    str(peer.pid),
                    "--rate",
                    "250",
                    "--duration",
                    "5",
                    "--format",
                    "raw",
                    "--function",
                    "--nonblocking",
                    "--output",
                    str(raw),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            time.sleep(0.3)
            result = load(
                scenario,
                peer.port,
                pki,
                timeout=120,
                pinned=True,
                proxy_pid=peer.pid,
                backend_pid=backend.pid,
                **options,
            )
            try:
                _, err = spy.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                peers.stop_pid(spy.pid, spy)
                err = b"timeout"
            if not raw.exists():
                profiles[case] = {"failed": err.decode(errors="replace")[-500:]}
                continue
            profiles[case] = {"file": raw.name, "load": _summary(result), **summarize_profile(raw)}
    return profiles


def summarize_profile(raw: Path, top: int = 15) -> dict[str, Any]:
    """Collapsed stacks (`a;b;c count`) -> the functions with the most self and inclusive samples."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_short_frame(frame) for frame in stack.split(";") if frame and not frame.startswith("process ")]
        frames = [frame for frame in frames if not frame.startswith("thread ")]
        if not frames:
            continue
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            if not any(marker in frame for marker in _DRIVER_FRAMES):
                inclusive[frame] = inclusive.get(frame, 0) + count

    def ranked(table: dict[str, int]) -> list[list[Any]]:
        rows = sorted(table.items(), key=lambda item: -item[1])[:top]
        return [[name, round(100 * count / total, 1)] for name, count in rows]

    return {"samples": total, "self_pct": ranked(own), "inclusive_pct": ranked(inclusive)}


# Frames every sample goes through (interpreter start, cli, the event loop's entry): left out of
# the inclusive ranking. `Runner.run` *self* time stays in the self ranking: it is the time spent
# in uvloop's C code (its socket reads and writes, epoll bookkeeping) that py-spy cannot split.
_DRIVER_FRAMES = ("<frozen runpy>", "(__main__.py:", "(cli.py:", "(runners.py:", "run (__init__.py:")


def _short_frame(frame: str) -> str:
    # py-spy raw frames look like `function (path/to/file.py:123)`; keep function + file name + line.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file_part, _, line = where.rpartition(":")
    return f"{name} ({Path(file_part).name}:{line})" if file_part else name


# ---- aggregation -----------------------------------------------------------------------------------------
METRICS: dict[str, tuple[str, str, str]] = {
    # key: (path in a result, unit, better)
    "rate": ("rate", "/s", "higher"),
    "per_proxy_cpu_s": ("per_proxy_cpu_s", "/proxy-CPU-s", "higher"),
    "connect_p50_ms": ("connect_ms.p50", "ms", "lower"),
    "connect_p99_ms": ("connect_ms.p99", "ms", "lower"),
    "mb_per_s": ("mb_per_s", "MB/s", "higher"),
    "proxy_cpu_s_per_gb": ("proxy_cpu_s_per_gb", "CPU-s/GB", "lower"),
    "rtt_p50_us": ("rtt_us.p50", "µs", "lower"),
    "rtt_p99_us": ("rtt_us.p99", "µs", "lower"),
    "proxy_cpu_us_per_rt": ("proxy_cpu_us_per_rt", "CPU-µs", "lower"),
    "kb_per_conn": ("kb_per_conn", "KB", "lower"),
    "util_proxy": ("util.proxy", "", "-"),
    "util_client": ("util.client", "", "-"),
    "util_backend": ("util.backend", "", "-"),
    "util_load": ("util.load", "", "-"),
    "proxy_sys_share": ("proxy_sys_share", "", "-"),
}


def _get(result: dict[str, Any], path: str) -> Any:
    value: Any = result
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def aggregate(raw: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{case: {peer: {metric: {median, min, max, n}, limit: [...]}}}"""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for result in raw:
        grouped.setdefault((result["case"], result["peer"]), []).append(result)
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for (case, peer), results in grouped.items():
        good = [r for r in results if "failed" not in r]
        entry: dict[str, Any] = {"runs": len(results), "failed": len(results) - len(good)}
        for metric, (path, _unit, _better) in METRICS.items():
            values = [v for r in good if isinstance(v := _get(r, path), int | float)]
            if values:
                entry[metric] = {
                    "median": round(statistics.median(values), 3),
                    "min": min(values),
                    "max": max(values),
                    "n": len(values),
                }
        entry["limit"] = sorted({r.get("limit", "?") for r in good})
        entry["contended_runs"] = sum(1 for r in good if r.get("contended"))
        entry["retries"] = sum(r.get("attempts", 1) - 1 for r in good)
        errors = sum(int(r.get("errors", 0) or 0) + int(r.get("open_errors", 0) or 0) for r in good)
        entry["errors"] = errors
        if case == "scale" and good:
            r = good[0]
            entry.update(
                held=r["held"],
                requested=r["requested"],
                open_errors=r["open_errors"],
                echo_failures=r["echo_failures_after_hold"],
                proxy_threads=r["proxy_threads"],
            )
        table.setdefault(case, {})[peer] = entry
    return table


def med(table: dict[str, Any], case: str, peer: str, metric: str) -> float | None:
    value = table.get(case, {}).get(peer, {}).get(metric)
    return value["median"] if isinstance(value, dict) else None


def bar_checks(table: dict[str, Any], s: Settings) -> list[dict[str, Any]]:
    """The issue's targets for sidecar, as ratios (sidecar / reference)."""
    checks: list[dict[str, Any]] = []

    def ratio(case: str, metric: str, ref: str = "haproxy") -> float | None:
        a, b = med(table, case, "sidecar", metric), med(table, case, ref, metric)
        return round(a / b, 3) if a is not None and b else None

    def add(name: str, value: float | None, target: str, ok: bool | None) -> None:
        checks.append({"target": name, "value": value, "bar": target, "met": ok})

    for case in ("hs1.3-default", "hs1.2-default", "hs1.3-off", "hs1.2-off"):
        if case in table:
            r = ratio(case, "per_proxy_cpu_s")
            add(f"handshakes per proxy CPU-s vs HAProxy ({case})", r, "≥ 1.30×", None if r is None else r >= 1.3)
    # Against the floor: the bare relay on the same TLS engine (issue 18). Neither sends a session
    # ticket in any mode, so the "default" rows are like for like too (the quick run has no "off").
    floor_bars = (("hs1.3-off", 0.95), ("hs1.2-off", 0.95), ("hs1.3-policy", 0.90), ("hs1.2-policy", 0.90))
    if "hs1.3-off" not in table:
        floor_bars = (("hs1.3-default", 0.95), *floor_bars)
    for case, bar in floor_bars:
        if case in table and "bare" in table[case]:
            r = ratio(case, "per_proxy_cpu_s", "bare")
            add(f"handshakes per proxy CPU-s vs the bare relay ({case})", r, f"≥ {bar:.2f}×",
                None if r is None else r >= bar)  # fmt: skip
    if "rtt-1" in table and "bare" in table["rtt-1"]:
        r = ratio("rtt-1", "proxy_cpu_us_per_rt", "bare")
        add("proxy CPU per 1-byte round trip vs the bare relay", r, "≤ 1.05×", None if r is None else r <= 1.05)
    if "idle" in table and "bare" in table["idle"]:
        r = ratio("idle", "kb_per_conn", "bare")
        add("RSS per idle TLS connection vs the bare relay", r, "≤ 1.10×", None if r is None else r <= 1.10)
    for case in ("hs1.3-default", "hs1.2-default"):
        if case in table and "stunnel" in table[case]:
            r = ratio(case, "per_proxy_cpu_s", "stunnel")
            add(f"handshakes per proxy CPU-s vs stunnel ({case})", r, "≥ 2.00×", None if r is None else r >= 2.0)
    for case in ("bulk-up-1", "bulk-down-1", f"bulk-up-{s.bulk_multi_conns}"):
        if case in table:
            r = ratio(case, "proxy_cpu_s_per_gb")
            add(f"proxy CPU per GB vs HAProxy ({case})", r, "≤ 0.85×", None if r is None else r <= 0.85)
    if "rtt-1" in table:
        r = ratio("rtt-1", "rtt_p50_us")
        add("1-byte round trip p50 vs HAProxy", r, "≤ 1.15×", None if r is None else r <= 1.15)
    kb = med(table, "idle", "sidecar", "kb_per_conn")
    if kb is not None:
        add(f"KB per idle TLS connection ({s.idle_count} connections)", kb, "≤ 40 KB", kb <= 40)
    scale = table.get("scale", {}).get("sidecar")
    if scale:
        ok = scale["held"] == scale["requested"] and not scale["open_errors"] and not scale["echo_failures"]
        add(
            f"{scale['requested']} concurrent idle connections held without error (10,000 asked; fd limit)",
            scale["held"],
            f"{scale['requested']} held, 0 errors",
            ok,
        )
    for tls in ("1.3", "1.2"):
        plain, policy = (
            med(table, f"hs{tls}-default", "sidecar", "per_proxy_cpu_s"),
            med(table, f"hs{tls}-policy", "sidecar", "per_proxy_cpu_s"),
        )
        if plain and policy:
            cost = round(1 - policy / plain, 3)
            add(f"policy cost, TLS {tls} (1 − policy/plain handshakes per proxy CPU-s)", cost, "≤ 5 %", cost <= 0.05)
    return checks


# ---- main -------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized run: 1 repetition, TLS 1.3, pinned only")
    parser.add_argument("--reps", type=int, default=0, help="repetitions (default 5; quick 1)")
    parser.add_argument("--peers", default="haproxy,sidecar,stunnel,bare", help="bare = the floor (bench/bare.py)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--no-scale", action="store_true", help="skip the 10,000-connection test")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile of sidecar")
    parser.add_argument("--no-install", action="store_true", help="do not apt-get install missing peers")
    parser.add_argument(
        "--sidecar",
        default="HEAD",
        metavar="REV",
        help="sidecar to measure: a git revision, exported with git archive (default HEAD), "
        "or `worktree` for the working tree as it is",
    )
    args = parser.parse_args(argv)
    settings = Settings.make(args)
    if (os.cpu_count() or 1) < 2:
        print("needs at least 2 CPUs (proxy on CPU 0, load on CPU 1)", file=sys.stderr)
        return 2
    os.sched_setaffinity(0, {LOAD_CPU})  # the orchestrator stays off the proxy's core
    RETRY_BUDGET["total"] = RETRY_BUDGET["left"] = 6 if settings.quick else 30
    if not args.no_install:
        peers.ensure_installed()
    started = time.monotonic()
    now = dt.datetime.now()
    stem = now.strftime("%Y-%m-%d") + ("-quick" if settings.quick else "")
    args.out.mkdir(parents=True, exist_ok=True)
    rec = Recorder()
    tmp_root = Path(tempfile.mkdtemp(prefix="sidecar-bench-"))
    try:
        peers.export_sidecar(args.sidecar, tmp_root / "sidecar-src")
        meta: dict[str, Any] = {
            "date": now.isoformat(timespec="seconds"),
            "mode": "quick" if settings.quick else "full",
            "settings": settings.__dict__,
            "machine": {
                "cpus": os.cpu_count(),
                "kernel": platform.release(),
                "python": platform.python_version(),
                "fd_hard_limit": peers.FD_HARD_LIMIT,
                "cpu_model": _cpu_model(),
            },
            "versions": {name: cls.version() for name, cls in peers.PEERS.items() if name in settings.peers},
            "client": "bench.load: pyOpenSSL " + _pyopenssl_version() + "; TLS_AES_128_GCM_SHA256 (1.3) / "
            "ECDHE-ECDSA-AES128-GCM-SHA256 (1.2); group P-256; no resumption; server chain not verified "
            "for handshake rates",
            "pinning": {"proxy_cpu": PROXY_CPU, "load_cpu": LOAD_CPU},
            "loadavg_start": procstat.loadavg(),
        }
        work = tmp_root
        pki = make_pki(work / "pki")
        backend = Backend({LOAD_CPU})
        try:
            print(f"backend pid {backend.pid} port {backend.port}; work dir {work}", flush=True)
            meta["tickets_probe"] = probe_tickets(settings, work, pki, backend)
            for rep in range(settings.reps):
                order = list(settings.peers[rep % len(settings.peers) :] + settings.peers[: rep % len(settings.peers)])
                print(f"repetition {rep + 1}/{settings.reps}: {', '.join(order)}", flush=True)
                measure_floor(settings, rec, rep, pki, backend)
                for name in order:
                    measure_peer(settings, rec, name, rep, work, pki, backend)
            if settings.profile and "sidecar" in settings.peers:
                print("profile: py-spy on sidecar", flush=True)
                meta["profile"] = profile_sidecar(settings, work, pki, backend, args.out, stem)
            if settings.scale_count:  # last: stunnel's thread per connection inflates the load average
                print(f"scale: {settings.scale_count} idle connections per peer", flush=True)
                measure_scale(settings, rec, work, pki, backend)
        finally:
            backend.stop()
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    meta["loadavg_end"] = procstat.loadavg()
    meta["retries_used"] = RETRY_BUDGET["total"] - RETRY_BUDGET["left"]
    meta["duration_s"] = round(time.monotonic() - started, 1)
    table = aggregate(rec.raw)
    document = {**meta, "results": table, "bar": bar_checks(table, settings), "raw": rec.raw}
    json_path = args.out / f"{stem}.json"
    json_path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    from .report import write_report

    md_path = write_report(document, args.out, stem)
    print(f"wrote {json_path} and {md_path} in {meta['duration_s']} s", flush=True)
    return 0


def probe_tickets(s: Settings, work: Path, pki: Path, backend: Backend) -> dict[str, Any]:
    """NewSessionTicket messages sent by each peer in each ticket mode (one handshake each)."""
    result: dict[str, Any] = {}
    modes = peers.TICKET_MODES if not s.quick else ("default",)
    for name in s.peers:
        for mode in modes:
            with running(peers.PEERS[name](work, pki, backend.port, tickets=mode), None) as peer:
                result[f"{name}/{mode}"] = {tls: peers.tickets_probe(peer.port, pki, tls) for tls in ("1.3", "1.2")}
    return result


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as file:
        for line in file:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def _pyopenssl_version() -> str:
    import OpenSSL
    from OpenSSL import SSL

    return f"{OpenSSL.__version__} ({SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()})"


if __name__ == "__main__":
    sys.exit(main())
