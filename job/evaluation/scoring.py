"""Everything the evaluation needs from X, in one pass over it at the final centers.

One task per chunk of X (fused with the chunk's read when X is streamed) computes the nearest center of
every row (kept on the workers, 4 bytes a row, for the labels store), and per chunk only small things:
the contingency table against the true digits, each cluster's sum of distances to its mean and the total
of squared norms (with the fit's per-cluster counts and sums: Davies-Bouldin and Calinski-Harabasz), the
example candidates per cluster (the closest to the center and seeded random ones, job.evaluation.examples),
and the
rows of the silhouette's sample with their labels. Those are combined in a tree on the workers.

The cluster means come from the fit's last pass at the same centers (FusedKMeans.cluster_sums_): the
same kernel on the same blocks gives the same labelling, so one pass is enough.

One pass rather than one per result: the same work as five passes (an assignment, a contingency over its
labels, two float64 internal-criteria passes, a gather of the silhouette's rows, a tree over per-chunk
example candidates) took 79 s on 8.1M persisted images on 2 cores, 54 s of it the float64 criteria. The
per-row work is compiled (job.engine.kernels), reads the uint8 pixels as they are, and shares the
distance product with the labels.
May use: job.engine (kernels, blockwise), job.evaluation.examples, data_prep.digits, scipy.
"""

from __future__ import annotations

from dataclasses import dataclass

import dask
import dask.array as da
import numpy as np
from dask.utils import parse_bytes
from scipy.spatial.distance import cdist

from data_prep.digits import N_CLASSES
from job.engine import kernels
from job.engine.blockwise import boxed_pairs, reduce_boxes
from job.evaluation import examples


@dataclass(frozen=True)
class ScoreTotals:
    """The small results of the evaluation's pass, summed (or merged) over all chunks."""

    contingency: np.ndarray  # int64 [k, n_classes]
    spread: np.ndarray  # float64 [k]: per cluster, the sum of its rows' distances to its mean
    sq_total: float  # sum of the squared norms of all rows
    closest: np.ndarray  # [k, m, 2] (squared distance, row index), job.evaluation.examples
    random: np.ndarray  # [k, m, 2] (random key, row index)
    sample_rows: np.ndarray  # X's dtype [s, p]: the silhouette's rows, in index order
    sample_labels: np.ndarray  # int32 [s]
    sample_truth: np.ndarray  # the true digits of those rows [s]


def _pass_chunk(X, truth, centers, means, n_classes, m, seed, sample_index, known, offset):
    k = len(centers)
    if known:  # truth is label * n_classes + digit: the rows' clusters are known (score_pass)
        labels, dist, spread, sq = kernels.with_known_labels(X, truth // n_classes, centers, means)
        truth = truth % n_classes
    else:
        labels, dist, spread, sq = kernels.assign_with_means(X, centers, means)
    flat = labels.astype(np.int64) * n_classes + truth.astype(np.int64)
    table = np.bincount(flat, minlength=k * n_classes).reshape(k, n_classes)
    closest, random = examples.chunk_candidates(labels, dist, offset, k, m, seed)
    lo, hi = np.searchsorted(sample_index, [offset, offset + len(X)])
    picked = sample_index[lo:hi] - offset
    return labels, ScoreTotals(table, spread, sq, closest, random, X[picked], labels[picked], truth[picked])


def _merge(*parts) -> ScoreTotals:
    # A leaf is a chunk's (labels, ScoreTotals); a node's result is a ScoreTotals.
    passes = [p[1] if isinstance(p, tuple) else p for p in parts]
    closest, random = examples.merge_candidates(*((p.closest, p.random) for p in passes))
    return ScoreTotals(
        sum(p.contingency for p in passes),
        sum(p.spread for p in passes),
        sum(p.sq_total for p in passes),
        closest,
        random,
        *(
            np.concatenate([getattr(p, name) for p in passes])
            for name in ("sample_rows", "sample_labels", "sample_truth")
        ),
    )


def _labels_of(box):
    return box[0][0]


def score_pass(
    X: da.Array,
    truth: da.Array,
    centers: np.ndarray,
    means: np.ndarray,
    *,
    examples_per_cluster: int,
    seed: int,
    sample_index: np.ndarray,
    n_classes: int = N_CLASSES,
    labels: da.Array | None = None,
) -> tuple[da.Array, ScoreTotals]:
    """The evaluation's one pass over X [n, p] at `centers` [k, p] (X's units); `means` [k, p] are the
    means of the clusters that labelling gives (the fit's last pass computed them: FusedKMeans's
    cluster_sums_ / counts_). Returns the labels (int32 [n], persisted on the workers) and the combined
    small results. truth: the true digits, uint8 [n]; sample_index: the sorted global indices of the
    silhouette's rows. labels: the rows' clusters when a pass at these centers already computed them
    (kept on the workers): then no distance product is made, and the labels returned are those."""
    if labels is not None:  # one array per chunk for boxed_pairs: each row's cluster and digit in one int64
        truth = labels.astype(np.int64) * n_classes + truth.rechunk((labels.chunks[0],)).astype(np.int64)
    # The centers and means travel inside the graph, once, so that a chunk lost with its worker is
    # recomputed from them: at k=1024 that is 12.3 MiB, past distributed's 10 MB warning ("Sending large
    # graph ... may cause some slowdown"), printed on every such run; its advice, futures, would drop the
    # lineage. The threshold allows for them.
    carried = int(np.asarray(centers).nbytes + np.asarray(means).nbytes + np.asarray(sample_index).nbytes)
    threshold = parse_bytes(dask.config.get("distributed.admin.large-graph-warning-threshold", "10MB"))
    with dask.config.set({"distributed.admin.large-graph-warning-threshold": threshold + carried}):
        boxes = boxed_pairs(
            X,
            truth,
            _pass_chunk,
            centers,  # as they are: the kernels convert them (job.engine.kernels)
            means,
            n_classes,
            examples_per_cluster,
            seed,
            np.asarray(sample_index, dtype=np.int64),
            labels is not None,
            with_offset=True,
        ).persist()
    labels = boxes.map_blocks(
        _labels_of,
        chunks=(X.chunks[0],),
        dtype=np.int32,
        meta=np.empty((0,), dtype=np.int32),
        name="labels-" + boxes.name,
    ).persist()
    totals = _merge(reduce_boxes(boxes, _merge))  # _merge again: with one chunk the tree has no node
    return labels, totals


def calinski_harabasz(counts: np.ndarray, sums: np.ndarray, sq_total: float) -> tuple[float, np.ndarray]:
    """scikit-learn's Calinski-Harabasz index from per-cluster counts and sums; also the cluster means
    (zero rows for empty clusters, which are ignored as scikit-learn does)."""
    n, present = counts.sum(), counts > 0
    means = np.zeros_like(sums)
    means[present] = sums[present] / counts[present][:, None]
    kk = int(present.sum())
    overall = sums.sum(axis=0) / n
    between = float((counts[present] * ((means[present] - overall) ** 2).sum(axis=1)).sum())
    within = float(sq_total - (counts[present] * (means[present] ** 2).sum(axis=1)).sum())
    if kk < 2:
        return float("nan"), means
    if (
        within <= 1e-12 * sq_total
    ):  # every point on its cluster's mean (up to rounding): scikit-learn says 1.0
        return 1.0, means
    return between * (n - kk) / (within * (kk - 1)), means


def davies_bouldin(counts: np.ndarray, means: np.ndarray, distance_sums: np.ndarray) -> float:
    """scikit-learn's Davies-Bouldin index from per-cluster counts, means and distance sums."""
    present = counts > 0
    kk = int(present.sum())
    spread = distance_sums[present] / counts[present]
    m = means[present]
    # [k, k] by scipy's cdist (exact differences, as sklearn's pairwise distances of the centroids up to
    # rounding): the broadcast difference it replaces was [k, k, p] float64, 6.6 GB in the client at k=1024.
    centroid_dist = cdist(m, m)
    if kk < 2:
        return float("nan")
    if np.allclose(spread, 0) or np.allclose(centroid_dist, 0):
        return 0.0
    # as sklearn.metrics.davies_bouldin_score: coinciding centroids (the diagonal too) count as far
    centroid_dist[centroid_dist == 0] = np.inf
    return float(np.max((spread[:, None] + spread[None, :]) / centroid_dist, axis=1).mean())
