"""Faults during a run: killed and interrupted jobs, a lost worker, a full disk, resuming."""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import zarr
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import WorkerPlugin

from data_prep import PrepConfig, prepare_dataset, validate_store
from data_prep.errors import StoreError
from job.checkpoint import CHECKPOINT_FILE, partial_dir
from job.dataset import open_dataset, to_features
from job.engine.persist import persist_balanced
from job.kmeans.estimator import FusedKMeans

from . import REPO
from .cluster_processes import free_port
from .hold_fit import hold_env
from .synthetic import write_dataset

# A fit of 21 Lloyd iterations over all rows (tol=0: until the centers stop moving); the tests that stop a
# job mid-fit hold it at a chosen iteration (tests/hold_fit.py), so how fast the machine is does not
# matter.
FIT_ARGS = [
    "--tol",
    "0",
    "--max-iter",
    "400",
    "--silhouette-sample",
    "500",
    "--seed",
    "3",
    "--dashboard-address",
    "127.0.0.1:0",
]


def _default_sigint():
    # A shell that starts a command in the background (as a CI runner may) leaves SIGINT ignored, and
    # Python then installs no KeyboardInterrupt handler: give the job the disposition a terminal gives.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _job(*args, hold: dict | None = None):
    """`python -m job args`; `hold`: a hold_env, making its workers hold the fit where it says."""
    return subprocess.Popen(
        [sys.executable, "-m", "job", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_default_sigint,
        env=None if hold is None else {**os.environ, **hold},
    )


def _held_at(run: Path, iteration: int) -> dict:
    """Workers that hold the run's fit once its checkpoint records `iteration` Lloyd iterations."""
    return hold_env(partial_dir(run) / CHECKPOINT_FILE, at=iteration)


def _wait_for_checkpoint(run: Path, proc, at_least: int, timeout: float = 120) -> int:
    path = partial_dir(run) / CHECKPOINT_FILE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, (
            "the job ended before it could be interrupted: " + proc.stderr.read()[-2000:]
        )
        try:
            with np.load(path) as saved:
                if int(saved["n_iter"]) >= at_least:
                    return int(saved["n_iter"])
        except (FileNotFoundError, OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


def _labels(run: Path) -> np.ndarray:
    return zarr.open_array(str(run / "labels.zarr"), mode="r")[:]


@pytest.fixture(scope="module")
def reference_run(mnist_store, tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    proc = _job("--data", str(mnist_store), "--out", str(run), *FIT_ARGS)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return run


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_uninterrupted_result(mnist_store, reference_run, tmp_path):
    run = tmp_path / "run"
    proc = _job("--data", str(mnist_store), "--out", str(run), *FIT_ARGS, hold=_held_at(run, 5))
    _wait_for_checkpoint(run, proc, at_least=5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not run.exists()  # the run folder appears only when complete
    with np.load(partial_dir(run) / CHECKPOINT_FILE) as saved:  # the last iteration saved before the kill
        killed_after = int(saved["n_iter"])
    assert killed_after >= 5

    bad = _job("--data", str(mnist_store), "--resume", str(run), *FIT_ARGS, "--k", "11")
    _, err = bad.communicate(timeout=300)
    assert bad.returncode == 1, err[-3000:]  # refused, clearly: the docs promise exit status 1
    assert "cannot resume with other settings: k (11 now, 10 in the run)" in err and "Traceback" not in err

    resumed = _job("--data", str(mnist_store), "--resume", str(run), *FIT_ARGS)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    # It continued from exactly that iteration: the first Lloyd iteration it ran is the next one.
    assert f"resuming after Lloyd iteration {killed_after}" in err, err[-3000:]
    first_run = re.search(r"Lloyd iteration (\d+)/", err)
    assert first_run and int(first_run.group(1)) == killed_after + 1, err[-3000:]
    np.testing.assert_array_equal(_labels(run), _labels(reference_run))
    assert not partial_dir(run).exists()
    assert not list(tmp_path.glob(".run.tmp-*"))  # the killed run's staging folder was cleared


def test_sigint_stops_cleanly_with_a_checkpoint_and_no_stray_processes(mnist_store, tmp_path):
    run = tmp_path / "run"
    proc = _job("--data", str(mnist_store), "--out", str(run), *FIT_ARGS, hold=_held_at(run, 3))
    _wait_for_checkpoint(run, proc, at_least=3)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children  # the LocalCluster's worker processes
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "interrupted" in err and "Traceback" not in err
    assert f"resume with  python -m job --resume {run}" in err  # how to go on, not only "interrupted"
    assert (partial_dir(run) / CHECKPOINT_FILE).exists() and not run.exists()
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive


class KillWhileRunning(WorkerPlugin):
    """SIGKILL the worker it runs on the moment a Lloyd task starts executing there, once: the worker dies
    in the middle of a task, not between iterations. A marker file (taken with O_EXCL, so only one worker
    wins it) keeps the replacement worker the nanny starts, and the other workers, from doing the same."""

    def __init__(self, marker: str, after: int):
        self.marker, self.after, self.seen = marker, after, 0

    def setup(self, worker):
        self.pid_file = self.marker + ".pid"

    def transition(self, key, start, finish, **kwargs):
        name = key if isinstance(key, str) else str(key)
        if finish != "executing" or not name.startswith("lloyd_partial"):
            return
        self.seen += 1
        if self.seen < self.after:
            return
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, f"{os.getpid()} {name}".encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.slow
def test_losing_a_worker_mid_task_changes_nothing(mnist_store, tmp_path):
    X_lazy = to_features(open_dataset(mnist_store, "test").images)
    results = []
    for kill in (False, True):
        with (
            LocalCluster(
                n_workers=3, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0"
            ) as cluster,
            Client(cluster) as client,
        ):
            X = persist_balanced(client, X_lazy, rows=1000)
            pids = client.run(os.getpid)
            marker = tmp_path / "killed"
            if kill:
                client.register_plugin(KillWhileRunning(str(marker), after=3), name="kill-while-running")
            model = FusedKMeans(n_clusters=10, random_state=5, tol=0, max_iter=30).fit(X)
            results.append((model.labels_.compute(), model.inertia_, model.n_iter_))
            if kill:
                pid, key = marker.read_text().split()
                assert int(pid) in pids.values() and key.startswith("lloyd_partial")
                assert not psutil.pid_exists(int(pid))  # that worker died while running a Lloyd task
    (labels, inertia, n_iter), (labels_k, inertia_k, n_iter_k) = results
    np.testing.assert_array_equal(labels_k, labels)
    assert inertia_k == pytest.approx(inertia, rel=1e-9) and n_iter_k == n_iter


@pytest.mark.skipif(
    os.geteuid() != 0 and os.environ.get("CI") != "true",
    reason="mounting a small tmpfs needs root; under CI=true it always runs (and fails without root)",
)
def test_disk_full_during_conversion_leaves_nothing(tmp_path):
    rng = np.random.default_rng(0)  # random pixels do not compress: 8 MB of images on a 2 MB disk
    arrays = {
        s: (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8))
        for s, n in (("train", 8000), ("test", 2000))
    }
    source = write_dataset(tmp_path / "idx", arrays, compress=False)
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], check=True)
    try:
        with pytest.raises(StoreError, match="disk full while writing the store; nothing was kept"):
            prepare_dataset(
                PrepConfig(out=disk / "big.zarr", source=str(source), name="random", chunk_size=1000)
            )
        assert list(disk.iterdir()) == []  # no store, no staging folder, no lock file
    finally:
        subprocess.run(["umount", str(disk)], check=True)
    shutil.rmtree(disk)


def test_two_conversions_into_one_store_do_not_collide(tiny_dir, tmp_path):
    out = tmp_path / "t.zarr"
    cmd = [
        sys.executable,
        "-m",
        "data_prep",
        "--source",
        str(tiny_dir),
        "--name",
        "tiny",
        "--out",
        str(out),
        "--chunk-size",
        "7",
    ]
    procs = [
        subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert sum("reusing it" in e for e in errs) == 1  # one wrote, the other waited and reused
    assert validate_store(out)["train"].n == 300


def test_a_second_job_on_the_same_run_folder_is_refused(mnist_store, tmp_path):
    run = tmp_path / "run"
    first = _job("--data", str(mnist_store), "--out", str(run), *FIT_ARGS)
    _wait_for_checkpoint(run, first, at_least=1)
    second = _job("--data", str(mnist_store), "--out", str(run), *FIT_ARGS)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 1 and "another job is writing this run folder" in err
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()


@pytest.mark.slow
def test_losing_the_scheduler_is_a_clear_error_and_resume_finishes(mnist_store, reference_run, tmp_path):
    dask_cli = str(Path(sys.executable).parent / "dask")
    address, run = f"tcp://127.0.0.1:{free_port()}", tmp_path / "run"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True}
    scheduler = subprocess.Popen(
        [
            dask_cli,
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            address.rsplit(":", 1)[1],
            "--dashboard-address",
            "127.0.0.1:0",
        ],
        **quiet,
    )
    workers = [
        subprocess.Popen(
            [
                dask_cli,
                "worker",
                address,
                "--host",
                "127.0.0.1",
                "--nthreads",
                "1",
                "--memory-limit",
                "4GiB",
                "--no-dashboard",
            ],
            env={**os.environ, **_held_at(run, 3)},  # the cluster's workers hold the fit, not the job's
            **quiet,
        )
        for _ in range(2)
    ]
    try:
        job = _job("--data", str(mnist_store), "--out", str(run), "--scheduler", address, *FIT_ARGS[:-2])
        _wait_for_checkpoint(run, job, at_least=3)
        os.killpg(scheduler.pid, signal.SIGKILL)
        _, err = job.communicate(timeout=120)
        assert job.returncode == 1
        assert f"error: lost the scheduler {address}" in err and f"--resume {run}" in err
        assert "Traceback" not in err
    finally:
        for proc in (scheduler, *workers):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    resumed = _job("--data", str(mnist_store), "--resume", str(run), *FIT_ARGS)  # a new LocalCluster
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    np.testing.assert_array_equal(_labels(run), _labels(reference_run))


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_at_its_first_unfinished_k(mnist_store, tmp_path):
    """Ctrl-C during a sweep's second k keeps the first; --resume fits only the rest, and the sweep it
    writes is the one an uninterrupted run writes (fit times aside)."""
    args = ["--data", str(mnist_store), "--k", "3,4,5", *FIT_ARGS]
    run = tmp_path / "sweep"
    first, kept = partial_dir(run) / "k00003.npz", partial_dir(run) / CHECKPOINT_FILE
    # The sweep's checkpoint (its list of finished ks) is written once k=3 is kept: from then on, k=4's
    # fit waits, and the test interrupts it there.
    proc = _job(*args, "--out", str(run), hold=hold_env(kept))
    deadline = time.monotonic() + 300
    while not kept.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-2000:]
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and f"--resume {run}" in err and "the same --k" in err, err[-2000:]
    assert first.exists() and not run.exists()

    wrong = _job(*args[:2], "--k", "3,4", *FIT_ARGS, "--resume", str(run))
    _, err = wrong.communicate(timeout=300)
    assert wrong.returncode == 1 and "cannot resume with other settings: k (3,4 now, 3,4,5 in the run)" in err

    resumed = _job(*args, "--resume", str(run))
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    assert "k=3: kept from the interrupted run" in err and "k=4: kept" not in err
    assert not partial_dir(run).exists()

    reference = _job(*args, "--out", str(tmp_path / "reference"))
    _, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err[-3000:]
    ours, theirs = (json.loads((path / "sweep.json").read_text()) for path in (run, tmp_path / "reference"))
    strip = lambda rows: [{k: v for k, v in r.items() if k != "fit_seconds"} for r in rows]  # noqa: E731
    assert strip(ours["sweep"]) == strip(theirs["sweep"]) and ours["suggested_k"] == theirs["suggested_k"]
    for k in (3, 4, 5):
        assert (run / f"model_k{k:02d}.npz").stat().st_size > 0 and (run / f"centers_k{k:02d}.png").exists()
