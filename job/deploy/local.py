"""kind: local — a LocalCluster on this machine (the default), sized from the machine when left to auto.

May use: job.deploy.base, job.deploy.sizing, job.errors.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from job.deploy.base import ClusterSpec
from job.errors import ClusterError, ConfigError

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

# glibc's malloc settings for the worker processes the job starts. distributed starts its workers with
# MALLOC_TRIM_THRESHOLD_=65536 (its pre-spawn-environ), which also turns off glibc's dynamic mmap threshold:
# in such a worker every temporary of 128 KiB or more is a fresh mmap, and memory freed at the top of a
# heap goes back to the kernel at once, so the next temporary is fresh pages again, page-faulted in and
# zeroed by the kernel (on these machines a page fault costs more than the arithmetic on the page). A Lloyd
# step with bounds makes many such temporaries (rows in doubt gathered as float32, per-group products):
# 32,000 uint8 rows at k=256 stepped in 105 ms with distributed's setting, 51-58 ms with these (one
# thread); on 2 workers the bounded loop over 64,000 rows took 6.0 s instead of 7.6 s (docs/benchmarks.md,
# section 18). Temporaries below the mmap threshold come from the heap, and the top pad keeps that much of
# a heap's freed top for the next one; distributed's trim threshold still returns anything beyond it.
WORKER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": 64 * 2**20, "MALLOC_TOP_PAD_": 64 * 2**20}
# How long the scheduler of a LocalCluster keeps a task waiting while no worker is running: after that the
# task fails (distributed's NoWorkerError) and the job says why (job.deploy.faults). distributed's default
# waits forever, for workers that may yet join; ours are all started by the job, and a nanny that cannot
# bring its worker back (seen on a loaded 2-core machine with --memory-limit 250MiB --persist always: every
# worker gone after repeated memory restarts) would leave the job waiting with nothing left to run it.
NO_WORKERS_TIMEOUT = "60s"


@dataclass(frozen=True)
class LocalConfig(ClusterSpec):
    """A LocalCluster: n_workers processes of threads_per_worker threads, memory_limit each.

    n_workers and memory_limit may be "auto" (or left out, the default): then they come from the machine
    the job runs on (job.deploy.sizing: the cores this process may use, the memory it may use, cgroups
    included), and the job logs and records how it decided.
    """

    kind: ClassVar[str] = "local"
    n_workers: int | None = None  # None: one per usable core
    threads_per_worker: int = 1
    memory_limit: str | None = None  # per worker; None: the usable memory less a reserve, split evenly
    processes: bool = True
    dashboard_address: str = "127.0.0.1:8787"

    def __post_init__(self):
        super().__post_init__()
        for name in ("n_workers", "memory_limit"):
            if getattr(self, name) == "auto":
                object.__setattr__(self, name, None)
        if (
            self.n_workers is not None and (not isinstance(self.n_workers, int) or self.n_workers < 1)
        ) or self.threads_per_worker < 1:
            raise ConfigError("n_workers (a number or auto) and threads_per_worker must be at least 1")
        if self.memory_limit is not None:
            from dask.utils import parse_bytes

            try:
                parse_bytes(self.memory_limit)
            except (ValueError, TypeError) as exc:
                raise ConfigError(
                    f"memory_limit must be a size such as 4GiB, or auto; got {self.memory_limit!r}"
                ) from exc

    def sized(self):
        """(this config with n_workers and memory_limit filled in from the machine where they are auto,
        the job.deploy.sizing.Sizing that says why)."""
        from dask.utils import parse_bytes

        from job.deploy.sizing import local_sizing

        sizing = local_sizing(
            self.n_workers,
            self.threads_per_worker,
            None if self.memory_limit is None else parse_bytes(self.memory_limit),
        )
        return dataclasses.replace(
            self, n_workers=sizing.n_workers, memory_limit=str(sizing.memory_limit)
        ), sizing

    def sizing(self) -> dict:
        return self.sized()[1].to_dict()

    def start(self, stack: ExitStack) -> Client:
        import dask
        from distributed import Client, LocalCluster  # imported when a cluster starts: --help stays fast

        config, sizing = self.sized()
        log.info("LocalCluster: %s", sizing.reason)
        kwargs = dict(
            n_workers=config.n_workers,
            threads_per_worker=config.threads_per_worker,
            memory_limit=int(config.memory_limit),
            processes=config.processes,
            dashboard_address=config.dashboard_address,
            host="127.0.0.1",
            silence_logs=logging.ERROR,
            **self.security_kwargs(),
        )
        if config.processes:
            # A worker that passes distributed's pause threshold (80% of its memory) stops running tasks until
            # memory is freed, and a worker holding persisted X never frees it: the job then waited forever
            # (seen in CI with --memory-limit 250MiB --persist always on MNIST: no progress in 300 s). Without
            # the pause, such a worker reaches the terminate threshold (95%), its nanny restarts it, and the
            # job says the workers ran out of memory (job.deploy.faults). The Nanny keeps this config for
            # the workers it restarts.
            kwargs["config"] = {"distributed.worker.memory.pause": False}
        # Read by each Nanny when it is made, and set before it spawns (and re-spawns) its worker: glibc
        # reads MALLOC_* once, when the process starts, so the Nanny's env= (set later) would be too late.
        spawn_env = {
            **dask.config.get("distributed.nanny.pre-spawn-environ", {}),
            **WORKER_MALLOC,
        }
        if self.security is not None:
            kwargs["protocol"] = "tls://"
        elif not config.processes:
            kwargs["protocol"] = "tcp"  # an in-process cluster with host= needs an explicit protocol
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", UserWarning)
                settings = {
                    "distributed.nanny.pre-spawn-environ": spawn_env,
                    "distributed.scheduler.no-workers-timeout": NO_WORKERS_TIMEOUT,
                }
                with dask.config.set(settings), _environ_kept():
                    cluster = stack.enter_context(LocalCluster(**kwargs))
        except Exception as exc:
            raise ClusterError(f"could not start a LocalCluster: {exc}") from exc
        for warning in caught:
            _relay(warning)
        return stack.enter_context(Client(cluster, **self.security_kwargs()))


@contextmanager
def _environ_kept():
    """Undo, in this process, what the Nannies write into os.environ before they spawn (distributed sets
    its pre-spawn-environ there): WORKER_MALLOC is for the workers, not for whatever this process, a
    notebook's kernel say, starts later. A Nanny writes it again before it re-spawns its worker."""
    saved = {key: os.environ.get(key) for key in WORKER_MALLOC}
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _relay(warning: warnings.WarningMessage) -> None:
    """distributed's warnings while the cluster starts, as one log line each: a busy dashboard port is a
    4-line UserWarning there ("Port 8787 is already in use. Perhaps you already have a cluster
    running? ..."), which says the dashboard moved to another port."""
    text = str(warning.message)
    busy = re.search(r"Port (\d+) is already in use.*?port (\d+) instead", text, re.S)
    if busy:
        log.warning(
            "dashboard: port %s is busy (another cluster or program), so it is on port %s instead",
            busy[1],
            busy[2],
        )
    else:
        log.warning("%s", " ".join(text.split()))
