"""What finding nearest centers through the centers' projection (job.engine.projected) buys over one BLAS
product against every center.

    python benchmarks/projected_search.py [--ks 64,128,256,512,1024] [--dims 16,24,32,48]
        [--store data/mnist-1000000.zarr --rows 200000 --name NAME]

On MNIST's 60,000 training images (uint8, as the workers hold them), one thread: centers from 5 plain
Lloyd iterations after random rows; every row assigned by job.engine.kernels.assign (the fused kernel's
distances) and by job.engine.projected.assign with `--dims` directions, medians of 3. Prints seconds,
the ratio, the exact distances measured per row, and whether the labels agree with a float64 brute
force on the first 2,000 rows. --store and --rows take the first rows of another store's train split
instead. Writes
benchmarks/results/<name>.json (default projected_search).
"""

from __future__ import annotations

import argparse

import numpy as np
import zarr
from threadpoolctl import threadpool_limits

from _common import mnist_store, print_table, save, timed
from job.engine import kernels, projected


def centers_for(X: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    C = X[np.random.default_rng(seed).choice(len(X), k, replace=False)].astype(np.float64)
    for _ in range(5):
        sums, counts, _ = kernels.lloyd_partial(X, C)
        C = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], C)
    return C


def search_rows(X: np.ndarray, ks, dims) -> list[dict]:
    rows = []
    check = X[:2_000].astype(np.float64)
    with threadpool_limits(1):
        for k in ks:
            C = centers_for(X, k)
            brute = np.argmin(((check[:, None, :] - C[None]) ** 2).sum(axis=2), axis=1)
            (plain, _), plain_s = timed(lambda: kernels.assign(X, C), repeats=3)
            for q in dims:
                if q >= k:
                    continue
                projection = projected.project(C, dims=q)
                projected.assign(X[:100], C, projection)  # compiled before timing
                (labels, _), s = timed(lambda: projected.assign(X, C, projection), repeats=3)
                measured = sum(b[-1] for b in projected.nearest_blocks(X, C, projection))
                rows.append(
                    {
                        "k": k,
                        "dims": q,
                        "product s": plain_s,
                        "projection s": s,
                        "ratio": s / plain_s,
                        "distances per row": measured / len(X),
                        "labels as the product's": int((labels == plain).sum()) / len(X),
                        "labels as float64 brute force": bool(np.array_equal(labels[:2_000], brute)),
                    }
                )
                print_table(rows[-1:], list(rows[-1]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="64,128,256,512,1024")
    parser.add_argument("--dims", default="16,24,32,48")
    parser.add_argument("--store", default=None, help="another store (default: MNIST's)")
    parser.add_argument("--rows", type=int, default=None, help="its first rows (default: all)")
    parser.add_argument("--name", default="projected_search")
    args = parser.parse_args()
    store = mnist_store() if args.store is None else args.store
    images = zarr.open_group(str(store), mode="r")["train/images"][: args.rows]
    X = np.ascontiguousarray(images.reshape(len(images), -1))
    ks = [int(v) for v in args.ks.split(",")]
    search = search_rows(X, ks, [int(v) for v in args.dims.split(",")])
    print()
    print_table(search, list(search[0]))
    payload: dict = {"store": str(args.store or "MNIST"), "rows": len(X), "search": search}
    save(args.name, payload)


if __name__ == "__main__":
    main()
