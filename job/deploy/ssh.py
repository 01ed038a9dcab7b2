"""kind: ssh — distributed's SSHCluster: a scheduler and workers started over SSH (extra: ssh).

May use: job.deploy.base, job.errors.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import ClassVar

import dask
from distributed import Client

from job.deploy.base import ClusterSpec
from job.errors import ClusterError, ConfigError


@dataclass(frozen=True)
class SSHConfig(ClusterSpec):
    """distributed's SSHCluster: the scheduler on hosts[0], one worker process group on each other host.

    connect_options go to asyncssh.connect (port, username, client_keys, known_hosts, ...);
    worker_options to each `dask worker` (n_workers per host, nthreads, memory_limit, ...);
    scheduler_options to the scheduler (port, dashboard_address, ...). remote_python is the Python on the
    other hosts that has this package installed (default: the same path as here).
    """

    kind: ClassVar[str] = "ssh"
    hosts: tuple[str, ...] = ()
    connect_options: dict = field(default_factory=dict)
    worker_options: dict = field(default_factory=dict)
    scheduler_options: dict = field(default_factory=dict)
    remote_python: str | None = None

    def __post_init__(self):
        super().__post_init__()
        hosts = self.hosts
        if isinstance(hosts, str) or not hosts or len(hosts) < 2:
            raise ConfigError(
                "an 'ssh' cluster needs hosts: a list of at least 2 (the scheduler's host first, "
                "then one per worker host)"
            )
        object.__setattr__(self, "hosts", tuple(str(h) for h in hosts))

    def start(self, stack: ExitStack) -> Client:
        try:
            import asyncssh  # noqa: F401
        except ImportError as exc:
            raise ClusterError("kind ssh needs asyncssh: pip install 'mnist-kmeans[ssh]'") from exc
        from distributed import SSHCluster

        scheduler_options = dict(self.scheduler_options)
        scheduler_options.setdefault("dashboard_address", "127.0.0.1:8787")
        if self.security is not None:
            # SSHCluster hands its own dask config to the processes it starts (DASK_INTERNAL_INHERIT_CONFIG),
            # not Security objects: the TLS files go that way, and must exist at the same paths on every host.
            stack.enter_context(dask.config.set(self.security.to_dask_config()))
            scheduler_options.setdefault("protocol", "tls")
        try:
            cluster = stack.enter_context(
                SSHCluster(
                    hosts=list(self.hosts),
                    connect_options=dict(self.connect_options),
                    worker_options=dict(self.worker_options),
                    scheduler_options=scheduler_options,
                    remote_python=self.remote_python,
                    **self.security_kwargs(),
                )
            )
        except Exception as exc:
            raise ClusterError(
                f"could not start an SSHCluster on {', '.join(self.hosts)}: {type(exc).__name__}: {exc}"
            ) from exc
        return stack.enter_context(Client(cluster, **self.security_kwargs()))
