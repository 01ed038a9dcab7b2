"""Strong scaling: the same fit on 1, 2, 4, ... workers, fixed work, in one run.

    python benchmarks/strong_scaling.py [--workers 1,2,4] [--copies 1,4] [--iters 40] [--repeats 3]
    python benchmarks/strong_scaling.py --scheduler tcp://HOST:8786   # an existing cluster, as it is

For each data size (MNIST-70k times each of --copies, stacked) and each worker count: a LocalCluster of
that many single-threaded worker processes, X persisted and balanced as the job does, the same initial
centers (our k-means||, seed 0), tol=0 and --iters Lloyd iterations. Reports ms per Lloyd iteration
(median of --repeats), the k-means|| time, speed-up and parallel efficiency against 1 worker. Worker counts
above os.cpu_count() oversubscribe the cores: they are run and marked, but say nothing about scaling.
Writes benchmarks/results/strong_scaling.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import dask.array as da
from distributed import Client, LocalCluster

from _common import mnist_store, print_table, save
from job.dataset import open_dataset, to_features
from job.deploy.lifecycle import reduce_batching_latency
from job.engine.persist import persist_balanced
from job.kmeans.estimator import FusedKMeans
from job.kmeans.kmeans_parallel import kmeans_parallel


def measure(client: Client, X_lazy: da.Array, iters: int, repeats: int) -> dict:
    reduce_batching_latency(client)
    X = persist_balanced(client, X_lazy)
    started = time.perf_counter()
    centers, _ = kmeans_parallel(X, 10, seed=0)
    init_s = time.perf_counter() - started
    FusedKMeans(10, init=centers, max_iter=3, tol=0).fit(X)  # warm up: numba, imports, connections
    per_iter = []
    for _ in range(repeats):
        started = time.perf_counter()
        model = FusedKMeans(10, init=centers, max_iter=iters, tol=0).fit(X)
        per_iter.append((time.perf_counter() - started) / model.n_iter_)
    client.cancel(X)
    return {
        "ms/iter": 1e3 * statistics.median(per_iter),
        "init s": init_s,
        "spread %": 100 * (max(per_iter) - min(per_iter)) / statistics.median(per_iter),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--copies", default="1,4", help="data sizes as multiples of MNIST-70k")
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scheduler", default=None, help="measure this existing cluster instead")
    args = parser.parse_args()

    data = open_dataset(mnist_store(), "all")
    cores = os.cpu_count()
    rows = []
    for copies in [int(c) for c in args.copies.split(",")]:
        X_lazy = to_features(da.concatenate([data.images] * copies))
        counts = ["existing"] if args.scheduler else [int(w) for w in args.workers.split(",")]
        for n in counts:
            if args.scheduler:
                with Client(args.scheduler) as client:
                    n = len(client.scheduler_info(n_workers=-1)["workers"])
                    result = measure(client, X_lazy, args.iters, args.repeats)
            else:
                with (
                    LocalCluster(
                        n_workers=n,
                        threads_per_worker=1,
                        host="127.0.0.1",
                        dashboard_address="127.0.0.1:0",
                        memory_limit="6GiB",
                    ) as cluster,
                    Client(cluster) as client,
                ):
                    result = measure(client, X_lazy, args.iters, args.repeats)
            rows.append(
                {
                    "images": X_lazy.shape[0],
                    "workers": n,
                    **result,
                    "note": "oversubscribed" if n > cores else "",
                }
            )
            print(f"  {X_lazy.shape[0]:,} images, {n} worker(s): {result['ms/iter']:.1f} ms/iter", flush=True)
    for row in rows:
        base = next(
            r
            for r in rows
            if r["images"] == row["images"]
            and r["workers"] == min(q["workers"] for q in rows if q["images"] == row["images"])
        )
        row["speed-up"] = base["ms/iter"] / row["ms/iter"]
        row["efficiency"] = row["speed-up"] * base["workers"] / row["workers"]
    print(f"\nStrong scaling on {cores} cores ({args.iters} Lloyd iterations, k=10, X persisted)")
    print_table(
        rows, ["images", "workers", "ms/iter", "spread %", "init s", "speed-up", "efficiency", "note"]
    )
    save("strong_scaling", {"args": vars(args), "cores": cores, "rows": rows})


if __name__ == "__main__":
    main()
