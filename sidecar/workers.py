"""Worker processes (`workers: N | auto`, SPEC 8.4): how many, and the fleet's admin answers summed.

* `usable_cpus()` is what `auto` means: the CPUs this process may run on (its affinity mask, which
  `taskset` and Kubernetes' static CPU manager set) bounded by the cgroup v2 CPU quota (`cpu.max` of
  its cgroup and every parent: a container limited to 1.5 CPUs gets 2 workers, rounded up, since a
  quota is a rate over the period and not a number of cores).
* `merge_stats`, `merge_metrics`, `list_connections` turn what each worker answered on its local
  channel into the one answer of the supervisor's admin endpoint. They are generic over the shape
  of the answers (numbers add up, mappings merge key by key; counters and histograms add up,
  gauges that are the same in every worker are taken once), so a counter added to the workers'
  /stats or /metrics is aggregated without a change here.

No sockets, no asyncio: the supervisor (`sidecar.supervisor`) does the talking.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

MAX_WORKERS = 256


def usable_cpus(proc: Path = Path("/proc"), cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: affinity, bounded by the cgroup v2 quota; at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_limit(proc, cgroup_root)
    if quota is not None:
        cpus = min(cpus, quota)
    return max(1, min(cpus, MAX_WORKERS))


def cgroup_cpu_limit(proc: Path = Path("/proc"), cgroup_root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The tightest `cpu.max` quota on the way from this process's cgroup to the root, in CPUs (rounded up).

    None without cgroup v2 or without a quota (`max`).
    """
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return None
    relative = next((line[3:] for line in lines if line.startswith("0::")), None)
    if relative is None:
        return None
    limit: int | None = None
    folder = cgroup_root / relative.lstrip("/")
    while True:
        parsed = parse_cpu_max(_read(folder / "cpu.max"))
        if parsed is not None:
            limit = parsed if limit is None else min(limit, parsed)
        if folder == cgroup_root or cgroup_root not in folder.parents:
            return limit
        folder = folder.parent


def parse_cpu_max(text: str | None) -> int | None:
    """`cpu.max` is "$QUOTA $PERIOD" or "max $PERIOD": CPUs allowed, rounded up; None = no limit."""
    if not text:
        return None
    fields = text.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return max(1, math.ceil(quota / period))


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def resolve_workers(setting: int | str) -> int:
    return usable_cpus() if setting == "auto" else int(setting)


# ---- aggregation ------------------------------------------------------------------------------------
def merge_stats(answers: Sequence[Mapping[str, Any]], own: Mapping[str, Any]) -> dict[str, Any]:
    """The workers' /stats summed; `own` (uptime, generation, reloads: the supervisor's) wins."""
    merged: dict[str, Any] = {}
    for answer in answers:
        merged = _merge(merged, answer)
    merged.update(own)
    return merged


def _merge(into: Any, other: Any) -> Any:
    if isinstance(into, Mapping) and isinstance(other, Mapping):
        result = dict(into)
        for key, value in other.items():
            result[key] = _merge(result[key], value) if key in result else value
        return result
    if isinstance(into, bool) and isinstance(other, bool):
        return into and other  # e.g. backend_up: up only if every worker sees it up
    if isinstance(into, int | float) and isinstance(other, int | float):
        return into + other
    return into  # text and lists: the same everywhere or not meaningful summed; the first wins


def list_connections(answers: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Every worker's live connections, each with its `worker` index (ids are unique per worker)."""
    return [{**conn, "worker": index} for index, listed in enumerate(answers) for conn in listed]


# Gauges that say the same in every worker (or where the fleet's value is the lowest or the highest):
# taken once instead of summed.
_GAUGES_TAKEN_ONCE = {
    "sidecar_config_generation": min,
    "sidecar_uptime_seconds": max,
    "sidecar_ready": min,
    "sidecar_build_info": max,
    "sidecar_certificate_expiry_timestamp_seconds": min,
    "sidecar_crl_next_update_timestamp_seconds": min,
    "sidecar_process_start_time_seconds": min,
    "sidecar_process_max_fds": min,
}


def merge_metrics(texts: Iterable[str]) -> list[Metric]:
    """Workers' Prometheus text expositions, summed series by series (counters, histograms, most gauges)."""
    families: dict[str, Metric] = {}
    values: dict[tuple[str, str, tuple[tuple[str, str], ...]], list[float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            known = families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
            for sample in family.samples:
                key = (family.name, sample.name, tuple(sorted(sample.labels.items())))
                if key not in values:
                    values[key] = []
                    known.samples.append(sample)
                values[key].append(sample.value)
    for name, family in families.items():
        combine = _GAUGES_TAKEN_ONCE.get(name, sum)
        family.samples = [
            sample._replace(value=combine(values[(name, sample.name, tuple(sorted(sample.labels.items())))]))
            for sample in family.samples
        ]
    return list(families.values())
