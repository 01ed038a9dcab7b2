"""Why Hamerly's bounds barely prune at large k, and what group (Yinyang) or per-center (Elkan) bounds would.

    python benchmarks/bounds_pruning.py [--ks 10,64,256] [--iters 30]

On MNIST's 60,000 training images (uint8 as float64), from the same greedy k-means++ start, plain Lloyd
iterations are run with exact distances (one BLAS product per iteration), and alongside them the bounds
each algorithm would keep, updated by the centers' moves exactly as the algorithm updates them (a row
whose test passes keeps its loosened bounds; one that fails gets exact ones). Per k, averaged over the
iterations after the 5th: the share of rows Hamerly (one lower bound per row, lowered by the largest move
of any other center) must rescan against all k centers, and the share of row-center distances that
Yinyang (Ding et al. 2015: one lower bound per group of ~10 centers, lowered by the group's largest move)
and Elkan (one per center) would compute. Also the seconds per iteration of job.kmeans.in_memory.hamerly
(its fallback scans rows in a scalar loop; its first, full assignment included) against the BLAS kernel
(job.engine.kernels.lloyd_partial), one thread each, over the same number of iterations. Writes
benchmarks/results/bounds_pruning.json.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import zarr
from threadpoolctl import threadpool_limits

from _common import mnist_store, print_table, save
from job.engine.kernels import lloyd_partial
from job.kmeans.in_memory import greedy_kmeans_plusplus, hamerly


def _distances(X: np.ndarray, norms: np.ndarray, C: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(norms[:, None] - 2 * X @ C.T + (C * C).sum(axis=1)[None, :], 0.0))


def _groups(C: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    t = max(1, len(C) // 10)
    return KMeans(t, n_init=1, random_state=seed).fit_predict(C) if t > 1 else np.zeros(len(C), dtype=int)


def simulate(X: np.ndarray, C: np.ndarray, iters: int, seed: int = 0) -> dict:
    n, k = len(X), len(C)
    norms = (X * X).sum(axis=1)
    D = _distances(X, norms, C)
    rows = np.arange(n)
    labels = D.argmin(axis=1)
    upper = D[rows, labels]
    masked = D.copy()
    masked[rows, labels] = np.inf
    lower = masked.min(axis=1)  # Hamerly
    group = _groups(C, seed)
    t = group.max() + 1
    group_lower = np.stack([masked[:, group == g].min(axis=1) for g in range(t)], axis=1)  # Yinyang
    upper_h, upper_y, upper_e, lower_e = (
        upper.copy(),
        upper.copy(),
        upper.copy(),
        D.copy(),
    )  # Elkan: per center
    scanned, yinyang, elkan = [], [], []
    for _it in range(iters):
        counts = np.bincount(labels, minlength=k)
        sums = np.zeros_like(C)
        np.add.at(sums, labels, X)
        new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], C)
        shift = np.sqrt(((new - C) ** 2).sum(axis=1))
        C = new
        D = _distances(X, norms, C)
        truth = D.argmin(axis=1)
        gap = _distances(C, (C * C).sum(axis=1), C)
        np.fill_diagonal(gap, np.inf)
        half_gap = 0.5 * gap.min(axis=1)
        # Hamerly: one lower bound, lowered by the largest move among the other centers.
        order = np.argsort(shift)
        first, second = shift[order[-1]], shift[order[-2]] if k > 1 else 0.0
        upper_h = upper_h + shift[labels]
        lower = lower - np.where(labels == order[-1], second, first)
        tight = np.maximum(half_gap[labels], lower)
        fail = upper_h > tight
        exact_upper = D[rows, labels]
        upper_h = np.where(fail, exact_upper, upper_h)
        fail &= upper_h > tight
        # Yinyang: one lower bound per group, lowered by that group's largest move.
        group_shift = np.array([shift[group == g].max() for g in range(t)])
        upper_y = upper_y + shift[labels]
        group_lower = group_lower - group_shift[None, :]
        global_fail = upper_y > np.maximum(group_lower.min(axis=1), half_gap[labels])
        upper_y = np.where(global_fail, exact_upper, upper_y)
        open_groups = global_fail[:, None] & (group_lower < upper_y[:, None])
        sizes = np.bincount(group, minlength=t)
        yinyang.append((open_groups * sizes[None, :]).sum() / (n * k))
        # Elkan: one lower bound per center, lowered by its own move.
        upper_e = upper_e + shift[labels]
        lower_e = lower_e - shift[None, :]
        candidates = lower_e < upper_e[:, None]
        candidates[rows, labels] = False
        needs = candidates.any(axis=1)
        upper_e = np.where(needs, exact_upper, upper_e)
        candidates &= lower_e < upper_e[:, None]
        elkan.append(candidates.sum() / (n * k))
        scanned.append(fail.mean())
        # Every row now takes its true nearest center (what each algorithm computes); failing rows
        # get exact bounds, the others keep their loosened ones.
        masked = D.copy()
        masked[rows, truth] = np.inf
        moved = truth != labels
        labels = truth
        upper_h = np.where(fail | moved, D[rows, labels], upper_h)
        lower = np.where(fail | moved, masked.min(axis=1), lower)
        refresh_y = open_groups.any(axis=1) | moved
        upper_y = np.where(refresh_y, D[rows, labels], upper_y)
        group_lower = np.where(
            refresh_y[:, None],
            np.stack([masked[:, group == g].min(axis=1) for g in range(t)], axis=1),
            group_lower,
        )
        refresh_e = candidates.any(axis=1) | moved
        upper_e = np.where(refresh_e, D[rows, labels], upper_e)
        lower_e = np.where(refresh_e[:, None], D, lower_e)
    after = slice(5, None)
    return {
        "Hamerly: rows rescanned": float(np.mean(scanned[after])),
        "Yinyang: distances computed": float(np.mean(yinyang[after])),
        "Elkan: distances computed": float(np.mean(elkan[after])),
        "groups": int(t),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="10,64,256")
    parser.add_argument("--iters", type=int, default=30)
    args = parser.parse_args()
    images = zarr.open_group(str(mnist_store()), mode="r")["train/images"][:]
    X = images.reshape(len(images), -1).astype(np.float64)
    rows = []
    for k in (int(v) for v in args.ks.split(",")):
        init = greedy_kmeans_plusplus(
            X[np.random.default_rng(0).choice(len(X), min(len(X), 25_000), replace=False)],
            k,
            np.random.default_rng(0),
        )
        with threadpool_limits(1):
            hamerly(X[:1000], init, 0.0, 1)  # compiled (or loaded from numba's cache) before it is timed
            started = time.perf_counter()
            hamerly(X, init, 0.0, args.iters)
            hamerly_s = (time.perf_counter() - started) / args.iters
            started, C = time.perf_counter(), init
            for _ in range(args.iters):
                sums, counts, _ = lloyd_partial(images.reshape(len(images), -1), C)
                C = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], C)
            blas_s = (time.perf_counter() - started) / args.iters
        row = {
            "k": k,
            **simulate(X, init, args.iters),
            "hamerly s/iter": hamerly_s,
            "BLAS Lloyd s/iter": blas_s,
        }
        rows.append(row)
        print_table([row], list(row))
    print()
    print_table(rows, list(rows[0]))
    save("bounds_pruning", {"iters": args.iters, "rows": rows})


if __name__ == "__main__":
    main()
