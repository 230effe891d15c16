"""What /proc says about a process tree and the machine: CPU time, resident memory, load.

CPU is `utime + stime` of /proc/<pid>/stat (all threads of the process, including threads that
have already exited) plus `cutime + cstime` (children that were waited for), summed over the
process and its live descendants. The unit is clock ticks (1/100 s), so measured windows are kept
at ≥ 1 s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            data = file.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name (field 2) may contain blanks and parentheses: split after the last ')'.
    return data[data.rfind(")") + 2 :].split()


def children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def tree(pid: int) -> list[int]:
    """`pid` and every live descendant."""
    children = children_map()
    result, todo = [], [pid]
    while todo:
        current = todo.pop()
        result.append(current)
        todo.extend(children.get(current, ()))
    return result


def cpu_seconds(pids: list[int]) -> float:
    """user + sys of each process (its threads and waited-for children), in seconds."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            # After the ')' split: index 11 = utime (field 14), 12 = stime, 13 = cutime, 14 = cstime.
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / TICK


def tree_cpu_seconds(pid: int) -> float:
    return cpu_seconds(tree(pid))


def cpu_split(pids: list[int]) -> tuple[float, float]:
    """(user, system) seconds, as `cpu_seconds` but kept apart."""
    user = system = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            user += int(fields[11]) + int(fields[13])
            system += int(fields[12]) + int(fields[14])
    return user / TICK, system / TICK


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as file:
                total += int(file.read().split()[1]) * PAGE
        except OSError:
            pass
    return total


def tree_rss_bytes(pid: int) -> int:
    return rss_bytes(tree(pid))


def threads(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as file:
            for line in file:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def loadavg() -> tuple[float, float, float]:
    with open("/proc/loadavg") as file:
        one, five, fifteen = file.read().split()[:3]
    return float(one), float(five), float(fifteen)


@dataclass(frozen=True)
class CoreTimes:
    """Busy and total jiffies per CPU (from /proc/stat), to see what else ran on each core."""

    busy: tuple[int, ...]
    total: tuple[int, ...]

    @staticmethod
    def read() -> CoreTimes:
        busy, total = [], []
        with open("/proc/stat") as file:
            for line in file:
                if line.startswith("cpu") and line[3].isdigit():
                    values = [int(v) for v in line.split()[1:]]
                    idle = values[3] + values[4]  # idle + iowait
                    busy.append(sum(values[:8]) - idle)  # user nice system idle iowait irq softirq steal
                    total.append(sum(values[:8]))
        return CoreTimes(tuple(busy), tuple(total))

    def busy_fraction_since(self, before: CoreTimes) -> list[float]:
        return [
            round((b - b0) / (t - t0), 3) if t > t0 else 0.0
            for b, b0, t, t0 in zip(self.busy, before.busy, self.total, before.total, strict=True)
        ]
