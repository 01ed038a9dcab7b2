"""Get a Dask client from a cluster config: a cluster we start (local, ssh, slurm) or one we join."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import dask
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import WorkerPlugin

from .cluster_config import ClusterConfig, LocalConfig, SchedulerConfig, SlurmConfig, SSHConfig, is_loopback
from .errors import ClusterError

log = logging.getLogger(__name__)


def _security(config: ClusterConfig) -> dict:
    return {} if config.security is None else {"security": config.security.to_security()}


def _start_local(config: LocalConfig, stack: ExitStack) -> Client:
    config, sizing = config.sized()
    log.info("LocalCluster: %s", sizing.reason)
    kwargs = dict(
        n_workers=config.n_workers,
        threads_per_worker=config.threads_per_worker,
        memory_limit=int(config.memory_limit),
        processes=config.processes,
        dashboard_address=config.dashboard_address,
        host="127.0.0.1",
        silence_logs=logging.ERROR,
        **_security(config),
    )
    if config.security is not None:
        kwargs["protocol"] = "tls://"
    elif not config.processes:
        kwargs["protocol"] = "tcp"  # an in-process cluster with host= needs an explicit protocol
    try:
        cluster = stack.enter_context(LocalCluster(**kwargs))
    except Exception as exc:
        raise ClusterError(f"could not start a LocalCluster: {exc}") from exc
    return stack.enter_context(Client(cluster, **_security(config)))


def _join_existing(config: SchedulerConfig, stack: ExitStack) -> Client:
    target = config.scheduler_file or config.address
    try:
        if config.scheduler_file:
            client = Client(scheduler_file=config.scheduler_file, timeout=config.timeout, **_security(config))
        else:
            client = Client(config.address, timeout=config.timeout, **_security(config))
    except (OSError, TimeoutError, ValueError) as exc:
        hint = ""
        if config.security is None and "tls" in str(exc).lower():
            hint = "; it speaks TLS: add a security section"
        raise ClusterError(
            f"scheduler {target} did not answer within {config.timeout:g} s ({type(exc).__name__}{hint})"
        ) from None
    return stack.enter_context(client)


def _start_ssh(config: SSHConfig, stack: ExitStack) -> Client:
    try:
        import asyncssh  # noqa: F401
    except ImportError:
        raise ClusterError("kind ssh needs asyncssh: pip install 'mnist-kmeans[ssh]'") from None
    from distributed import SSHCluster

    scheduler_options = dict(config.scheduler_options)
    scheduler_options.setdefault("dashboard_address", "127.0.0.1:8787")
    if config.security is not None:
        # SSHCluster hands its own dask config to the processes it starts (DASK_INTERNAL_INHERIT_CONFIG),
        # not Security objects: the TLS files go that way, and must exist at the same paths on every host.
        stack.enter_context(dask.config.set(config.security.to_dask_config()))
        scheduler_options.setdefault("protocol", "tls")
    try:
        cluster = stack.enter_context(SSHCluster(
            hosts=list(config.hosts), connect_options=dict(config.connect_options),
            worker_options=dict(config.worker_options), scheduler_options=scheduler_options,
            remote_python=config.remote_python, **_security(config),
        ))
    except Exception as exc:
        raise ClusterError(f"could not start an SSHCluster on {', '.join(config.hosts)}: "
                           f"{type(exc).__name__}: {exc}") from None
    return stack.enter_context(Client(cluster, **_security(config)))


def _start_slurm(config: SlurmConfig, stack: ExitStack) -> Client:
    cluster = stack.enter_context(slurm_cluster(config))
    cluster.scale(jobs=config.jobs)
    log.info("asked SLURM for %d job(s) of %d core(s) and %s", config.jobs, config.cores, config.memory)
    return stack.enter_context(Client(cluster, **_security(config)))


def slurm_cluster(config: SlurmConfig):
    """dask-jobqueue's SLURMCluster for `config`, with no jobs submitted yet (scale() submits them)."""
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise ClusterError("kind slurm needs dask-jobqueue: pip install 'mnist-kmeans[slurm]'") from None
    options = dict(
        cores=config.cores, memory=config.memory, processes=config.processes, queue=config.queue,
        account=config.account, walltime=config.walltime, interface=config.interface,
        local_directory=config.local_directory, job_extra_directives=list(config.job_extra_directives),
        job_script_prologue=list(config.job_script_prologue),
        scheduler_options={"dashboard_address": config.dashboard_address}, **_security(config),
    )
    if config.security is not None:
        options["protocol"] = "tls://"
    return SLURMCluster(**{key: value for key, value in options.items() if value is not None})


_STARTERS = {"local": _start_local, "scheduler": _join_existing, "ssh": _start_ssh, "slurm": _start_slurm}


@contextmanager
def connect(config: ClusterConfig) -> Iterator[Client]:
    """Yield a client connected to a cluster with at least one worker; close what this call started."""
    with ExitStack() as stack:
        client = _STARTERS[config.kind](config, stack)
        wanted = getattr(config, "min_workers", 1)
        try:
            client.wait_for_workers(wanted, timeout=config.timeout)
        except TimeoutError:
            have = len(client.scheduler_info(n_workers=-1)["workers"])
            what = "has no workers" if have == 0 else f"has {have} of the {wanted} workers asked for"
            raise ClusterError(f"scheduler {client.scheduler.address} {what} (waited {config.timeout:g} s)") from None
        workers = client.scheduler_info(n_workers=-1)["workers"]
        log.info(
            "cluster up (%s): %s, %d worker(s), %d thread(s)", config.kind,
            client.scheduler.address, len(workers), sum(w["nthreads"] for w in workers.values()),
        )
        _log_dashboard(config, client)
        client.register_plugin(OneLineDataErrors(), name="mnist-kmeans-one-line-data-errors")
        yield client


@contextmanager
def use_or_connect(config: ClusterConfig, client: Client | None) -> Iterator[Client]:
    """Yield `client` as it is when given (the caller's: nothing of it is closed or reconfigured here),
    else a client connected to `config`, closed with what it started on the way out."""
    if client is not None:
        yield client
        return
    with connect(config) as connected:
        yield connected


# Exceptions that already carry the one sentence the user needs (our DataPrepError subclasses, e.g. a
# damaged chunk found by a worker): the client re-raises them and the CLI prints that sentence.
_OWN_ERRORS = ("DamagedChunkError", "StoreError")


class OneLineDataErrors(WorkerPlugin):
    """Keep a worker from logging "Compute Failed" with a traceback for errors of ours.

    distributed's worker logs every failed task at ERROR level with its traceback (distributed/worker.py,
    "Compute Failed") before sending the exception to the client; for a damaged chunk that buried the
    job's own one-line message under a traceback from each worker. Other failures are still logged.
    """

    def setup(self, worker):
        logging.getLogger("distributed.worker").addFilter(_not_our_error)


def _not_our_error(record: logging.LogRecord) -> bool:
    message = str(record.msg)
    return not (message.startswith("Compute Failed") and any(name in record.getMessage() for name in _OWN_ERRORS))


def _log_dashboard(config: ClusterConfig, client: Client) -> None:
    link = client.dashboard_link
    log.info("dashboard: %s", link)
    address = getattr(config, "dashboard_address", None)
    if config.kind != "scheduler" and address and not is_loopback(address):
        log.warning("the dashboard listens on %s: anyone who can reach this machine can watch the job and "
                    "its data (it has no login); keep it on 127.0.0.1 and use an SSH tunnel instead", address)


def describe_cluster(client: Client, config: ClusterConfig | None = None) -> dict:
    """What the run ran on, for metrics.json: the scheduler and each worker's host, threads and memory;
    for a LocalCluster sized from the machine, how that was decided."""
    from urllib.parse import urlparse

    workers = client.scheduler_info(n_workers=-1)["workers"]
    sizing = config.sized()[1].to_dict() if isinstance(config, LocalConfig) else None
    return {
        "scheduler": client.scheduler.address,
        **({"sizing": sizing} if sizing else {}),
        "workers": [
            {"address": address, "host": urlparse(address).hostname, "name": str(info.get("name")),
             "nthreads": info["nthreads"], "memory_limit": info.get("memory_limit")}
            for address, info in sorted(workers.items())
        ],
    }


def cluster_memory(client: Client) -> int:
    """Bytes of memory the cluster's workers declare (0 when any worker has no limit)."""
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    limits = [w.get("memory_limit") or 0 for w in workers]
    return 0 if not limits or 0 in limits else int(sum(limits))


def reduce_batching_latency(client: Client, interval: float = 0.001, cluster_side: bool = True) -> None:
    """Shorten distributed's message-batching intervals so that a short round trip stays short.

    distributed batches messages on each stream: client->scheduler every 10 ms, scheduler->worker every
    5 ms, worker->scheduler every 2 ms (hard-coded in client.py, scheduler.py, worker.py). A message sent
    less than one interval after the previous one waits for the interval to end, so an iterative job that
    submits, waits and submits again pays ~10 ms per round trip even for a no-op task (measured here:
    10.5 ms; 2.9 ms with 1 ms intervals; benchmarks/round_trip.py). K-Means iterations are exactly that.
    """
    client.scheduler_comm.interval = interval
    if not cluster_side:
        return

    def on_scheduler(dask_scheduler, interval):
        for stream in [*dask_scheduler.stream_comms.values(), *dask_scheduler.client_comms.values()]:
            stream.interval = interval

    def on_worker(dask_worker, interval):
        dask_worker.batched_stream.interval = interval

    client.run_on_scheduler(on_scheduler, interval=interval)
    client.run(on_worker, interval=interval)
