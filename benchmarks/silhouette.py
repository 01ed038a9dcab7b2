"""The job's silhouette on its 10,000-row sample against scikit-learn's, as k grows.

    python benchmarks/silhouette.py [--k 10,256,1024] [--repeats 3] [--name silhouette]

The job scores each fit's silhouette on a seeded 10,000-row sample while the client draws the figures
(job.evaluation.metrics.start_silhouette, on the job's own LocalCluster of 2 single-threaded workers).
Here the same 10,000 MNIST training images (uint8, as the job holds them) are labelled by their nearest
of k of them picked at random (the cost depends on k and the labels' sizes, not on how good they are),
and for each k, alternately, --repeats times: the job's start_silhouette (started and waited for) and
scikit-learn's `silhouette_score` in this process (its chunked distances, BLAS on both cores). Prints the
medians, the ratio and the two values, and writes benchmarks/results/<--name>.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import ExitStack

import numpy as np
import zarr

from _common import REPO, mnist_store, print_table, save

sys.path.insert(0, str(REPO))

SAMPLE_ROWS = 10_000


def _labels(Xs: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    from sklearn.metrics import pairwise_distances_argmin

    rng = np.random.default_rng(seed)
    centers = Xs[rng.choice(len(Xs), k, replace=False)].astype(np.float32)
    return pairwise_distances_argmin(Xs.astype(np.float32), centers).astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", default="10,256,1024")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", default="silhouette")
    args = parser.parse_args()
    from sklearn.metrics import silhouette_score

    from job.deploy.local import LocalConfig
    from job.evaluation.metrics import sample_indices, start_silhouette

    images = zarr.open_group(str(mnist_store()), mode="r")["train/images"]
    index = sample_indices(images.shape[0], SAMPLE_ROWS, seed=0)
    Xs = images[:][index].reshape(len(index), -1)  # uint8, as the job's sample rows
    rows = []
    with ExitStack() as stack:
        client = LocalConfig(dashboard_address="127.0.0.1:0").start(stack)
        client.wait_for_workers(1)
        start_silhouette(Xs[:2000], _labels(Xs[:2000], 10), 10)()  # workers warm: imports, first BLAS call
        for k in (int(v) for v in args.k.split(",")):
            labels = _labels(Xs, k)
            times: dict[str, list[float]] = {"job": [], "scikit-learn": []}
            values = {}
            for _ in range(args.repeats):
                started = time.perf_counter()
                values["job"] = start_silhouette(Xs, labels, k)()
                times["job"].append(time.perf_counter() - started)
                started = time.perf_counter()
                values["scikit-learn"] = float(silhouette_score(Xs.astype(np.float32), labels))
                times["scikit-learn"].append(time.perf_counter() - started)
            job_s, sk_s = statistics.median(times["job"]), statistics.median(times["scikit-learn"])
            rows.append(
                {
                    "k": k,
                    "job s": job_s,
                    "scikit-learn s": sk_s,
                    "job / scikit-learn": job_s / sk_s,
                    "job value": values["job"],
                    "scikit-learn value": values["scikit-learn"],
                    "runs": times,
                }
            )
            print(f"k={k}: job {job_s:.2f} s, scikit-learn {sk_s:.2f} s", flush=True)
    print_table(
        rows, ["k", "job s", "scikit-learn s", "job / scikit-learn", "job value", "scikit-learn value"]
    )
    save(args.name, {"rows_sampled": SAMPLE_ROWS, "repeats": args.repeats, "results": rows})


if __name__ == "__main__":
    main()
