"""How well clusters match the true digits, from the contingency table; the silhouette and the PCA of a
seeded sample, on the workers.

Every label-agreement metric (ARI, NMI, homogeneity, completeness, V-measure, accuracies) is a function of
the small [k, n_classes] table alone, which the evaluation's pass builds on the cluster
(job.evaluation.scoring).
May use: data_prep.digits, scipy, numba, distributed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import dask
import numba
import numpy as np
from dask import delayed
from distributed import default_client
from scipy.optimize import linear_sum_assignment
from scipy.special import comb


def _entropy(counts: np.ndarray) -> float:
    total = counts.sum()
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum())


def _mutual_information(table: np.ndarray) -> float:
    n = table.sum()
    rows, cols = table.sum(axis=1), table.sum(axis=0)
    nz = np.nonzero(table)
    joint = table[nz] / n
    return float((joint * (np.log(table[nz] * n) - np.log(rows[nz[0]] * cols[nz[1]].astype(float)))).sum())


def adjusted_rand_index(table: np.ndarray) -> float:
    n = table.sum()
    sum_comb = comb(table, 2).sum()
    rows = comb(table.sum(axis=1), 2).sum()
    cols = comb(table.sum(axis=0), 2).sum()
    expected = rows * cols / comb(n, 2)
    max_index = (rows + cols) / 2
    if max_index == expected:  # both partitions trivial (one cluster, or all singletons)
        return 1.0
    return float((sum_comb - expected) / (max_index - expected))


@dataclass(frozen=True)
class Mapping:
    """Which digit each cluster stands for, and the accuracy of reading clusters as those digits."""

    digits: list[int]  # per cluster; -1 where a cluster maps to no digit
    accuracy: float


def majority_mapping(table: np.ndarray) -> Mapping:
    """Each cluster reads as its most frequent digit (several clusters may share one)."""
    digits = table.argmax(axis=1)
    return Mapping([int(d) for d in digits], float(table.max(axis=1).sum() / table.sum()))


def hungarian_mapping(table: np.ndarray) -> Mapping:
    """A one-to-one cluster-digit assignment maximising matches (scipy's linear_sum_assignment).

    With k > n_classes the extra clusters map to -1 (counted as errors); with k < n_classes some digits
    get no cluster.
    """
    rows, cols = linear_sum_assignment(table, maximize=True)
    digits = np.full(table.shape[0], -1)
    digits[rows] = cols
    return Mapping([int(d) for d in digits], float(table[rows, cols].sum() / table.sum()))


def label_metrics(table: np.ndarray) -> dict:
    """Every metric that depends only on the contingency table (rows: clusters, columns: digits)."""
    table = np.asarray(table, dtype=np.int64)
    h_classes = _entropy(table.sum(axis=0))
    h_clusters = _entropy(table.sum(axis=1))
    mi = _mutual_information(table)
    homogeneity = mi / h_classes if h_classes else 1.0
    completeness = mi / h_clusters if h_clusters else 1.0
    v_measure = (
        2 * homogeneity * completeness / (homogeneity + completeness) if homogeneity + completeness else 0.0
    )
    # NMI with the arithmetic mean of the entropies (scikit-learn's default), which equals the V-measure.
    mean_h = (h_classes + h_clusters) / 2
    nmi = mi / mean_h if mean_h else 1.0
    majority, hungarian = majority_mapping(table), hungarian_mapping(table)
    return {
        "ari": adjusted_rand_index(table),
        "nmi": float(nmi),
        "homogeneity": float(homogeneity),
        "completeness": float(completeness),
        "v_measure": float(v_measure),
        "accuracy_majority": majority.accuracy,
        "accuracy_hungarian": hungarian.accuracy,
        "mapping_majority": majority.digits,
        "mapping_hungarian": hungarian.digits,
        "cluster_sizes": [int(s) for s in table.sum(axis=1)],
    }


# --- silhouette -------------------------------------------------------------------------------------


def sample_indices(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted, seeded random row indices (all rows when size >= n)."""
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def start_silhouette(Xs: np.ndarray, ls: np.ndarray, k: int, block_rows: int = 1000) -> Callable[[], float]:
    """Start the mean silhouette of the sample (Xs [s, p], ls [s]) on the cluster and return a function
    that waits for it, so that the client draws the figures meanwhile. The sample is sent once; each task
    computes the distances between two blocks of rows, i <= j (the distance matrix is symmetric: half the
    ~160 GFLOP of a 10,000-row sample), summed per cluster for the rows of both; a task per block adds up
    its rows' sums and turns them into their silhouettes, so that only s floats come back.

    The sums per cluster are added in one pass over a pair's distances (O(b^2)), not products with a
    one-hot [b, k] matrix (O(b^2 k): at k=1024 more arithmetic than the distances themselves, 3.7x
    scikit-learn's time; benchmarks/silhouette.py, docs/benchmarks.md section 23).
    """
    n = len(Xs)
    if n < 2 or k < 2:
        return lambda: float("nan")
    ls = np.asarray(ls, dtype=np.int64)
    sizes = np.bincount(ls, minlength=k)
    X_all, l_all = delayed(np.asarray(Xs)), delayed(ls)
    starts = range(0, n, block_rows)
    pairs: dict[int, list] = {i: [] for i in starts}  # the pairs that hold each block's rows' sums
    halves: dict[int, list] = {i: [] for i in starts}  # and which of their two results it is
    for i in starts:
        for j in (j for j in starts if j >= i):
            pair = delayed(_silhouette_pair)(X_all, l_all, i, j, block_rows, k)
            pairs[i].append(pair)
            halves[i].append(0)
            if j != i:
                pairs[j].append(pair)
                halves[j].append(1)
    blocks = [
        delayed(_silhouette_block)(l_all, i, block_rows, sizes, tuple(halves[i]), *pairs[i]) for i in starts
    ]
    return _start_then_wait(blocks, lambda values: float(np.concatenate(values).mean()))


def _start_then_wait(tasks: list, finish: Callable):
    """Start dask `tasks` on the default distributed client and return a function that waits for them
    and returns finish(their results); with no distributed client they run now."""
    try:
        client = default_client()
    except ValueError:
        results = dask.compute(*tasks)
        return lambda: finish(results)
    futures = client.compute(tasks)
    return lambda: finish(client.gather(futures))


def _silhouette_pair(X_all, l_all, i, j, rows, k):
    """Distances between rows i:i+rows and j:j+rows of the sample, summed per cluster: (block i's rows'
    sums over block j's clusters [b_i, k], block j's rows' over block i's [b_j, k])."""
    xi, xj = X_all[i : i + rows], X_all[j : j + rows]
    cross = (xi.astype(np.float32) @ xj.astype(np.float32).T).astype(np.float64)
    sq_i = np.einsum("ij,ij->i", xi.astype(np.float64), xi.astype(np.float64))
    sq_j = np.einsum("ij,ij->i", xj.astype(np.float64), xj.astype(np.float64))
    dist = np.sqrt(np.maximum(sq_i[:, None] - 2 * cross + sq_j[None, :], 0.0))
    if i == j:
        np.fill_diagonal(dist, 0.0)
    to_i, to_j = _sums_by_cluster(dist, l_all[i : i + rows], l_all[j : j + rows], k)
    return to_i, to_j.T


@numba.njit(nogil=True, cache=True)
def _sums_by_cluster(dist, row_labels, column_labels, k):  # pragma: no cover - compiled
    """Each row of dist [b, m] summed over the columns of each cluster ([b, k]) and each column over the
    rows of each cluster ([k, m]), in one pass over dist: O(b m) whatever k, no temporary."""
    b, m = dist.shape
    rows_sums = np.zeros((b, k))
    columns_sums = np.zeros((k, m))
    for r in range(b):
        own = row_labels[r]
        for c in range(m):
            d = dist[r, c]
            rows_sums[r, column_labels[c]] += d
            columns_sums[own, c] += d
    return rows_sums, columns_sums


def _silhouette_block(l_all, i, rows, sizes, halves, *pairs) -> np.ndarray:
    """The silhouettes of block i's rows from their per-cluster distance sums: half `halves[m]` of the
    m-th pair's result."""
    sums = sum(pair[half] for pair, half in zip(pairs, halves))
    return _silhouette_from_sums(sums, l_all[i : i + rows], sizes)


def _silhouette_from_sums(sums: np.ndarray, labels: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """s(i) = (b - a) / max(a, b) from each row's summed distances to every cluster [m, k]: a the mean
    distance to the other members of its cluster, b the smallest mean distance to another cluster; 0 for
    a point alone in its cluster (as scikit-learn). The distance products run in float32 (half the time
    of float64 BLAS) with the norms and the sums in float64: ~1e-6 from a float64 computation."""
    own = labels.astype(np.int64)
    own_size = sizes[own]
    rows = np.arange(len(own))
    a = sums[rows, own] / np.maximum(own_size - 1, 1)
    mean_other = sums / np.where(sizes > 0, sizes, np.nan)
    mean_other[rows, own] = np.inf
    mean_other = np.where(np.isnan(mean_other), np.inf, mean_other)
    b = mean_other.min(axis=1)
    s = (b - a) / np.maximum(a, b)
    return np.where(own_size > 1, np.nan_to_num(s), 0.0)


def _pca_2d(Xs: np.ndarray, scale: float) -> np.ndarray:
    Xs = Xs.astype(np.float64) * scale
    centered = Xs - Xs.mean(axis=0)
    # The two leading eigenvectors of the covariance (784 x 784): the same directions as an SVD of the
    # centered sample, up to sign, fixed here as scikit-learn's svd_flip does (largest loading positive).
    _, vectors = np.linalg.eigh(centered.T @ centered)
    top = vectors[:, ::-1][:, :2]
    top *= np.sign(top[np.abs(top).argmax(axis=0), range(2)])
    return centered @ top


def start_pca_2d(Xs: np.ndarray, scale: float = 1.0) -> Callable[[], np.ndarray]:
    """Start projecting the sample [s, p] times `scale` on its first two principal components, in one
    task on the cluster (the rows travel as they are: uint8 pixels are 8x smaller than float64), and
    return a function that waits for the projection [s, 2].

    A 784 x 784 eigenproblem in one task instead of dask-ml's PCA on a one-chunk array, which took 3.5 s
    for a 10,000-row sample (2 cores).
    """
    return _start_then_wait([delayed(_pca_2d)(np.asarray(Xs), scale)], lambda results: np.asarray(results[0]))
