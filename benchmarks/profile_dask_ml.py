"""Where stock dask-ml KMeans spends its time on MNIST-70k (2-worker LocalCluster, X persisted).

    python benchmarks/profile_dask_ml.py

Measures, with the same persisted X and initial centers: the NaN/inf check pass of `_check_array`; one
Lloyd iteration written exactly as in dask_ml.cluster.k_means._kmeans_single_lloyd, split into graph
construction and computation, with its task count and the workers' busy time per kind of task; the
numba center update against our fused kernel on one chunk; and the k-means|| initialisation's rounds.
Prints tables and writes benchmarks/results/profile_dask_ml.json.
"""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict

import dask.array as da
import numpy as np
from dask import compute
from dask_ml._compat import blockwise
from dask_ml.cluster import KMeans as DaskMLKMeans
from dask_ml.cluster.k_means import _centers_dense, k_init
from dask_ml.metrics import pairwise_distances_argmin_min
from distributed import Client, LocalCluster, get_task_stream
from sklearn.metrics import pairwise_distances_argmin_min as sk_argmin_min
from threadpoolctl import threadpool_limits

from _common import mnist_store, print_table, save, timed
from job.dataset import open_dataset, to_features
from job.deploy.lifecycle import reduce_batching_latency
from job.engine import kernels
from job.engine.persist import persist_balanced


def dask_ml_iteration_graph(X, centers, k):
    """The body of dask-ml's Lloyd loop up to its compute() (dask_ml/cluster/k_means.py)."""
    P = X.shape[1]
    labels, _distances = pairwise_distances_argmin_min(
        X, centers, metric="euclidean", metric_kwargs={"squared": True}
    )
    labels = labels.astype(np.int32)
    r = blockwise(
        _centers_dense,
        "ij",
        X,
        "ij",
        labels,
        "i",
        k,
        None,
        "i",
        adjust_chunks={"i": k, "j": P},
        dtype=X.dtype,
    )
    new_centers = da.from_delayed(sum(r.to_delayed().flatten()), (k, P), X.dtype)
    counts = da.maximum(da.bincount(labels, minlength=k), 1)
    return new_centers / counts[:, None]


def _prefix(key) -> str:
    name = key[0] if isinstance(key, tuple) else str(key)
    return re.sub(r"-[0-9a-f]{8,}.*$", "", name)


def main():
    X_lazy = to_features(open_dataset(mnist_store()).images)
    results = {}
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0"
        ) as cluster,
        Client(cluster) as client,
    ):
        reduce_batching_latency(client)
        X = persist_balanced(client, X_lazy)
        centers = np.asarray(k_init(X, 10, init="k-means||", random_state=0), dtype=np.float32)

        _, check_s = timed(lambda: DaskMLKMeans(10)._check_array(X), 3)
        graph = dask_ml_iteration_graph(X, centers, 10)
        _, build_s = timed(lambda: dask_ml_iteration_graph(X, centers, 10), 5)
        ntasks = len(graph.__dask_graph__())
        with get_task_stream(client) as stream:
            _, compute_s = timed(lambda: compute(dask_ml_iteration_graph(X, centers, 10)), 5)
        busy = defaultdict(float)
        for record in stream.data:
            for part in record["startstops"]:
                busy[f"{part['action']}: {_prefix(record['key'])}"] += (part["stop"] - part["start"]) / 5
        rows = [
            {"step": "NaN/inf check pass (_check_array, once per fit)", "ms": check_s * 1e3},
            {"step": "one Lloyd iteration: build graph (client)", "ms": build_s * 1e3},
            {
                "step": f"one Lloyd iteration: build + compute ({ntasks} tasks, 1 compute call)",
                "ms": compute_s * 1e3,
            },
        ]
        rows += [
            {"step": f"  worker busy time, {name}", "ms": seconds * 1e3}
            for name, seconds in sorted(busy.items(), key=lambda kv: -kv[1])
            if seconds * 1e3 >= 0.5
        ]
        print("Stock dask-ml, per fit and per Lloyd iteration (medians)")
        print_table(rows, ["step", "ms"])
        results["iteration"] = rows

        chunk = X.blocks[0].compute()
        labels = kernels.labels_of(chunk, centers)
        with threadpool_limits(1):
            _centers_dense(chunk, labels, 10)
            kernels.lloyd_partial(chunk, centers.astype(np.float64))
            _, numba_s = timed(lambda: _centers_dense(chunk, labels, 10), 10)
            _, dist_s = timed(lambda: sk_argmin_min(chunk, centers, metric_kwargs={"squared": True}), 10)
            _, fused_s = timed(lambda: kernels.lloyd_partial(chunk, centers.astype(np.float64)), 10)
        column = f"kernel (one chunk of {len(chunk)} rows, 1 thread)"
        kernel_rows = [
            {
                column: "dask-ml _centers_dense (numba)",
                "ms": numba_s * 1e3,
            },
            {
                column: "dask-ml distances + argmin (sklearn, float64 out)",
                "ms": dist_s * 1e3,
            },
            {
                column: "job fused kernel: distances + argmin + sums + counts + inertia",
                "ms": fused_s * 1e3,
            },
        ]
        print()
        print_table(kernel_rows, list(kernel_rows[0]))
        results["kernels"] = kernel_rows

        messages = []
        handler = logging.Handler()
        handler.emit = lambda record: messages.append(record.getMessage())
        logging.getLogger("dask_ml.cluster.k_means").addHandler(handler)
        logging.getLogger("dask_ml.cluster.k_means").setLevel(logging.INFO)
        started = time.perf_counter()
        k_init(X, 10, init="k-means||", random_state=0)
        init_s = time.perf_counter() - started
        rounds = sum(1 for m in messages if m.startswith("Finished init iteration"))
        results["init"] = {"seconds": init_s, "rounds": rounds, "seconds_per_round": init_s / max(rounds, 1)}
        print(
            f"\nk-means|| init: {rounds} rounds (round(ln(cost))), {init_s:.2f} s, "
            f"{init_s / max(rounds, 1) * 1e3:.0f} ms per round"
        )
    save("profile_dask_ml", results)


if __name__ == "__main__":
    main()
