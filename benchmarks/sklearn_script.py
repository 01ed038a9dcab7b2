"""The task's plain scikit-learn script (../shared/SEED.md), reading the same IDX files instead of
fetch_openml (no network here). Used as the end-to-end baseline by fit_speed.py.

    python benchmarks/sklearn_script.py IDX_FOLDER OUT_PNG
"""

import gzip
import sys
import time

import numpy as np
from matplotlib.figure import Figure
from sklearn.cluster import KMeans


def load(path):
    with gzip.open(path) as f:
        data = f.read()
    ndim = data[3]
    shape = np.frombuffer(data[4 : 4 + 4 * ndim], dtype=">u4")
    return np.frombuffer(data[4 + 4 * ndim :], dtype=np.uint8).reshape(shape)


if __name__ == "__main__":
    folder, out = sys.argv[1], sys.argv[2]
    images = np.concatenate(
        [load(f"{folder}/train-images-idx3-ubyte.gz"), load(f"{folder}/t10k-images-idx3-ubyte.gz")]
    )
    X = images.reshape(len(images), -1) / 255.0  # Normalize pixel values
    kmeans = KMeans(n_clusters=10, random_state=42)
    started = time.perf_counter()
    kmeans.fit(X)
    fit_seconds = time.perf_counter() - started
    cluster_centers = kmeans.cluster_centers_.reshape(10, 28, 28)
    fig = Figure(figsize=(10, 5))
    for i, center in enumerate(cluster_centers):
        ax = fig.add_subplot(2, 5, i + 1)
        ax.imshow(center, cmap="gray")
        ax.axis("off")
    fig.savefig(out)
    # VmHWM, not ru_maxrss: a forked-and-exec'ed child's ru_maxrss starts from its parent's.
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    print(
        f"inertia={kmeans.inertia_:.1f} iterations={kmeans.n_iter_} fit_seconds={fit_seconds:.3f} "
        f"peak_rss={peak}"
    )
