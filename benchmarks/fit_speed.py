"""K-Means fit speed on MNIST-70k: scikit-learn vs stock dask-ml vs the job's fused engine, in one run.

    python benchmarks/fit_speed.py [--iters 40] [--repeats 3]

A. Fixed work: the same initial centers (dask-ml k-means|| with seed 0), tol=0, --iters Lloyd
   iterations, X persisted on a 2-worker LocalCluster (1 thread each); scikit-learn in this process
   with 2 BLAS threads. Per-iteration time = whole fit / iterations, median of --repeats.
B. Whole default fits from scratch (k-means|| for Dask, k-means++ for scikit-learn, default tol).
C. Sweeps for the fused engine: chunk size, persisted vs streamed from Zarr, processes vs threads.
D. End to end: `python -m job` (Zarr store to run folder) against the task's scikit-learn script.
Prints tables and writes benchmarks/results/fit_speed.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from dask_ml.cluster import KMeans as DaskMLKMeans
from dask_ml.cluster.k_means import k_init
from distributed import Client, LocalCluster
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from _common import REPO, mnist_store, print_table, save, timed
from job.dataset import open_dataset, to_features
from job.deploy.lifecycle import reduce_batching_latency
from job.engine.persist import persist_balanced
from job.kmeans.estimator import FusedKMeans
from job.kmeans.passes import lloyd_step

CLUSTER = {
    "n_workers": 2,
    "threads_per_worker": 1,
    "host": "127.0.0.1",
    "dashboard_address": "127.0.0.1:0",
    "memory_limit": "4GiB",
}


def fixed_work(X, X_np, init, iters, repeats):
    """Each fit --repeats times, interleaved (sklearn, dask-ml, fused, sklearn, ...) so that the noise of
    a shared machine falls on all of them alike; the median of each is reported."""
    runs = {
        "scikit-learn (lloyd, 2 threads)": lambda: KMeans(
            10, init=init.astype(np.float32), n_init=1, max_iter=iters, tol=0, algorithm="lloyd"
        ).fit(X_np),
        "dask-ml KMeans (stock)": lambda: DaskMLKMeans(10, init=init, max_iter=iters, tol=0).fit(X),
        "fused (job default)": lambda: FusedKMeans(10, init=init, max_iter=iters, tol=0).fit(X),
    }
    times = {name: [] for name in runs}
    models = {}
    for _ in range(repeats):
        for name, run in runs.items():
            models[name], seconds = timed(run, 1)
            times[name].append(seconds)
    rows = []
    for name, model in models.items():
        seconds = float(np.median(times[name]))
        centers = np.asarray(model.cluster_centers_, dtype=np.float64)
        inertia = float(lloyd_step(X, centers)[2])
        rows.append(
            {
                "fit": name,
                "iterations": int(model.n_iter_),
                "fit s": seconds,
                "ms/iteration": seconds / model.n_iter_ * 1e3,
                "inertia": inertia,
                "all runs s": [round(t, 3) for t in times[name]],
            }
        )
    base = rows[0]["ms/iteration"]
    for row in rows:
        row["x scikit-learn"] = row["ms/iteration"] / base
    return rows


def whole_fits(X, X_np, y, seed):
    rows = []
    for name, make in (
        ("scikit-learn k-means++", lambda: KMeans(10, random_state=seed, n_init=1)),
        ("dask-ml KMeans (stock)", lambda: DaskMLKMeans(10, random_state=seed)),
        ("fused (k-means||, plain Lloyd)", lambda: FusedKMeans(10, random_state=seed, sample_size=None)),
    ):
        model = make()
        started = time.perf_counter()
        model.fit(X_np if name.startswith("scikit") else X)
        seconds = time.perf_counter() - started
        centers = np.asarray(model.cluster_centers_, dtype=np.float64)
        inertia = float(lloyd_step(X, centers)[2])
        labels = model.labels_ if isinstance(model.labels_, np.ndarray) else model.labels_.compute()
        rows.append(
            {
                "fit": name,
                "iterations": int(model.n_iter_),
                "total s": seconds,
                "init s": getattr(model, "init_time_", float("nan")),
                "inertia": inertia,
                "ARI": adjusted_rand_score(y, labels),
            }
        )
    return rows


def sweeps(client, X_lazy, init, iters, repeats):
    rows = []

    def fused(X):
        return timed(lambda: FusedKMeans(10, init=init, max_iter=iters, tol=0).fit(X), repeats)[1]

    for rows_per_chunk in (4096, 8750, 17500, 35000):
        X = persist_balanced(client, X_lazy, rows_per_chunk)
        rows.append(
            {
                "variant": f"persisted, {rows_per_chunk} rows/chunk, 2 processes",
                "ms/iteration": fused(X) / iters * 1e3,
            }
        )
        del X
    rows.append(
        {
            "variant": "streamed from Zarr (8192 rows/chunk), 2 processes",
            "ms/iteration": fused(X_lazy) / iters * 1e3,
        }
    )
    return rows


def threads_variant(X_lazy, init, iters, repeats):
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=2,
            processes=False,
            host="127.0.0.1",
            protocol="tcp",
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        Client(cluster) as client,
    ):
        reduce_batching_latency(client)
        X = persist_balanced(client, X_lazy)
        _, seconds = timed(lambda: FusedKMeans(10, init=init, max_iter=iters, tol=0).fit(X), repeats)
    return {
        "variant": "persisted, 8750 rows/chunk, 1 process x 2 threads",
        "ms/iteration": seconds / iters * 1e3,
    }


def end_to_end(store):
    source = os.environ.get("MNIST_SOURCE") or str(REPO.parent / "shared" / "data" / "mnist")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmd in (
            (
                "task's scikit-learn script",
                [sys.executable, "benchmarks/sklearn_script.py", source, f"{tmp}/c.png"],
            ),
            (
                "python -m job (Zarr to run folder)",
                [
                    sys.executable,
                    "-m",
                    "job",
                    "--data",
                    str(store),
                    "--out",
                    f"{tmp}/run",
                    "--dashboard-address",
                    "127.0.0.1:0",
                ],
            ),
        ):
            started = time.perf_counter()
            subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
            rows.append({"command": name, "wall s": time.perf_counter() - started})
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    store = mnist_store()
    data = open_dataset(store)
    X_lazy = to_features(data.images)
    X_np, y = X_lazy.compute(), data.labels.compute()
    results = {"iters": args.iters, "repeats": args.repeats}
    with LocalCluster(**CLUSTER) as cluster, Client(cluster) as client:
        reduce_batching_latency(client)  # as the job does
        X = persist_balanced(client, X_lazy)  # as the job does: 8 equal chunks, 4 per worker
        init = np.asarray(k_init(X, 10, init="k-means||", random_state=0), dtype=np.float64)

        print(
            f"\nA. Same initial centers, tol=0, {args.iters} iterations, X persisted (median of "
            f"{args.repeats})"
        )
        results["fixed_work"] = fixed_work(X, X_np, init, args.iters, args.repeats)
        print_table(
            results["fixed_work"], ["fit", "iterations", "fit s", "ms/iteration", "x scikit-learn", "inertia"]
        )

        print("\nB. Whole default fits from scratch, seed 0")
        results["whole_fits"] = whole_fits(X, X_np, y, 0)
        print_table(results["whole_fits"], ["fit", "iterations", "total s", "init s", "inertia", "ARI"])

        print(f"\nC. Fused engine sweeps ({args.iters} iterations, same centers)")
        results["sweeps"] = sweeps(client, X_lazy, init, args.iters, args.repeats)
    results["sweeps"].append(threads_variant(X_lazy, init, args.iters, args.repeats))
    print_table(results["sweeps"], ["variant", "ms/iteration"])

    print("\nD. End to end, all 70,000 images")
    results["end_to_end"] = end_to_end(store)
    print_table(results["end_to_end"], ["command", "wall s"])
    save("fit_speed", results)


if __name__ == "__main__":
    main()
