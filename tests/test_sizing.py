"""The default LocalCluster's size: dask's reading of the cores and memory, less our reserve."""

import json
import os

from job.deploy.sizing import local_sizing

from . import run_module


def test_default_cluster_follows_the_cores_the_process_may_use(tmp_path, tiny_dir):
    """Under `taskset -c 0` the job's default LocalCluster has one worker; without it, one per core."""
    store = tmp_path / "t.zarr"
    runs = {}
    for name, prefix in (("one core", ["taskset", "-c", "0"]), ("all cores", [])):
        run = tmp_path / name.replace(" ", "-")
        proc = run_module(
            "job",
            "--data",
            str(store),
            "--source",
            str(tiny_dir),
            "--name",
            "tiny",
            "--k",
            "3",
            "--silhouette-sample",
            "50",
            "--out",
            str(run),
            "--dashboard-address",
            "127.0.0.1:0",
            prefix=prefix,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = (json.loads((run / "metrics.json").read_text())["cluster"], proc.stderr)
    cluster, log = runs["one core"]
    assert len(cluster["workers"]) == 1 and "1 worker(s) x 1 thread(s) for 1 core(s)" in log
    assert cluster["sizing"]["n_workers"] == 1
    cores = len(os.sched_getaffinity(0))
    assert len(runs["all cores"][0]["workers"]) == cores
    memory = sum(w["memory_limit"] for w in runs["all cores"][0]["workers"])
    import psutil

    assert 0.7 * psutil.virtual_memory().total < memory < psutil.virtual_memory().total


def test_explicit_sizes_win_over_the_machine():
    sizing = local_sizing(n_workers=3, threads_per_worker=2, memory_limit=2**30)
    assert (sizing.n_workers, sizing.threads_per_worker, sizing.memory_limit) == (3, 2, 2**30)
    assert sizing.reason == "as configured"


def test_the_machine_sizes_come_from_dask_less_our_reserve():
    from dask.system import CPU_COUNT
    from distributed.system import MEMORY_LIMIT

    from job.deploy.sizing import MIN_RESERVED_BYTES, RESERVED_FRACTION

    sizing = local_sizing()
    reserve = max(MIN_RESERVED_BYTES, RESERVED_FRACTION * MEMORY_LIMIT)
    assert sizing.n_workers == CPU_COUNT and sizing.threads_per_worker == 1
    assert abs(sizing.memory_limit * CPU_COUNT - (MEMORY_LIMIT - reserve)) <= CPU_COUNT
    assert (
        f"for {CPU_COUNT} core(s)" in sizing.reason and "kept for the client and scheduler" in sizing.reason
    )
