"""`workers: auto` and the sums of the supervisor's admin answers, on in-memory inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from sidecar.workers import cgroup_cpu_limit, list_connections, merge_metrics, merge_stats, parse_cpu_max


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("max 100000", None), ("200000 100000", 2), ("150000 100000", 2), ("50000 100000", 1), ("", None),
     (None, None), ("garbage", None), ("-1 100000", None), ("100000 0", None)],
)  # fmt: skip
def test_cpu_max(text: str | None, cpus: int | None) -> None:
    assert parse_cpu_max(text) == cpus


def test_the_tightest_quota_from_the_process_cgroup_to_the_root(tmp_path: Path) -> None:
    proc, root = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text("0::/kubepods/pod1/sidecar\n")
    (root / "kubepods" / "pod1" / "sidecar").mkdir(parents=True)
    (root / "kubepods" / "pod1" / "sidecar" / "cpu.max").write_text("max 100000\n")
    (root / "kubepods" / "pod1" / "cpu.max").write_text("300000 100000\n")
    (root / "kubepods" / "cpu.max").write_text("800000 100000\n")
    assert cgroup_cpu_limit(proc, root) == 3
    (proc / "self" / "cgroup").write_text("12:cpu:/legacy\n")  # cgroup v1 only: no quota read
    assert cgroup_cpu_limit(proc, root) is None


def test_stats_add_up_and_the_supervisor_says_the_rest() -> None:
    worker = {
        "uptime_s": 5.0,
        "generation": 3,
        "listeners": {"IN": {"accepted": 2, "rejected": {"sslauth": 1}, "backend_up": True}},
        "reloads": {"ok": 1, "refused": 0},
    }
    other = {
        "uptime_s": 1.0,
        "generation": 3,
        "listeners": {"IN": {"accepted": 3, "rejected": {"verify": 2}, "backend_up": False}},
        "reloads": {"ok": 0, "refused": 0},
    }
    merged = merge_stats([worker, other], {"uptime_s": 9.0, "generation": 3, "reloads": {"ok": 1, "refused": 0}})
    assert merged == {
        "uptime_s": 9.0,
        "generation": 3,
        "listeners": {"IN": {"accepted": 5, "rejected": {"sslauth": 1, "verify": 2}, "backend_up": False}},
        "reloads": {"ok": 1, "refused": 0},
    }


def test_connections_carry_their_worker() -> None:
    assert list_connections([[{"id": 1}], [{"id": 1}, {"id": 2}]]) == [
        {"id": 1, "worker": 0},
        {"id": 1, "worker": 1},
        {"id": 2, "worker": 1},
    ]


WORKER_METRICS = """\
# HELP sidecar_connections_accepted_total Accepted.
# TYPE sidecar_connections_accepted_total counter
sidecar_connections_accepted_total{{listener="IN"}} {accepted}
# HELP sidecar_handshake_duration_seconds Handshakes.
# TYPE sidecar_handshake_duration_seconds histogram
sidecar_handshake_duration_seconds_bucket{{listener="IN",le="0.1"}} {accepted}
sidecar_handshake_duration_seconds_bucket{{listener="IN",le="+Inf"}} {accepted}
sidecar_handshake_duration_seconds_count{{listener="IN"}} {accepted}
sidecar_handshake_duration_seconds_sum{{listener="IN"}} 0.5
# HELP sidecar_config_generation Generation.
# TYPE sidecar_config_generation gauge
sidecar_config_generation 4.0
# HELP sidecar_connections_active Active.
# TYPE sidecar_connections_active gauge
sidecar_connections_active{{listener="IN"}} 1.0
"""


def test_metrics_add_up_series_by_series() -> None:
    families = merge_metrics([WORKER_METRICS.format(accepted=2), WORKER_METRICS.format(accepted=5)])

    class Fixed:
        def collect(self):  # type: ignore[no-untyped-def]
            return families

    registry = CollectorRegistry()
    registry.register(Fixed())
    text = generate_latest(registry).decode()
    assert 'sidecar_connections_accepted_total{listener="IN"} 7.0' in text
    assert 'sidecar_handshake_duration_seconds_bucket{le="+Inf",listener="IN"} 7.0' in text
    assert 'sidecar_handshake_duration_seconds_sum{listener="IN"} 1.0' in text
    assert "sidecar_config_generation 4.0" in text  # the same in every worker: taken once
    assert 'sidecar_connections_active{listener="IN"} 2.0' in text
