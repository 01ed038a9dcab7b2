"""Metrics from the contingency table equal scikit-learn's; the silhouette on the workers too."""

import dask.array as da
import numpy as np
import pytest
from sklearn import metrics

from job.dataset import open_dataset, to_features
from job.evaluation import metrics as evaluate
from job.kmeans.estimator import FusedKMeans


@pytest.mark.parametrize("k", [3, 10, 14])
def test_label_metrics_equal_sklearn(k):
    rng = np.random.default_rng(k)
    truth = rng.integers(0, 10, 4000)
    clusters = np.where(rng.random(4000) < 0.6, truth % k, rng.integers(0, k, 4000))
    table = evaluate.contingency(
        da.from_array(clusters, chunks=700), da.from_array(truth, chunks=700), k
    ).compute()
    np.testing.assert_array_equal(table, metrics.cluster.contingency_matrix(clusters, truth))
    m = evaluate.label_metrics(table)
    assert m["ari"] == pytest.approx(metrics.adjusted_rand_score(truth, clusters), abs=1e-12)
    assert m["nmi"] == pytest.approx(metrics.normalized_mutual_info_score(truth, clusters), abs=1e-12)
    assert m["homogeneity"] == pytest.approx(metrics.homogeneity_score(truth, clusters), abs=1e-12)
    assert m["completeness"] == pytest.approx(metrics.completeness_score(truth, clusters), abs=1e-12)
    assert m["v_measure"] == pytest.approx(metrics.v_measure_score(truth, clusters), abs=1e-12)
    assert sum(m["cluster_sizes"]) == 4000


def test_mappings_and_accuracies():
    table = np.array([[90, 10, 0], [80, 5, 15], [0, 2, 98]])
    majority = evaluate.majority_mapping(table)
    assert majority.digits == [0, 0, 2]
    assert majority.accuracy == pytest.approx((90 + 80 + 98) / table.sum())
    hungarian = evaluate.hungarian_mapping(table)
    assert hungarian.digits == [0, 1, 2]  # 90 + 5 + 98 beats 10 + 80 + 98
    assert hungarian.accuracy == pytest.approx((90 + 5 + 98) / table.sum())
    wide = evaluate.hungarian_mapping(np.array([[5, 1], [4, 0], [0, 7]]))  # k > classes: one cluster unmapped
    assert sorted(wide.digits) == [-1, 0, 1]
    assert evaluate.mapped_accuracy(table, [0, 0, 2]) == pytest.approx(majority.accuracy)


@pytest.mark.parametrize("seed", range(6))
def test_hungarian_mapping_is_the_best_one_to_one_mapping(seed):
    """Against every one-to-one mapping, enumerated: nothing may beat it (a suboptimal mapping fails)."""
    import itertools

    rng = np.random.default_rng(seed)
    k, classes = [(4, 4), (5, 4), (3, 5), (6, 6), (5, 5), (6, 4)][seed]
    table = rng.integers(0, 50, (k, classes))
    if k >= classes:  # every class gets one cluster: choose which cluster, in order of the classes
        best = max(
            sum(table[r, j] for j, r in enumerate(rows)) for rows in itertools.permutations(range(k), classes)
        )
    else:  # every cluster gets one class
        best = max(
            sum(table[i, c] for i, c in enumerate(cols)) for cols in itertools.permutations(range(classes), k)
        )
    mapping = evaluate.hungarian_mapping(table)
    hits = sum(table[c, d] for c, d in enumerate(mapping.digits) if d >= 0)
    assert hits == best
    assert mapping.accuracy == pytest.approx(best / table.sum())
    used = [d for d in mapping.digits if d >= 0]
    assert len(used) == len(set(used)) == min(k, classes)  # one-to-one


def test_sample_indices_are_seeded_sorted_and_unique():
    a = evaluate.sample_indices(70_000, 1000, seed=1)
    assert np.array_equal(a, evaluate.sample_indices(70_000, 1000, seed=1))
    assert not np.array_equal(a, evaluate.sample_indices(70_000, 1000, seed=2))
    assert np.all(np.diff(a) > 0) and len(a) == 1000
    assert np.array_equal(evaluate.sample_indices(10, 50, seed=0), np.arange(10))


def test_silhouette_on_the_cluster_matches_sklearn(client, mnist_store):
    X = to_features(open_dataset(mnist_store, "test").images).persist()
    model = FusedKMeans(n_clusters=10, random_state=0).fit(X)
    labels = model.labels_.persist()
    ours = evaluate.silhouette(X, labels, 10, size=3000, seed=4)
    idx = evaluate.sample_indices(X.shape[0], 3000, seed=4)
    reference = metrics.silhouette_score(X[idx].compute(), labels[idx].compute())
    assert ours == pytest.approx(reference, abs=0.005)
    assert abs(ours - reference) < 1e-5  # the same computation, its distance product in float32


def test_silhouette_of_a_single_point_cluster_is_zero():
    """A point alone in its cluster scores 0 (as scikit-learn), whichever blocks of the symmetric
    distance matrix hold it."""
    X = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [0.2, 0.1], [0.0, 0.3]])
    labels = np.array([0, 0, 1, 0, 0])
    reference = metrics.silhouette_samples(X, labels)
    assert reference[2] == 0.0
    for block_rows in (1, 2, 5):
        ours = evaluate.sample_silhouette(X, labels, 2, block_rows=block_rows)
        assert ours == pytest.approx(reference.mean(), abs=1e-6)
