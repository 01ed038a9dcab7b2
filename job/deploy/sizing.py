"""How big a LocalCluster the machine allows: the cores this process may run on and the memory it may
use, cgroup limits included (a container or a batch job often sees a whole host's cores and memory in
/proc but may use only part of them).

Used when a local cluster config leaves n_workers or memory_limit as "auto" (the default): the job then
uses the whole machine, as a plain scikit-learn script would, and says how it decided.
May use: the standard library only.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

# Left to the client, the scheduler and the operating system when the workers' limits are derived
# from the machine's memory.
RESERVED_FRACTION = 0.15
MIN_RESERVED_BYTES = 1 * 2**30


@dataclass(frozen=True)
class Sizing:
    n_workers: int
    threads_per_worker: int
    memory_limit: int  # bytes per worker
    reason: str

    def to_dict(self) -> dict:
        return {
            "n_workers": self.n_workers,
            "threads_per_worker": self.threads_per_worker,
            "memory_limit": self.memory_limit,
            "reason": self.reason,
        }


def usable_cores() -> tuple[int, str]:
    """The CPUs this process may run on (its affinity mask, e.g. `taskset`), capped by a cgroup CPU
    quota (cpu.max, or cfs_quota_us / cfs_period_us on cgroup v1) when one is set."""
    try:
        cores, how = len(os.sched_getaffinity(0)), "CPU affinity"
    except AttributeError:  # not on Linux
        cores, how = os.cpu_count() or 1, "os.cpu_count()"
    quota = cgroup_cpu_quota()
    if quota is not None and quota < cores:
        return max(1, math.floor(quota)), f"cgroup CPU quota {quota:g} (affinity allows {cores})"
    return cores, f"{cores} core(s) by {how}"


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup's quota, or None when there is none."""
    v2 = root / "cpu.max"
    try:
        quota, period = v2.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def cgroup_memory_limit(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes allowed by the cgroup's memory limit (memory.max on v2, memory.limit_in_bytes on v1), or
    None when there is none (v1 reports "no limit" as a huge number)."""
    for path in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        try:
            value = int(text)
        except ValueError:
            continue
        return None if value >= 2**60 else value
    return None


def usable_memory() -> tuple[int, str]:
    """The memory this process may use: the machine's, or the cgroup limit when that is lower."""
    import psutil

    total = int(psutil.virtual_memory().total)
    limit = cgroup_memory_limit()
    if limit is not None and limit < total:
        return limit, f"cgroup memory limit {limit / 2**30:.1f} GiB (machine {total / 2**30:.1f} GiB)"
    return total, f"{total / 2**30:.1f} GiB of memory"


def local_sizing(
    n_workers: int | None = None, threads_per_worker: int | None = None, memory_limit: int | None = None
) -> Sizing:
    """A LocalCluster sized to the machine: one single-threaded worker per usable core (our kernels run
    one BLAS call per task; processes keep the GIL out of the way), and the usable memory less a reserve
    for the client and scheduler, split evenly. Values given win over the machine's."""
    cores, cores_how = usable_cores()
    memory, memory_how = usable_memory()
    threads = threads_per_worker or 1
    workers = n_workers or max(1, cores // threads)
    reserve = max(MIN_RESERVED_BYTES, RESERVED_FRACTION * memory)
    per_worker = memory_limit or max(256 * 2**20, int((memory - reserve) / workers))
    parts = []
    if n_workers is None:
        parts.append(f"{workers} worker(s) x {threads} thread(s) for {cores_how}")
    if memory_limit is None:
        parts.append(
            f"{per_worker / 2**30:.1f} GiB each: {memory_how} less {reserve / 2**30:.1f} GiB kept for "
            "the client and scheduler"
        )
    reason = "; ".join(parts) if parts else "as configured"
    return Sizing(workers, threads, int(per_worker), reason)
