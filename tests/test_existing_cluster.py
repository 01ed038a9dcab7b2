"""The job on a cluster started with the `dask` command-line tools: by scheduler file, a worker that
cannot see the data, a scheduler without workers."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from job.cluster import connect
from job.config import ClusterConfig
from job.errors import ClusterError

REPO = Path(__file__).resolve().parent.parent
DASK = str(Path(sys.executable).parent / "dask")
QUIET = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


@pytest.fixture
def processes():
    started = []
    yield started
    for proc in started:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _scheduler(processes, tmp_path) -> Path:
    scheduler_file = tmp_path / "scheduler.json"
    processes.append(subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0",
                                       "--dashboard-address", "127.0.0.1:0",
                                       "--scheduler-file", str(scheduler_file)], **QUIET))
    _wait_for(scheduler_file)
    return scheduler_file


def _worker(processes, scheduler_file, prefix=()):
    processes.append(subprocess.Popen([*prefix, DASK, "worker", "--scheduler-file", str(scheduler_file),
                                       "--host", "127.0.0.1", "--nthreads", "1", "--memory-limit", "2GiB",
                                       "--no-dashboard"], **QUIET))


def _wait_for_workers(scheduler_file, n):
    from distributed import Client

    with Client(scheduler_file=str(scheduler_file), timeout=30) as client:
        client.wait_for_workers(n, timeout=60)


def _config_file(tmp_path, scheduler_file) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(f"kind: scheduler\nscheduler_file: {scheduler_file}\ntimeout: 30\n")
    return path


def _job(*args):
    return subprocess.run([sys.executable, "-m", "job", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


def test_job_runs_on_a_cluster_found_by_its_scheduler_file(processes, mnist_store, tmp_path):
    scheduler_file = _scheduler(processes, tmp_path)
    for _ in range(2):
        _worker(processes, scheduler_file)
    _wait_for_workers(scheduler_file, 2)
    run = tmp_path / "run"
    proc = _job("--data", str(mnist_store), "--split", "test", "--out", str(run), "--silhouette-sample", "500",
                "--cluster-config", str(_config_file(tmp_path, scheduler_file)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 worker(s)" in proc.stderr and (run / "metrics.json").exists()


@pytest.mark.skipif((os.geteuid() != 0 or not shutil.which("unshare")) and os.environ.get("CI") != "true",
                    reason="hiding the data from one worker needs a mount namespace (root); under CI=true it "
                    "always runs (and fails without root)")
def test_a_worker_that_cannot_see_the_store_is_named(processes, mnist_store, tmp_path):
    scheduler_file = _scheduler(processes, tmp_path)
    _worker(processes, scheduler_file)
    # This worker runs in its own mount namespace where an empty tmpfs hides the store's folder.
    hidden = mnist_store.parent
    _worker(processes, scheduler_file, prefix=("unshare", "--mount", "--propagation", "private", "sh", "-c",
                                               f'mount -t tmpfs tmpfs "{hidden}" && exec "$0" "$@"'))
    _wait_for_workers(scheduler_file, 2)
    proc = _job("--data", str(mnist_store), "--split", "test", "--out", str(tmp_path / "run"),
                "--cluster-config", str(_config_file(tmp_path, scheduler_file)))
    assert proc.returncode == 1
    assert f"1 of 2 worker(s) cannot read {mnist_store}: tcp://127.0.0.1:" in proc.stderr
    assert "store not found" in proc.stderr and "Traceback" not in proc.stderr


def test_a_scheduler_without_workers_is_a_clear_error(processes, tmp_path):
    scheduler_file = _scheduler(processes, tmp_path)
    with pytest.raises(ClusterError, match="has no workers"):
        with connect(ClusterConfig(kind="scheduler", scheduler_file=str(scheduler_file), timeout=2)):
            pass
