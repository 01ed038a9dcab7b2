"""What searching rows in doubt by group (Ding et al.'s group filter) buys over searching every center.

    python benchmarks/group_search.py [--ks 128,256,512,1024] [--iters 20]

On MNIST's 60,000 training images (uint8, as the workers hold them), in chunks of 8,192 rows, one
thread: centers from 3 plain Lloyd iterations after random rows, then `--iters` steps of
job.engine.bounds.step_chunk, (a) searching every row in doubt against every center with Ding's k/10
groups, at most 32 (the 128 bytes of bounds per row of job.kmeans.bounded: what the job did for every
k) and (b) searching it only in the groups whose bound it fails, with
groups of SEARCH_GROUP_CENTERS centers. Both give plain Lloyd's labels (checked against a full assignment
after the last step). Prints seconds of the steps, their share of the row-center distances, and the
ratio; writes benchmarks/results/group_search.json.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import zarr
from threadpoolctl import threadpool_limits

from _common import mnist_store, print_table, save
from job.engine import bounds, kernels
from job.kmeans.bounded import BOUNDS_BYTES_PER_ROW

CHUNK_ROWS = 8_192


def run(X: np.ndarray, start: np.ndarray, n_groups: int, by_group: bool, iters: int) -> dict:
    saved = bounds.GROUP_SEARCH_MIN_K
    bounds.GROUP_SEARCH_MIN_K = 1 if by_group else 10**9  # the variant, whatever k is
    try:
        C = start.copy()
        groups = bounds.make_groups(C, n_groups, seed=0)
        chunks = [X[i : i + CHUNK_ROWS] for i in range(0, len(X), CHUNK_ROWS)]
        results = [bounds.init_chunk(x, C, groups) for x in chunks]
        states = [r[0] for r in results]
        sums = sum(r[1][0] for r in results)
        counts = sum(r[1][1] for r in results)
        seconds, computed = 0.0, 0
        for _ in range(iters):
            new = sums / np.maximum(counts, 1)[:, None]
            moves = np.sqrt(((new - C) ** 2).sum(axis=1))
            C = new
            started = time.perf_counter()
            out = [bounds.step_chunk(x, s, C, moves, groups) for x, s in zip(chunks, states)]
            seconds += time.perf_counter() - started
            states = [o[0] for o in out]
            sums = sums + sum(o[1][0] for o in out)
            counts = counts + sum(o[1][1] for o in out)
            computed += sum(o[1][3] for o in out)
        labels = np.concatenate([s[0] for s in states])
        exact = bool(np.array_equal(labels, kernels.assign(X, C)[0]))
        return {"s": seconds, "distances": computed / (iters * len(X) * len(C)), "exact": exact}
    finally:
        bounds.GROUP_SEARCH_MIN_K = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="128,256,512,1024")
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()
    images = zarr.open_group(str(mnist_store()), mode="r")["train/images"][:]
    X = images.reshape(len(images), -1)
    rows = []
    with threadpool_limits(1):
        for k in (int(v) for v in args.ks.split(",")):
            rng = np.random.default_rng(0)
            C = X[rng.choice(len(X), k, replace=False)].astype(np.float64)
            for _ in range(3):
                sums, counts, _ = kernels.lloyd_partial(X, C)
                C = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], C)
            every = run(X, C, min(max(1, k // 10), BOUNDS_BYTES_PER_ROW // 4), False, args.iters)
            grouped = run(X, C, max(1, k // bounds.SEARCH_GROUP_CENTERS), True, args.iters)
            rows.append(
                {
                    "k": k,
                    "every center s": every["s"],
                    "every center: distances": every["distances"],
                    "by group s": grouped["s"],
                    "by group: distances": grouped["distances"],
                    "by group / every": grouped["s"] / every["s"],
                    "labels exact": every["exact"] and grouped["exact"],
                    "job searches by group": bounds.searches_groups(k),
                }
            )
    print_table(rows, list(rows[0]))
    save("group_search", {"rows": rows, "iters": args.iters, "chunk_rows": CHUNK_ROWS})


if __name__ == "__main__":
    main()
