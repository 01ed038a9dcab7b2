"""Yinyang bounds (job.engine.bounds, job.kmeans.bounded) give plain Lloyd's assignments, sums and
inertia: on real MNIST rows, per chunk and on a real two-worker cluster."""

from __future__ import annotations

import dask.array as da
import numpy as np
import zarr

from job.engine import bounds, kernels
from job.engine.map_reduce import plan_tasks
from job.engine.persist import persist_balanced
from job.kmeans.bounded import bounded_lloyd


def _rows(store, n):
    return np.asarray(zarr.open_group(str(store), mode="r")["train/images"][:n]).reshape(n, -1)


def _plain_lloyd(X, centers, iterations):
    for _ in range(iterations):
        sums, counts, _ = kernels.lloyd_partial(X, centers)
        centers = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centers)
    return centers


def test_each_bounded_step_assigns_as_plain_lloyd_does(mnist_store):
    X = _rows(mnist_store, 6_000)
    k = 64
    C = X[np.random.default_rng(0).choice(len(X), k, replace=False)].astype(np.float64)
    groups = bounds.make_groups(C, bounds.group_count(k), seed=0)
    state, (sums, counts, inertia, sq_total) = bounds.init_chunk(X, C, groups)
    assert np.array_equal(state[0], kernels.assign(X, C)[0])
    assert np.isclose(sq_total, float((X.astype(np.float64) ** 2).sum()))
    skipped = []
    for it in range(12):
        new = sums / np.maximum(counts, 1)[:, None]
        moves = np.sqrt(((new - C) ** 2).sum(axis=1))
        C = new
        state, (d_sums, d_counts, moved, computed, step_inertia) = bounds.step_chunk(X, state, C, moves, groups,
                                                                                  exact=it == 11)
        sums, counts = sums + d_sums, counts + d_counts
        plain_sums, plain_counts, plain_inertia = kernels.lloyd_partial(X, C)
        assert np.array_equal(state[0], kernels.assign(X, C)[0]), it
        assert np.array_equal(counts, plain_counts) and np.array_equal(sums, plain_sums)  # uint8: exact sums
        skipped.append(1 - computed / (len(X) * k))
    assert np.isclose(step_inertia, plain_inertia, rtol=1e-6)
    assert skipped[-1] > 0.3  # the bounds do skip distances once the centers settle


def test_bounded_lloyd_on_a_cluster_matches_plain_lloyd(client, mnist_store):
    X_np = _rows(mnist_store, 8_000)
    X = persist_balanced(client, da.from_array(X_np, chunks=(1_000, 784)))
    k = 40
    start = X_np[:: len(X_np) // k][:k].astype(np.float64)
    fitted = bounded_lloyd(X, plan_tasks(X), start, tol=0.0, max_iter=10)
    expected = _plain_lloyd(X_np, start, 10)
    assert fitted.n_iter == 10
    assert np.allclose(fitted.centers, expected)
    sums, counts, inertia = kernels.lloyd_partial(X_np, fitted.centers)
    assert np.array_equal(fitted.counts, counts) and np.allclose(fitted.sums, sums)
    assert np.isclose(fitted.inertia, inertia, rtol=1e-6)
    assert np.array_equal(fitted.labels.compute(), kernels.assign(X_np, fitted.centers)[0])
