"""Page faults in the workers: a bounded Lloyd step under distributed's malloc setting and under the job's.

    python benchmarks/worker_malloc.py [--repeats 3]

distributed starts its workers with MALLOC_TRIM_THRESHOLD_=65536, which also turns off glibc's dynamic mmap
threshold; the job's LocalCluster adds job.deploy.local.WORKER_MALLOC. Two measurements on MNIST's 60,000
training images (uint8), k=256, centers 256 seeded rows, Yinyang groups as the job makes them:

  one thread   step_chunk (job.engine.bounds) on the first 32,000 rows, iterations 10-29 (median ms),
               in a fresh process per setting with OPENBLAS_NUM_THREADS=1, as in a worker
  2 workers    bounded_lloyd (job.kmeans.bounded), 30 iterations on all 60,000 rows persisted over a
               LocalCluster of 2 single-threaded workers started with each setting (seconds)

Writes benchmarks/results/worker_malloc.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from _common import REPO, mnist_store, print_table, save

K = 256
DISTRIBUTED = {"MALLOC_TRIM_THRESHOLD_": "65536"}


def _settings() -> dict[str, dict[str, str]]:
    sys.path.insert(0, str(REPO))
    from job.deploy.local import WORKER_MALLOC

    return {
        "glibc's defaults": {},
        "distributed's (trim threshold 64 KiB)": DISTRIBUTED,
        "the job's (+ WORKER_MALLOC)": {**DISTRIBUTED, **{k: str(v) for k, v in WORKER_MALLOC.items()}},
    }


def _rows(m: int | None = None) -> np.ndarray:
    import zarr

    images = zarr.open_group(str(mnist_store()), mode="r")["train/images"]
    X = images[:].reshape(images.shape[0], -1)
    return X if m is None else X[:m]


def one_thread() -> None:
    """In this process (started with the setting in its environment): median ms of a bounded step."""
    sys.path.insert(0, str(REPO))
    from job.engine import bounds

    X = _rows(32_000)
    centers = X[np.random.default_rng(0).choice(len(X), K, replace=False)].astype(np.float64)
    groups = bounds.make_groups(centers, bounds.group_count(K), 0)
    state, (sums, counts, _, _) = bounds.init_chunk(X, centers, groups)
    times = []
    for _ in range(30):
        new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centers)
        moves = np.sqrt(((new - centers) ** 2).sum(axis=1))
        centers = new
        started = time.perf_counter()
        state, (ds, dc, *_) = bounds.step_chunk(X, state, centers, moves, groups)
        times.append(time.perf_counter() - started)
        sums, counts = sums + ds, counts + dc
    print(json.dumps({"step ms": 1000 * statistics.median(times[10:])}))


def two_workers(env: dict[str, str]) -> float:
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster

    from job.deploy.lifecycle import reduce_batching_latency
    from job.engine.map_reduce import plan_tasks
    from job.engine.persist import persist_spread
    from job.kmeans.bounded import bounded_lloyd
    from job.kmeans.passes import LoopRule

    X = _rows()
    centers = X[np.random.default_rng(0).choice(len(X), K, replace=False)].astype(np.float64)
    for key in [key for key in os.environ if key.startswith("MALLOC_")]:
        del os.environ[key]  # a Nanny writes its pre-spawn-environ here: the next setting starts clean
    spawn = {
        key: v
        for key, v in dask.config.get("distributed.nanny.pre-spawn-environ").items()
        if "MALLOC" not in key
    }
    with dask.config.set({"distributed.nanny.pre-spawn-environ": {**spawn, **env}}):
        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.ERROR,
        )
    with cluster, Client(cluster) as client:
        reduce_batching_latency(client)
        persisted = persist_spread(client, da.from_array(X, chunks=(len(X) // 2, X.shape[1])))
        started = time.perf_counter()
        bounded_lloyd(persisted, plan_tasks(persisted), centers, LoopRule(tol=0, max_iter=30))
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one-thread", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_thread:
        one_thread()
        return
    sys.path.insert(0, str(REPO))
    mnist_store()
    settings = _settings()
    results: dict[str, dict[str, list[float]]] = {name: {"step ms": [], "loop s": []} for name in settings}
    for _ in range(args.repeats):  # interleaved: the machine's noise falls on every setting alike
        for name, env in settings.items():
            clean = {key: v for key, v in os.environ.items() if not key.startswith("MALLOC_")}
            proc = subprocess.run(
                [sys.executable, __file__, "--one-thread"],
                env={**clean, **env, "OPENBLAS_NUM_THREADS": "1"},
                capture_output=True,
                text=True,
                check=True,
                cwd=REPO / "benchmarks",
            )
            results[name]["step ms"].append(json.loads(proc.stdout.strip().splitlines()[-1])["step ms"])
            results[name]["loop s"].append(two_workers(env))
    rows = [
        {
            "setting": name,
            "one thread: step ms": statistics.median(r["step ms"]),
            "2 workers: 30 iterations s": statistics.median(r["loop s"]),
        }
        for name, r in results.items()
    ]
    print_table(rows, ["setting", "one thread: step ms", "2 workers: 30 iterations s"])
    save("worker_malloc", {"k": K, "repeats": args.repeats, "rows": rows, "runs": results})


if __name__ == "__main__":
    main()
