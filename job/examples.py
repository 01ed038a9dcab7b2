"""Pick example images per cluster on the cluster: the ones closest to each center and seeded random ones.

Each chunk proposes its best `m` candidates per cluster; candidates are merged pairwise in a tree on the
workers, so only k * m indices per kind reach the client, then just those images are read.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
from dask import delayed

from .model import tree_reduce
from .rng import hash64

EXAMPLES_STREAM = 1_000_003  # the rng stream of the random examples, apart from k-means||'s rounds


def random_keys(indices: np.ndarray, seed: int) -> np.ndarray:
    """A seeded pseudo-random uint64 per global row index: independent of chunking."""
    return hash64(indices, seed, EXAMPLES_STREAM)


def _best(scores: np.ndarray, index: np.ndarray, labels: np.ndarray, k: int, m: int) -> np.ndarray:
    """[k, m, 2] float64 of (score, index) for the m lowest scores per cluster; padded with (inf, -1)."""
    out = np.full((k, m, 2), [np.inf, -1.0])
    order = np.lexsort((index, scores))  # ties broken by index, so the result never depends on chunking
    for c in range(k):
        chosen = order[labels[order] == c][:m]
        out[c, : len(chosen), 0] = scores[chosen]
        out[c, : len(chosen), 1] = index[chosen]
    return out


def _chunk_candidates(labels, dist, offset, k, m, seed):
    index = offset + np.arange(len(labels))
    rand = random_keys(index, seed).astype(np.float64)
    return _best(dist, index, labels, k, m), _best(rand, index, labels, k, m)


def _merge(*parts):
    closest = np.concatenate([p[0] for p in parts], axis=1)
    random = np.concatenate([p[1] for p in parts], axis=1)
    m = parts[0][0].shape[1]

    def keep(cand):
        out = np.empty((cand.shape[0], m, 2))
        for c in range(cand.shape[0]):
            order = np.lexsort((cand[c, :, 1], cand[c, :, 0]))[:m]
            out[c] = cand[c, order]
        return out

    return keep(closest), keep(random)


def example_indices(
    labels: da.Array, distances: da.Array, k: int, m: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(closest, random): int64 [k, m] global row indices per cluster, -1 where a cluster has fewer rows.

    Works from the labels and squared distances the evaluation already holds (job.kernels.assign), so
    picking examples reads nothing of X.
    """
    offsets = np.concatenate([[0], np.cumsum(labels.chunks[0])[:-1]])
    parts = [
        delayed(_chunk_candidates)(lab, dist, int(offset), k, m, seed)
        for lab, dist, offset in zip(labels.to_delayed().ravel(), distances.to_delayed().ravel(), offsets)
    ]
    (closest, random), = dask.compute(tree_reduce(parts, _merge))
    return closest[:, :, 1].astype(np.int64), random[:, :, 1].astype(np.int64)


def gather_images(images: da.Array, indices: np.ndarray) -> np.ndarray:
    """The images at `indices` ([k, m], -1 = none) as uint8 [k, m, h, w], zeros where missing."""
    flat = indices.ravel()
    wanted = np.unique(flat[flat >= 0])
    out = np.zeros((*indices.shape, *images.shape[1:]), dtype=images.dtype)
    if len(wanted) == 0:
        return out
    fetched = images[wanted].compute()
    position = {int(i): p for p, i in enumerate(wanted)}
    for (c, j), i in np.ndenumerate(indices):
        if i >= 0:
            out[c, j] = fetched[position[int(i)]]
    return out
