"""Getting a cluster: a LocalCluster with its dashboard on loopback, and a bounded wait for a dead
scheduler."""

import os
import time
import urllib.parse
import urllib.request

import pytest

from job.deploy.lifecycle import cluster_memory, connect, reduce_batching_latency
from job.deploy.local import LocalConfig
from job.deploy.scheduler import SchedulerConfig
from job.errors import ClusterError

from .cluster_processes import LOOPBACK, listening


def test_local_cluster_from_config_serves_the_dashboard_on_loopback():
    config = LocalConfig(n_workers=2, memory_limit="1GiB", dashboard_address="127.0.0.1:0")
    with connect(config) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        assert cluster_memory(client) == 2 * 2**30
        assert client.dashboard_link.startswith("http://127.0.0.1:")
        # What is bound, not what the config says: the scheduler (here, in this process), its dashboard
        # and both worker processes listen on loopback only.
        bound = listening(os.getpid())
        dashboard_port = urllib.parse.urlparse(client.dashboard_link).port
        scheduler_port = urllib.parse.urlparse(client.scheduler.address).port
        assert {dashboard_port, scheduler_port} <= set(bound)
        assert all(addresses <= LOOPBACK for addresses in bound.values()), bound
        page = urllib.request.urlopen(client.dashboard_link, timeout=10).read().decode()
        assert "Bokeh" in page or "bokeh" in page  # the real dashboard, not "Dask needs bokeh"
        reduce_batching_latency(client)
        assert client.submit(sum, [1, 2], pure=False).result() == 3


def _faults_of_a_reused_temporary() -> int:
    """Minor page faults of a second 3 MiB temporary (a float32 block of 1,024 MNIST rows is 3.1 MiB),
    made and filled after the first one was freed; under numpy's 4 MiB threshold for huge pages."""
    import resource

    import numpy as np

    np.ones(3 * 2**17)  # 3 MiB, freed at once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    np.ones(3 * 2**17)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_the_jobs_workers_reuse_freed_memory_for_temporaries():
    """distributed's MALLOC_TRIM_THRESHOLD_ turns off glibc's dynamic mmap threshold, so in its workers
    every temporary of 128 KiB or more is fresh pages (768 page faults for 3 MiB); the workers of the
    job's LocalCluster take such temporaries from the heap again (job.deploy.local.WORKER_MALLOC)."""
    from distributed import Client, LocalCluster

    config = LocalConfig(n_workers=1, memory_limit="1GiB", dashboard_address="127.0.0.1:0")
    with connect(config) as client:
        ours = client.submit(_faults_of_a_reused_temporary, pure=False).result()
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0"
        ) as plain,
        Client(plain) as client,
    ):
        stock = client.submit(_faults_of_a_reused_temporary, pure=False).result()
    assert stock >= 3 * 2**20 // 4096 // 2, stock  # the effect the setting removes is there without it
    assert ours < 100, ours
    assert "MALLOC_TOP_PAD_" not in os.environ  # the setting is the workers', not this process's


def test_unreachable_scheduler_fails_after_the_configured_timeout():
    """The connection is retried for the configured 2 s (no earlier: a timeout cannot expire early, on any
    machine), then ends: not after the 30 s default (ClusterSpec.timeout)."""
    started = time.monotonic()
    with pytest.raises(ClusterError, match=r"tcp://127.0.0.1:9 did not answer within 2 s"):
        with connect(SchedulerConfig(address="tcp://127.0.0.1:9", timeout=2)):
            pass
    assert 2 <= time.monotonic() - started < SchedulerConfig(address="tcp://h:1").timeout


def test_workers_drop_our_data_errors_and_keep_a_lost_heartbeat_to_one_line():
    """The filter OneLineDataErrors installs on every worker's distributed.worker logger, on real records."""
    import io
    import logging

    from job.deploy.lifecycle import worker_log_filter

    stream = io.StringIO()
    logger = logging.getLogger("test-worker-log-filter")
    logger.propagate, logger.level = False, logging.INFO
    logger.addHandler(logging.StreamHandler(stream))
    logger.addFilter(worker_log_filter)
    try:
        try:
            raise OSError("Stream is closed")
        except OSError:
            logger.exception("Failed to communicate with scheduler during heartbeat.")
            logger.exception("Compute Failed\nKey: x\nException: DamagedChunkError('chunk 3 is damaged')")
            logger.exception("Compute Failed\nKey: y\nException: ZeroDivisionError('boom')")
        try:  # a peer that died while this worker served it data: a reset connection under a closed comm
            try:
                raise ConnectionResetError(104, "Connection reset by peer")
            except ConnectionResetError as reset:
                from distributed.comm.core import CommClosedError

                raise CommClosedError("in <TCP (closed) Ephemeral Worker->Worker for gather>") from reset
        except CommClosedError:
            logger.exception("failed during get data with tcp://127.0.0.1:1 -> tcp://127.0.0.1:2")
            logger.exception("Worker stream died during communication: tcp://127.0.0.1:2")
    finally:
        logger.removeFilter(worker_log_filter)
    text = stream.getvalue()
    assert "Failed to communicate with scheduler during heartbeat." in text
    assert "DamagedChunkError" not in text  # ours: the client says it in one line
    assert "ZeroDivisionError" in text and text.count("Traceback") == 1  # other failures keep theirs
    assert text.startswith("Failed to communicate with scheduler during heartbeat.\nCompute Failed\nKey: y")
    assert text.endswith(
        "failed during get data with tcp://127.0.0.1:1 -> tcp://127.0.0.1:2\n"
        "Worker stream died during communication: tcp://127.0.0.1:2\n"
    )  # sentences, no traceback
