"""The evaluation's single pass (job.evaluation.scoring) against scikit-learn on the same labels, and its
parts:
example candidates, row gathering, Hamerly's Lloyd, greedy k-means++."""

import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn import metrics

from job.dataset import flat_pixels, open_dataset
from job.engine import kernels
from job.engine.blockwise import take_rows
from job.evaluation import examples, scoring
from job.evaluation import metrics as evaluate
from job.evaluation.evaluate import evaluate_at
from job.kmeans.estimator import FusedKMeans
from job.kmeans.in_memory import EXACT_MAX_FEATURES, _squared_distances, greedy_kmeans_plusplus, hamerly


def test_one_pass_gives_scikit_learns_metrics_for_the_same_labels(client, mnist_store):
    data = open_dataset(mnist_store, "test")
    X = flat_pixels(data.images).persist()
    model = FusedKMeans(n_clusters=10, random_state=3, sample_size=None).fit(X)
    centers = np.asarray(model.cluster_centers_, dtype=np.float64)
    idx = np.sort(np.random.default_rng(0).choice(data.n, 2_000, replace=False))
    scored = evaluate_at(X, data.labels, centers, model.counts_, model.cluster_sums_, idx, 4, seed=1)
    labels, ev, closest, random, sample = (
        scored.labels,
        scored.evaluation,
        scored.closest,
        scored.random,
        scored.sample,
    )
    Xn, truth, ours = X.compute().astype(np.float64), data.labels.compute(), labels.compute()
    np.testing.assert_array_equal(ours, kernels.labels_of(X.compute(), centers))
    assert ev.ari == pytest.approx(metrics.adjusted_rand_score(truth, ours), rel=1e-9)
    assert ev.calinski_harabasz == pytest.approx(metrics.calinski_harabasz_score(Xn, ours), rel=1e-9)
    assert ev.davies_bouldin == pytest.approx(metrics.davies_bouldin_score(Xn, ours), rel=1e-9)
    silhouette = evaluate.start_silhouette(sample.rows, sample.labels, 10)()  # as the job starts it
    assert silhouette == pytest.approx(metrics.silhouette_score(Xn[idx], ours[idx]), abs=1e-5)
    np.testing.assert_array_equal(sample.rows, X.compute()[idx])
    np.testing.assert_array_equal(sample.labels, ours[idx])
    np.testing.assert_array_equal(sample.truth, truth[idx])
    # Examples: the 4 rows of each cluster nearest its center, every one in its cluster.
    _, dist = kernels.assign(X.compute(), centers)
    for c in range(10):
        members = np.flatnonzero(ours == c)
        expected = members[np.lexsort((members, dist[members]))][:4]
        np.testing.assert_array_equal(closest[c], expected)
        assert set(random[c]) <= set(members) and len(set(random[c])) == 4


def test_example_candidates_are_the_m_best_per_cluster_with_ties_by_index():
    def reference(scores, index, labels, k, m):
        out = np.full((k, m, 2), [np.inf, -1.0])
        order = np.lexsort((index, scores))
        for c in range(k):
            chosen = order[labels[order] == c][:m]
            out[c, : len(chosen), 0], out[c, : len(chosen), 1] = scores[chosen], index[chosen]
        return out

    for trial in range(30):
        rng = np.random.default_rng(trial)
        n, k, m = int(rng.integers(1, 300)), int(rng.integers(1, 8)), int(rng.integers(1, 6))
        scores = rng.integers(0, 5, n).astype(float)  # many ties
        index = rng.permutation(n) + 1000
        labels = rng.integers(0, k, n).astype(np.int32)
        np.testing.assert_array_equal(
            examples._best(scores, index, labels, k, m), reference(scores, index, labels, k, m)
        )


def test_take_rows_returns_the_rows_asked_for_in_their_order():
    X = np.arange(1000 * 3).reshape(1000, 3)
    dX = da.from_array(X, chunks=(130, 3))
    index = np.array([999, 0, 131, 130, 129, 500, 0])
    np.testing.assert_array_equal(take_rows(dX, index), X[index])
    assert take_rows(dX, []).shape == (0, 3)


def test_hamerly_reaches_plain_lloyds_centers(mnist_store):
    X = flat_pixels(open_dataset(mnist_store, "test").images).compute()
    init = X[np.random.default_rng(2).choice(len(X), 10, replace=False)].astype(np.float64)
    tol = 1e-4 * X.astype(np.float64).var(axis=0).mean()
    centers, n_iter = hamerly(X, init, tol, 300)
    plain = init.copy()
    for plain_iter in range(1, 301):  # noqa: B007 (read after the loop: the iterations plain Lloyd took)
        sums, counts, _ = kernels.lloyd_partial(X, plain)
        new = sums / counts[:, None]
        shift = ((new - plain) ** 2).sum()
        plain = new
        if shift <= tol:
            break
    assert n_iter == plain_iter > 5
    np.testing.assert_allclose(centers, plain, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("k", [10, 64, 256])
def test_greedy_kmeans_plusplus_on_uint8_pixels_picks_the_float64_products_centers(mnist_store, k):
    """The integer distances of uint8 rows are exactly the float64 product's, so the same rows are
    chosen, to the bit."""
    X = flat_pixels(open_dataset(mnist_store, "test").images).compute()[:4_000]
    assert X.dtype == np.uint8
    on_bytes = greedy_kmeans_plusplus(X, k, np.random.default_rng(5))
    on_floats = greedy_kmeans_plusplus(X.astype(np.float64), k, np.random.default_rng(5))
    np.testing.assert_array_equal(on_bytes, on_floats)


def test_squared_distances_of_wide_uint8_rows_do_not_overflow():
    """Past EXACT_MAX_FEATURES columns an int32 sum of 255^2 terms would wrap: such rows take the
    float64 product."""
    for p in (EXACT_MAX_FEATURES, EXACT_MAX_FEATURES + 1):
        X = np.zeros((3, p), np.uint8)
        X[1] = 255
        X[2, : p // 2] = 255
        exact = np.array([[0, p, p // 2], [p, 0, p - p // 2]], dtype=np.float64) * 255**2
        np.testing.assert_array_equal(_squared_distances(X)(np.array([0, 1])), exact)


def test_the_evaluation_pass_at_a_thousand_centers_warns_of_no_large_graph(client):
    """At k=1024 the centers and means (float64) that the pass carries in its graph are over
    distributed's 10 MB "Sending large graph" warning, which every such run printed: carried on purpose
    (a lost chunk is recomputed from them), they are allowed for. The pass still uses them."""
    rng = np.random.default_rng(0)
    k, p = 1100, 784
    X = da.from_array(rng.integers(0, 256, (400, p)).astype(np.uint8), chunks=100)
    truth = da.from_array(rng.integers(0, 10, 400).astype(np.uint8), chunks=100)
    centers, means = rng.random((k, p)) * 255, rng.random((k, p)) * 255
    assert centers.nbytes + means.nbytes > 10 * 2**20
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels, _ = scoring.score_pass(
            X, truth, centers, means, examples_per_cluster=2, seed=0, sample_index=np.arange(10)
        )
    assert not [w for w in caught if "large graph" in str(w.message)]
    assert np.array_equal(labels.compute(), kernels.labels_of(X.compute(), centers))
