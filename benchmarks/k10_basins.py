"""Why k=10's held-out accuracy is not K-Means' objective: the basins scikit-learn lands in, and the job's.

    python benchmarks/k10_basins.py [--seeds 0,1,2,3,4]

On MNIST's 60,000 training images in [0, 1]: scikit-learn `KMeans(10, n_init=1, random_state=seed)` and
the job's estimator (`FusedKMeans(10, random_state=seed)` on the numpy array, defaults) per seed; each
fit's inertia, the held-out accuracy of its clusters read as their majority training digit (MNIST's real
10,000 test images), and the digits that no cluster is read as. Writes benchmarks/results/k10_basins.json.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import zarr

from _common import REPO, mnist_store, print_table, save

sys.path.insert(0, str(REPO))


def _score(labels, predicted_test, y, y_test) -> tuple[float, list[int]]:
    majority = np.array([np.bincount(y[labels == c], minlength=10).argmax() for c in range(10)])
    accuracy = float((majority[predicted_test] == y_test).mean())
    return accuracy, sorted(set(range(10)) - set(majority.tolist()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    args = parser.parse_args()
    from sklearn.cluster import KMeans

    from job.kmeans.estimator import FusedKMeans

    root = zarr.open_group(str(mnist_store()), mode="r")
    X = root["train/images"][:].reshape(60_000, -1) / 255.0
    y = root["train/labels"][:]
    X_test = root["test/images"][:].reshape(10_000, -1) / 255.0
    y_test = root["test/labels"][:]
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name, model in (
            ("scikit-learn KMeans(10, n_init=1)", KMeans(10, n_init=1, random_state=seed)),
            ("the job's FusedKMeans(10)", FusedKMeans(10, random_state=seed)),
        ):
            model.fit(X)
            labels = np.asarray(model.labels_)
            accuracy, missing = _score(labels, np.asarray(model.predict(X_test)), y, y_test)
            rows.append(
                {
                    "estimator": name,
                    "seed": seed,
                    "inertia": float(model.inertia_),
                    "held-out accuracy": accuracy,
                    "digits without a cluster": " ".join(map(str, missing)) or "-",
                }
            )
            print_table(rows[-1:], list(rows[-1]))
    print()
    print_table(rows, list(rows[0]))
    save("k10_basins", {"seeds": args.seeds, "rows": rows})


if __name__ == "__main__":
    main()
