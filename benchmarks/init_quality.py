"""k-means|| quality on all 70,000 MNIST images, over several seeds: ours, stock dask-ml, scikit-learn.

    python benchmarks/init_quality.py [--seeds 10]

For each seed: inertia after the initialisation and after Lloyd (both the true sum of squared
distances), ARI and NMI against the digits, init and Lloyd time, passes over X (ours), and the number
of distinct initial centers. Methods: our k-means|| + fused Lloyd (the job's default), stock dask-ml
KMeans (its k-means|| and Lloyd), scikit-learn k-means++ with n_init=1. Prints per-seed rows and a
summary (medians), and writes benchmarks/results/init_quality.json.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from dask_ml.cluster import KMeans as DaskMLKMeans
from dask_ml.cluster.k_means import k_init
from distributed import Client, LocalCluster
from sklearn.cluster import KMeans, kmeans_plusplus
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from _common import mnist_store, print_table, save
from job.dataset import open_dataset, to_features
from job.deploy.lifecycle import reduce_batching_latency
from job.engine.persist import persist_balanced
from job.kmeans.estimator import FusedKMeans
from job.kmeans.passes import lloyd_step


def _row(method, seed, X, y, init, init_s, model, fit_s, passes=None):
    labels = model.labels_ if isinstance(model.labels_, np.ndarray) else model.labels_.compute()
    return {
        "method": method,
        "seed": seed,
        "init inertia": float(lloyd_step(X, np.asarray(init, dtype=np.float64))[2]),
        "final inertia": float(lloyd_step(X, np.asarray(model.cluster_centers_, dtype=np.float64))[2]),
        "ARI": adjusted_rand_score(y, labels),
        "NMI": normalized_mutual_info_score(y, labels),
        "init s": init_s,
        "lloyd s": fit_s,
        "iterations": int(model.n_iter_),
        "distinct init centers": len(np.unique(np.asarray(init), axis=0)),
        "passes": passes if passes else "-",
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()
    data = open_dataset(mnist_store())
    X_lazy = to_features(data.images)
    X_np, y = X_lazy.compute(), data.labels.compute()
    rows = []
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0"
        ) as cluster,
        Client(cluster) as client,
    ):
        reduce_batching_latency(client)
        X = persist_balanced(client, X_lazy)
        for seed in range(args.seeds):
            model = FusedKMeans(10, random_state=seed, sample_size=None).fit(X)  # k-means||, then plain Lloyd
            rows.append(
                _row(
                    "ours: k-means|| + fused",
                    seed,
                    X,
                    y,
                    model.init_centers_,
                    model.init_time_,
                    model,
                    model.lloyd_time_,
                    model.init_info_["passes"],
                )
            )

            started = time.perf_counter()
            init = k_init(X, 10, init="k-means||", random_state=seed)
            init_s = time.perf_counter() - started
            started = time.perf_counter()
            model = DaskMLKMeans(10, init=init).fit(X)
            rows.append(_row("stock dask-ml", seed, X, y, init, init_s, model, time.perf_counter() - started))

            started = time.perf_counter()
            init, _ = kmeans_plusplus(X_np, 10, random_state=seed)
            init_s = time.perf_counter() - started
            started = time.perf_counter()
            model = KMeans(10, init=init, n_init=1).fit(X_np)
            rows.append(
                _row("scikit-learn k-means++", seed, X, y, init, init_s, model, time.perf_counter() - started)
            )
            print(f"seed {seed} done", flush=True)
    columns = [
        "method",
        "seed",
        "init inertia",
        "final inertia",
        "ARI",
        "NMI",
        "init s",
        "lloyd s",
        "iterations",
        "distinct init centers",
        "passes",
    ]
    print_table(rows, columns)
    summary = []
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        summary.append(
            {
                "method": method,
                **{
                    f"median {c}": float(np.median([r[c] for r in mine]))
                    for c in ("init inertia", "final inertia", "ARI", "NMI", "init s", "lloyd s")
                },
                "min distinct init centers": min(r["distinct init centers"] for r in mine),
            }
        )
    sk = summary[2]["median final inertia"]
    for s in summary:
        s["final vs scikit-learn"] = s["median final inertia"] / sk - 1
    print()
    print_table(
        summary,
        [
            "method",
            "median init inertia",
            "median final inertia",
            "final vs scikit-learn",
            "median ARI",
            "median NMI",
            "median init s",
            "median lloyd s",
            "min distinct init centers",
        ],
    )
    save("init_quality", {"seeds": args.seeds, "per_seed": rows, "summary": summary})


if __name__ == "__main__":
    main()
