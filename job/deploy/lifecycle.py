"""A cluster's lifecycle: connect (start or join it, wait for its workers), describe it, tune it, close it.

connect() takes any kind's config (job.deploy.local, scheduler, ssh, slurm: each knows how to start its
cluster) and yields a Client once enough workers have joined; use_or_connect() takes the caller's Client
as it is. Also here: what metrics.json records of the cluster, its memory, and the batching latency fix.
May use: job.deploy.base, job.errors.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from distributed import Client
from distributed.diagnostics.plugin import WorkerPlugin

from job.deploy.base import ClusterSpec, is_loopback
from job.errors import ClusterError

log = logging.getLogger(__name__)


@contextmanager
def connect(config: ClusterSpec) -> Iterator[Client]:
    """Yield a client connected to a cluster with at least one worker; close what this call started."""
    with ExitStack() as stack:
        client = config.start(stack)
        wanted = config.min_workers
        try:
            client.wait_for_workers(wanted, timeout=config.timeout)
        except TimeoutError as exc:
            have = len(client.scheduler_info(n_workers=-1)["workers"])
            what = "has no workers" if have == 0 else f"has {have} of the {wanted} workers asked for"
            raise ClusterError(
                f"scheduler {client.scheduler.address} {what} (waited {config.timeout:g} s)"
            ) from exc
        workers = client.scheduler_info(n_workers=-1)["workers"]
        log.info(
            "cluster up (%s): %s, %d worker(s), %d thread(s)",
            config.kind,
            client.scheduler.address,
            len(workers),
            sum(w["nthreads"] for w in workers.values()),
        )
        _log_dashboard(config, client)
        client.register_plugin(OneLineDataErrors(), name="mnist-kmeans-one-line-data-errors")
        yield client


@contextmanager
def use_or_connect(config: ClusterSpec, client: Client | None) -> Iterator[Client]:
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
    """Keep a worker from logging "Compute Failed" with a traceback for errors of ours, and a lost
    heartbeat with a traceback at all.

    distributed's worker logs every failed task at ERROR level with its traceback (distributed/worker.py,
    "Compute Failed") before sending the exception to the client; for a damaged chunk that buried the
    job's own one-line message under a traceback from each worker. Other failures are still logged.
    It also logs "Failed to communicate with scheduler during heartbeat." with logger.exception: when the
    job closes its LocalCluster after an error while a heartbeat is in flight (seen once in a test run on a
    loaded machine, after a damaged chunk), ~30 lines of tornado and comm frames came before the job's
    one-line error. The sentence stays; its traceback, which says only that the connection closed, goes.
    The same for every record whose traceback is a closed connection: "Worker stream died during
    communication" and "failed during get data with ..." (a worker whose peer died while they exchanged
    data, e.g. a peer restarted for memory, seen in CI: job.deploy.faults says why it died).
    """

    def setup(self, worker):
        logging.getLogger("distributed.worker").addFilter(worker_log_filter)


# Worker log lines whose traceback says only that a connection closed, whatever it was raised as.
_SENTENCE_ONLY = (
    "Failed to communicate with scheduler during heartbeat",
    "Worker stream died during communication",
    "failed during get data with",
)


def _lost_connection(exc: BaseException | None) -> bool:
    """Whether an exception, or one in its chain of causes, is a connection that closed or reset."""
    from distributed.comm.core import CommClosedError
    from tornado.iostream import StreamClosedError

    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, (CommClosedError, StreamClosedError, ConnectionError, TimeoutError)):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def worker_log_filter(record: logging.LogRecord) -> bool:
    """False for a record the worker should not log. A record whose traceback says only that a connection
    closed (a peer or the scheduler gone: "Failed to communicate with scheduler during heartbeat",
    "Worker stream died during communication", "failed during get data with ...") is kept as its one
    sentence."""
    message = str(record.msg)
    if message.startswith(_SENTENCE_ONLY) or (record.exc_info and _lost_connection(record.exc_info[1])):
        record.exc_info, record.exc_text = None, None
        return True
    return not (
        message.startswith("Compute Failed") and any(name in record.getMessage() for name in _OWN_ERRORS)
    )


def _log_dashboard(config: ClusterSpec, client: Client) -> None:
    link = client.dashboard_link
    log.info("dashboard: %s", link)
    address = getattr(config, "dashboard_address", None)
    if config.kind != "scheduler" and address and not is_loopback(address):
        log.warning(
            "the dashboard listens on %s: anyone who can reach this machine can watch the job and "
            "its data (it has no login); keep it on 127.0.0.1 and use an SSH tunnel instead",
            address,
        )


def describe_cluster(client: Client, config: ClusterSpec | None = None) -> dict:
    """What the run ran on, for metrics.json: the scheduler and each worker's host, threads and memory;
    for a LocalCluster sized from the machine, how that was decided."""
    from urllib.parse import urlparse

    workers = client.scheduler_info(n_workers=-1)["workers"]
    sizing = config.sizing() if config is not None else None
    return {
        "scheduler": client.scheduler.address,  # type: ignore[union-attr]  # a connected client has one
        **({"sizing": sizing} if sizing else {}),
        "workers": [
            {
                "address": address,
                "host": urlparse(address).hostname,
                "name": str(info.get("name")),
                "nthreads": info["nthreads"],
                "memory_limit": info.get("memory_limit"),
            }
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
    client.scheduler_comm.interval = interval  # type: ignore[union-attr]  # a connected client has one
    if not cluster_side:
        return

    def on_scheduler(dask_scheduler, interval):
        for stream in [*dask_scheduler.stream_comms.values(), *dask_scheduler.client_comms.values()]:
            stream.interval = interval

    def on_worker(dask_worker, interval):
        dask_worker.batched_stream.interval = interval

    client.run_on_scheduler(on_scheduler, interval=interval)
    client.run(on_worker, interval=interval)
