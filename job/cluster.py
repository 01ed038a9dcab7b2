"""Get a Dask client from a ClusterConfig: a LocalCluster we own, or an existing scheduler we join."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from distributed import Client, LocalCluster

from .config import ClusterConfig
from .errors import ClusterError

log = logging.getLogger(__name__)


def _start_local(config: ClusterConfig, stack: ExitStack) -> Client:
    kwargs = dict(
        n_workers=config.n_workers,
        threads_per_worker=config.threads_per_worker,
        memory_limit=config.memory_limit,
        processes=config.processes,
        dashboard_address=config.dashboard_address,
        host="127.0.0.1",
        silence_logs=logging.ERROR,
    )
    if not config.processes:
        kwargs["protocol"] = "tcp"  # an in-process cluster with host= needs an explicit protocol
    try:
        cluster = stack.enter_context(LocalCluster(**kwargs))
    except Exception as exc:
        raise ClusterError(f"could not start a LocalCluster: {exc}") from exc
    return stack.enter_context(Client(cluster))


def _join_existing(config: ClusterConfig, stack: ExitStack) -> Client:
    target = config.scheduler_file or config.address
    try:
        if config.scheduler_file:
            client = Client(scheduler_file=config.scheduler_file, timeout=config.timeout)
        else:
            client = Client(config.address, timeout=config.timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(
            f"scheduler {target} did not answer within {config.timeout:g} s ({type(exc).__name__})"
        ) from None
    stack.enter_context(client)
    try:
        client.wait_for_workers(1, timeout=config.timeout)
    except TimeoutError:
        raise ClusterError(f"scheduler {target} has no workers (waited {config.timeout:g} s)") from None
    return client


@contextmanager
def connect(config: ClusterConfig) -> Iterator[Client]:
    """Yield a connected client; close whatever this call started on exit."""
    with ExitStack() as stack:
        client = _start_local(config, stack) if config.kind == "local" else _join_existing(config, stack)
        workers = client.scheduler_info(n_workers=-1)["workers"]
        log.info(
            "cluster up: %s, %d worker(s), %d thread(s)",
            client.scheduler.address, len(workers), sum(w["nthreads"] for w in workers.values()),
        )
        log.info("dashboard: %s", client.dashboard_link)
        yield client


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
