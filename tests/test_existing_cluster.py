"""The job on a cluster started with the `dask` command-line tools: by scheduler file, a worker that
cannot see the data, a scheduler without workers."""

import json
import os
import shutil
from pathlib import Path

import pytest

from job.deploy.lifecycle import connect
from job.deploy.scheduler import SchedulerConfig
from job.errors import ClusterError

from .cluster_processes import Processes, run_job, start_scheduler, start_worker, wait_for_workers


@pytest.fixture
def processes(tmp_path):
    started = Processes(tmp_path)
    yield started
    started.stop()


def _scheduler(processes, tmp_path) -> Path:
    scheduler_file = tmp_path / "scheduler.json"
    start_scheduler(processes, scheduler_file)
    return scheduler_file


def _worker(processes, scheduler_file, prefix=()):
    start_worker(processes, str(scheduler_file), prefix=prefix, name=f"worker-{len(processes.started)}")


def _config_file(tmp_path, scheduler_file) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(f"kind: scheduler\nscheduler_file: {scheduler_file}\ntimeout: 30\n")
    return path


@pytest.mark.parametrize("how", ["scheduler-file", "address"])
def test_job_runs_on_a_cluster_started_with_the_dask_cli(processes, mnist_store, tmp_path, how):
    scheduler_file = _scheduler(processes, tmp_path)
    for _ in range(2):
        _worker(processes, scheduler_file)
    wait_for_workers(scheduler_file, 2)
    run = tmp_path / "run"
    if how == "scheduler-file":
        target = ["--cluster-config", str(_config_file(tmp_path, scheduler_file))]
    else:
        target = ["--scheduler", json.loads(scheduler_file.read_text())["address"]]
    proc = run_job(
        "--data",
        str(mnist_store),
        "--split",
        "test",
        "--out",
        str(run),
        "--silhouette-sample",
        "500",
        *target,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cluster up (scheduler)" in proc.stderr and "2 worker(s)" in proc.stderr
    assert (run / "metrics.json").exists()


@pytest.mark.skipif(
    (os.geteuid() != 0 or not shutil.which("unshare")) and os.environ.get("CI") != "true",
    reason="hiding the data from one worker needs a mount namespace (root); under CI=true it "
    "always runs (and fails without root)",
)
def test_a_worker_that_cannot_see_the_store_is_named(processes, mnist_store, tmp_path):
    scheduler_file = _scheduler(processes, tmp_path)
    _worker(processes, scheduler_file)
    # This worker runs in its own mount namespace where an empty tmpfs hides the store's folder.
    hidden = mnist_store.parent
    _worker(
        processes,
        scheduler_file,
        prefix=(
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            f'mount -t tmpfs tmpfs "{hidden}" && exec "$0" "$@"',
        ),
    )
    wait_for_workers(scheduler_file, 2)
    proc = run_job(
        "--data",
        str(mnist_store),
        "--split",
        "test",
        "--out",
        str(tmp_path / "run"),
        "--cluster-config",
        str(_config_file(tmp_path, scheduler_file)),
    )
    assert proc.returncode == 1
    assert f"1 of 2 worker(s) cannot read {mnist_store}: tcp://127.0.0.1:" in proc.stderr
    assert "store not found" in proc.stderr and "Traceback" not in proc.stderr


def test_a_scheduler_without_workers_is_a_clear_error(processes, tmp_path):
    scheduler_file = _scheduler(processes, tmp_path)
    with pytest.raises(ClusterError, match="has no workers"):
        with connect(SchedulerConfig(scheduler_file=str(scheduler_file), timeout=2)):
            pass
