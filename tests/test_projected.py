"""The search through the centers' projection (job.engine.projected) finds the nearest center by exact
distance, on real MNIST rows and on data made to trip it (ties, duplicates, floats, few centers), and
measures only a few distances a row."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from job.engine import bounds, kernels, projected


def _rows(store, n):
    return np.asarray(zarr.open_group(str(store), mode="r")["train/images"][:n]).reshape(n, -1)


def _brute(X, C):
    """float64 squared distances [m, k] by differences."""
    Xf = np.asarray(X, dtype=np.float64)
    return ((Xf[:, None, :] - np.asarray(C, dtype=np.float64)[None, :, :]) ** 2).sum(axis=2)


def _assert_nearest(X, C, labels, dist):
    D = _brute(X, C)
    rows = np.arange(len(X))
    assert np.allclose(dist, D.min(axis=1), rtol=1e-12, atol=1e-9)
    assert np.allclose(D[rows, labels], D.min(axis=1), rtol=1e-12, atol=1e-9)  # a nearest center
    second = np.sort(D, axis=1)[:, 1] if D.shape[1] > 1 else np.inf
    clear = second > D.min(axis=1) * (1 + 1e-9)  # no tie: the nearest one
    assert np.array_equal(labels[clear], D.argmin(axis=1)[clear])


@pytest.mark.parametrize("k", [128, 256, 1024])
@pytest.mark.slow
def test_the_nearest_center_of_every_mnist_row_for_a_few_distances(mnist_store, k):
    X = _rows(mnist_store, 3_000 if k < 1024 else 1_500)
    train = _rows(mnist_store, 20_000)
    sums, counts, _ = kernels.lloyd_partial(
        train, train[np.random.default_rng(1).choice(20_000, k, replace=False)]
    )
    C = sums[counts > 0] / counts[counts > 0, None]  # centers as a Lloyd step leaves them: means of rows
    labels, dist = projected.assign(X, C)
    _assert_nearest(X, C, labels, dist)
    assert np.array_equal(labels, kernels.assign(X, C)[0])
    measured = sum(block[-1] for block in projected.nearest_blocks(X, C, projected.project(C)))
    assert measured / len(X) < 8  # of k: the bound rules out nearly every center


def test_ties_duplicates_and_floats():
    rng = np.random.default_rng(0)
    X = rng.standard_t(2, size=(2_000, 50)) * rng.uniform(0.1, 100, size=50)  # heavy tails, mixed scales
    C = X[rng.choice(len(X), 150, replace=False)].copy()
    C[10] = C[20]  # a duplicated center: the lower index wins, as np.argmin
    X[:5] = C[20]  # rows exactly on it
    for data in (X, X.astype(np.float32)):
        labels, dist = projected.assign(data, C)
        _assert_nearest(data, C, labels, dist)
        assert (labels[:5] == 10).all() and np.allclose(dist[:5], 0, atol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_fewer_centers_than_directions(k):
    """The subspace never has k or more directions; with one center every row is its."""
    rng = np.random.default_rng(k)
    X = rng.integers(0, 256, size=(500, 784), dtype=np.uint8)
    C = rng.uniform(0, 255, size=(k, 784))
    labels, dist = projected.assign(X, C)
    _assert_nearest(X, C, labels, dist)


def test_group_lower_bounds_hold(mnist_store):
    """Per group, the least distance to its other centers is at least the bound given."""
    X = _rows(mnist_store, 2_000)
    rng = np.random.default_rng(3)
    C = X[rng.choice(len(X), 256, replace=False)].astype(np.float64)
    groups = bounds.make_groups(C, 8, seed=0)
    ordered = C[groups.order]
    moved = ordered + rng.normal(0, 20, size=ordered.shape)
    D = np.sqrt(_brute(X, moved))
    for projection in (projected.project(moved), projected.project(moved, dims=8)):
        ((_, _, best, best_d, lower, _), *rest) = projected.nearest_blocks(
            X, moved, projection, groups.bounds
        )
        best = np.concatenate([best, *(r[2] for r in rest)])
        best_d = np.concatenate([best_d, *(r[3] for r in rest)])
        lower = np.concatenate([lower, *(r[4] for r in rest)])
        assert np.allclose(best_d, D.min(axis=1)) and np.allclose(D[np.arange(len(X)), best], D.min(axis=1))
        D_others = D.copy()
        D_others[np.arange(len(X)), best] = np.inf
        for g in range(groups.count):
            others = D_others[:, groups.bounds[g] : groups.bounds[g + 1]]
            assert (lower[:, g] <= others.min(axis=1) * (1 + 1e-6)).all(), g
