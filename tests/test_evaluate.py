"""The evaluation's pass over X (job.evaluation.evaluate.evaluate_at, as the job runs it) and the metrics
from its contingency table equal scikit-learn's; the silhouette on the workers too."""

import dask.array as da
import numpy as np
import pytest
from sklearn import metrics

from job.dataset import open_dataset, to_features
from job.evaluation import metrics as evaluate
from job.evaluation.evaluate import evaluate_at
from job.kmeans.estimator import FusedKMeans


def _evaluated(X: np.ndarray, clusters: np.ndarray, truth: np.ndarray, k: int, chunk: int):
    """The job's evaluation pass of the clustering `clusters` of X (its centers the clusters' means, the
    labels given as a fit that kept them gives them), in chunks of `chunk` rows: the Evaluation."""
    counts = np.bincount(clusters, minlength=k)
    sums = np.zeros((k, X.shape[1]))
    np.add.at(sums, clusters, X)
    means = sums / np.maximum(counts, 1)[:, None]
    as_dask = lambda a: da.from_array(a, chunks=(chunk, *a.shape[1:]))  # noqa: E731
    return evaluate_at(
        as_dask(X), as_dask(truth), means, counts, sums, np.arange(0), 1, 0, labels=as_dask(clusters)
    ).evaluation


@pytest.mark.parametrize("k", [3, 10, 14])
def test_label_metrics_equal_sklearn(client, k):
    rng = np.random.default_rng(k)
    truth = rng.integers(0, 10, 4000)
    clusters = np.where(rng.random(4000) < 0.6, truth % k, rng.integers(0, k, 4000))
    X = rng.random((4000, 3))
    table = np.array(_evaluated(X, clusters, truth, k, chunk=700).contingency)
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
    idx = evaluate.sample_indices(X.shape[0], 3000, seed=4)
    rows, row_labels = X[idx].compute(), labels[idx].compute()
    ours = evaluate.start_silhouette(rows, row_labels, 10)()
    reference = metrics.silhouette_score(rows, row_labels)
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
        ours = evaluate.start_silhouette(X, labels, 2, block_rows=block_rows)()
        assert ours == pytest.approx(reference.mean(), abs=1e-6)


def test_silhouette_with_more_clusters_than_a_block_has_rows_matches_sklearn():
    """Many clusters, most absent from any one block, some from every block (k=128, labels < 120):
    each block's distances summed per cluster land in their own cluster's column."""
    rng = np.random.default_rng(0)
    X = rng.random((300, 5))
    X[:, 0] += np.arange(300) % 3  # three loose groups, so that the value is far from 0
    labels = rng.integers(0, 120, 300)
    labels[:150] = labels[:150] % 7  # a few large clusters beside many small ones
    reference = metrics.silhouette_score(X, labels)
    for block_rows in (7, 64, 300):
        ours = evaluate.start_silhouette(X, labels, 128, block_rows=block_rows)()
        assert ours == pytest.approx(reference, abs=1e-6)


def test_calinski_harabasz_of_a_perfect_clustering_is_sklearns_one(client):
    X = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0], [3.0, 0.0]]), 50, axis=0)
    labels = np.repeat([0, 1, 2], 50)
    ours = _evaluated(X, labels, np.zeros(150, dtype=np.int64), 3, chunk=40)
    assert ours.calinski_harabasz == metrics.calinski_harabasz_score(X, labels) == 1.0


def test_internal_criteria_equal_scikit_learns(client):
    rng = np.random.default_rng(0)
    X = rng.random((6000, 30)).astype(np.float32)
    X[:2000] += 1.5
    labels = rng.integers(0, 5, 6000)
    labels[:2000] = 5
    ours = _evaluated(X, labels, np.zeros(6000, dtype=np.int64), 7, chunk=1100)  # cluster 6 empty
    assert ours.calinski_harabasz == pytest.approx(metrics.calinski_harabasz_score(X, labels), rel=1e-9)
    assert ours.davies_bouldin == pytest.approx(metrics.davies_bouldin_score(X, labels), rel=1e-6)
