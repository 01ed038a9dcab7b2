"""A notebook's fit: FusedKMeans on a numpy array against the same rows as a dask array and scikit-learn.

MNIST's 60,000 training images as float32 in [0, 1], k=10, seed 0, default parameters, in one process
holding a 2-worker LocalCluster Client (1 thread each, as a notebook would after `Client()`), then with
no Client at all (dask's threaded scheduler); scikit-learn KMeans(10, n_init=1) in the same process with
2 BLAS threads, interleaved with each. Every fit returns its labels as numpy (the
dask fit's lazy labels_ are computed inside its timing, since that is what the numpy fit hands back).
The three fits are interleaved --repeats times; medians. Issue "As a user would", item 9: a numpy fit
no slower than scikit-learn's.

    .venv/bin/python benchmarks/in_memory_fit.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import dask.array as da
import numpy as np
import zarr
from distributed import Client, LocalCluster
from sklearn.cluster import KMeans

from _common import mnist_store, print_table, save
from job.kmeans.estimator import FusedKMeans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    X = zarr.open_group(str(mnist_store()), mode="r")["train/images"][:].reshape(60_000, -1)
    X = (X / np.float32(255)).astype(np.float32)

    def job_numpy():
        model = FusedKMeans(n_clusters=10, random_state=0).fit(X)
        return model.inertia_, model.labels_

    def job_dask():
        model = FusedKMeans(n_clusters=10, random_state=0).fit(X_dask)
        return model.inertia_, np.asarray(model.labels_.compute())

    def sklearn():
        model = KMeans(n_clusters=10, n_init=1, random_state=0).fit(X)
        return model.inertia_, model.labels_

    fits = {
        "scikit-learn KMeans(10, n_init=1) (anchor)": sklearn,
        "FusedKMeans.fit(numpy array)": job_numpy,
        "FusedKMeans.fit(persisted dask array) + labels_.compute()": job_dask,
    }
    times: dict[str, list[float]] = {name: [] for name in fits}
    results = {}
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            memory_limit="4GiB",
        ) as cluster,
        Client(cluster),
    ):
        X_dask = da.from_array(X, chunks=(7_500, X.shape[1])).persist()
        job_numpy()  # warm: numba's compilation and the workers' imports are not the fit's
        for _ in range(args.repeats):
            for name, fit in fits.items():
                started = time.perf_counter()
                inertia, labels = fit()
                times[name].append(time.perf_counter() - started)
                assert isinstance(labels, np.ndarray) and labels.shape == (60_000,)
                results[name] = float(inertia)
    # No Client at all (a notebook that never made one): dask's local threaded scheduler, interleaved
    # with scikit-learn again.
    local = {
        "scikit-learn KMeans(10, n_init=1), no Client": sklearn,
        "FusedKMeans.fit(numpy array), no Client": job_numpy,
    }
    times.update({name: [] for name in local})
    job_numpy()
    for _ in range(args.repeats):
        for name, fit in local.items():
            started = time.perf_counter()
            inertia, labels = fit()
            times[name].append(time.perf_counter() - started)
            results[name] = float(inertia)
    anchor = statistics.median(times[next(iter(fits))])
    rows = [
        {
            "fit": name,
            "median s": statistics.median(t),
            "x scikit-learn": statistics.median(t) / anchor,
            "inertia": results[name],
        }
        for name, t in times.items()
    ]
    print_table(rows, ["fit", "median s", "x scikit-learn", "inertia"])
    save("in_memory_fit", {"repeats": args.repeats, "rows": rows, "times": times})


if __name__ == "__main__":
    main()
