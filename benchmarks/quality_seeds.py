"""Clustering quality of the default fit against plain Lloyd (the previous default) over seeds, on MNIST.

    python benchmarks/quality_seeds.py [--seeds 5]

All 70,000 images, k=10, on one 2-worker LocalCluster with X (uint8) persisted, as the job runs:
`FusedKMeans(10, random_state=s)` (4 single-task starts on a subsample, then Lloyd on all rows) and
`FusedKMeans(10, random_state=s, sample_size=None)` (k-means|| then Lloyd on all rows, what
`--sample-size all` runs and what the job ran by default before). Per seed: inertia (pixels in [0, 1]),
ARI, NMI, accuracy by the Hungarian and the majority mapping, fit seconds; then the median of each.
Writes benchmarks/results/quality_seeds.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from _common import REPO, mnist_store, print_table, save

sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    from job.dataset import PIXEL_SCALE, flat_pixels, open_dataset
    from job.deploy.lifecycle import reduce_batching_latency
    from job.engine.persist import persist_balanced
    from job.evaluation import metrics as evaluate
    from job.kmeans.estimator import FusedKMeans

    data = open_dataset(mnist_store(), "all")
    truth = data.labels.compute()
    rows = []
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0"
        ) as cluster,
        Client(cluster) as client,
    ):
        reduce_batching_latency(client)
        X = persist_balanced(client, flat_pixels(data.images))
        FusedKMeans(10, random_state=99).fit(X)  # warm up: numba caches, imports on the workers
        for seed in range(args.seeds):
            for name, params in (
                ("default (starts)", {}),
                ("plain Lloyd (k-means||)", {"sample_size": None}),
            ):
                started = time.perf_counter()
                model = FusedKMeans(10, random_state=seed, **params).fit(X)
                seconds = time.perf_counter() - started
                labels = model.labels_.compute()
                table = np.zeros((10, 10), dtype=np.int64)
                np.add.at(table, (labels, truth), 1)
                m = evaluate.label_metrics(table)
                rows.append(
                    {
                        "fit": name,
                        "seed": seed,
                        "inertia": model.inertia_ * PIXEL_SCALE**2,
                        "ari": m["ari"],
                        "nmi": m["nmi"],
                        "acc hungarian": m["accuracy_hungarian"],
                        "acc majority": m["accuracy_majority"],
                        "iterations": int(model.n_iter_),
                        "fit s": seconds,
                    }
                )
                print(
                    f"seed {seed} {name}: inertia {rows[-1]['inertia']:,.0f}, ARI {m['ari']:.3f}, "
                    f"NMI {m['nmi']:.3f}, acc {m['accuracy_hungarian']:.3f}, {seconds:.1f} s",
                    flush=True,
                )
    columns = ["inertia", "ari", "nmi", "acc hungarian", "acc majority", "iterations", "fit s"]
    medians = [
        {
            "fit": name,
            "seed": "median",
            **{c: statistics.median(r[c] for r in rows if r["fit"] == name) for c in columns},
        }
        for name in ("default (starts)", "plain Lloyd (k-means||)")
    ]
    print_table(rows + medians, ["fit", "seed", *columns])
    save("quality_seeds", {"rows": rows, "medians": medians})


if __name__ == "__main__":
    main()
