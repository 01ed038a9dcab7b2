"""kind: slurm — dask-jobqueue's SLURMCluster: workers as SLURM batch jobs (extra: slurm).

May use: job.deploy.base, job.errors.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass
from typing import ClassVar

from distributed import Client

from job.deploy.base import ClusterSpec
from job.errors import ClusterError, ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlurmConfig(ClusterSpec):
    """dask-jobqueue's SLURMCluster: `jobs` batch jobs, each with `cores` and `memory`, split into
    `processes` worker processes. The scheduler runs here; its dashboard at dashboard_address."""

    kind: ClassVar[str] = "slurm"
    jobs: int = 1
    cores: int | None = None
    memory: str | None = None
    processes: int = 1
    queue: str | None = None
    account: str | None = None
    walltime: str = "01:00:00"
    interface: str | None = None
    local_directory: str | None = None
    job_extra_directives: tuple[str, ...] = ()
    job_script_prologue: tuple[str, ...] = ()
    dashboard_address: str = "127.0.0.1:8787"

    def __post_init__(self):
        super().__post_init__()
        missing = [name for name in ("cores", "memory") if getattr(self, name) is None]
        if missing:
            raise ConfigError(f"a 'slurm' cluster needs {' and '.join(missing)} (per job)")
        if self.jobs < 1 or self.processes < 1:
            raise ConfigError("jobs and processes must be at least 1")
        for name in ("job_extra_directives", "job_script_prologue"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def start(self, stack: ExitStack) -> Client:
        cluster = stack.enter_context(slurm_cluster(self))
        cluster.scale(jobs=self.jobs)
        log.info("asked SLURM for %d job(s) of %d core(s) and %s", self.jobs, self.cores, self.memory)
        return stack.enter_context(Client(cluster, **self.security_kwargs()))


def slurm_cluster(config: SlurmConfig):
    """dask-jobqueue's SLURMCluster for `config`, with no jobs submitted yet (scale() submits them)."""
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError as exc:
        raise ClusterError("kind slurm needs dask-jobqueue: pip install 'mnist-kmeans[slurm]'") from exc
    options = dict(
        cores=config.cores,
        memory=config.memory,
        processes=config.processes,
        queue=config.queue,
        account=config.account,
        walltime=config.walltime,
        interface=config.interface,
        local_directory=config.local_directory,
        job_extra_directives=list(config.job_extra_directives),
        job_script_prologue=list(config.job_script_prologue),
        scheduler_options={"dashboard_address": config.dashboard_address},
        **config.security_kwargs(),
    )
    if config.security is not None:
        options["protocol"] = "tls://"
    return SLURMCluster(**{key: value for key, value in options.items() if value is not None})
