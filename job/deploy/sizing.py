"""How big a LocalCluster the machine allows, from dask's readings of it: `dask.system.CPU_COUNT` (CPU
affinity and a cgroup CPU quota) and `distributed.system.MEMORY_LIMIT` (the machine's memory, a cgroup
limit, an RSS rlimit), less our reserve for the client and scheduler.

Used when a local cluster config leaves n_workers or memory_limit as "auto" (the default): the job then
uses the whole machine, as a plain scikit-learn script would, and says how it decided.
May use: dask and distributed's system readings only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

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
        return asdict(self)


def local_sizing(
    n_workers: int | None = None, threads_per_worker: int | None = None, memory_limit: int | None = None
) -> Sizing:
    """A LocalCluster sized to the machine: one single-threaded worker per usable core (our kernels run
    one BLAS call per task; processes keep the GIL out of the way), and the usable memory less a reserve
    for the client and scheduler, split evenly. Values given win over the machine's."""
    from dask.system import CPU_COUNT
    from distributed.system import MEMORY_LIMIT

    threads = threads_per_worker or 1
    workers = n_workers or max(1, CPU_COUNT // threads)
    reserve = max(MIN_RESERVED_BYTES, RESERVED_FRACTION * MEMORY_LIMIT)
    per_worker = memory_limit or max(256 * 2**20, int((MEMORY_LIMIT - reserve) / workers))
    parts = []
    if n_workers is None:
        parts.append(
            f"{workers} worker(s) x {threads} thread(s) for {CPU_COUNT} core(s) (dask.system.CPU_COUNT)"
        )
    if memory_limit is None:
        parts.append(
            f"{per_worker / 2**30:.1f} GiB each: {MEMORY_LIMIT / 2**30:.1f} GiB usable (distributed's "
            f"MEMORY_LIMIT) less {reserve / 2**30:.1f} GiB kept for the client and scheduler"
        )
    return Sizing(workers, threads, int(per_worker), "; ".join(parts) or "as configured")
