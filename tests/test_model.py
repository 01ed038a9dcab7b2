"""The fit on a real multi-process cluster: correct inertia, agreement with scikit-learn, determinism."""

import dask.array as da
import numpy as np
import pytest
from dask_ml.cluster import KMeans as DaskMLKMeans
from distributed import Client, LocalCluster
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from job.dataset import flat_pixels, open_dataset, to_features
from job.kmeans.estimator import FusedKMeans
from job.kmeans.passes import lloyd_step


@pytest.fixture(scope="module")
def mnist_sample(mnist_store):
    """The first 20,000 training images as float32 in [0, 1] (lazy, and in memory)."""
    X = to_features(open_dataset(mnist_store, "train").images)[:20_000]
    return X, X.compute()


def _init_centers(X_np, k=10, seed=3):
    rng = np.random.default_rng(seed)
    return X_np[rng.choice(len(X_np), k, replace=False)].astype(np.float64)


def _sklearn_inertia(X_np, centers):
    km = KMeans(n_clusters=len(centers), init=centers, n_init=1, max_iter=1).fit(X_np[: len(centers) * 2])
    km.cluster_centers_ = centers.astype(np.float64)
    return -km.score(X_np.astype(np.float64))


def test_our_inertia_is_sklearns_and_dask_mls_is_not(client, mnist_sample):
    X, X_np = mnist_sample
    model = DaskMLKMeans(n_clusters=10, random_state=0, max_iter=3).fit(X)
    centers = np.asarray(model.cluster_centers_, dtype=np.float64)
    _, counts, ours = lloyd_step(X, centers)
    reference = _sklearn_inertia(X_np, centers)
    assert ours == pytest.approx(reference, rel=1e-5)
    assert counts.sum() == len(X_np)
    # dask-ml sums unsquared distances when it stops on max_iter: several times too small.
    assert model.inertia_ < reference / 3


def test_fused_fit_matches_sklearn_from_the_same_centers(client, mnist_sample):
    X, X_np = mnist_sample
    init = _init_centers(X_np)
    ours = FusedKMeans(n_clusters=10, init=init, max_iter=300, tol=1e-4).fit(X.persist())
    ref = KMeans(n_clusters=10, init=init, n_init=1, max_iter=300, tol=1e-4, algorithm="lloyd").fit(X_np)
    labels = ours.labels_.compute()
    assert adjusted_rand_score(ref.labels_, labels) >= 0.999
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-4)
    assert abs(ours.n_iter_ - ref.n_iter_) <= 2
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, atol=1e-3)
    np.testing.assert_array_equal(ours.predict(X).compute(), labels)
    assert ours.transform(X).shape == (len(X_np), 10)


def test_same_seed_same_labels(client, mnist_sample):
    X, _ = mnist_sample
    X = X.persist()
    first = FusedKMeans(n_clusters=10, random_state=7).fit(X)
    second = FusedKMeans(n_clusters=10, random_state=7).fit(X)
    np.testing.assert_array_equal(first.labels_.compute(), second.labels_.compute())
    assert first.inertia_ == second.inertia_


@pytest.mark.slow
def test_result_does_not_depend_on_chunks_workers_or_persistence(mnist_sample):
    X, X_np = mnist_sample
    init = _init_centers(X_np, seed=5)
    results = []
    for n_workers, chunk_rows, persist in [(1, 4096, True), (2, 20_000, True), (2, 3000, False)]:
        with (
            LocalCluster(
                n_workers=n_workers, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0"
            ) as cluster,
            Client(cluster),
        ):
            Xc = X.rechunk((chunk_rows, X.shape[1]))  # not persisted: read from Zarr every iteration
            model = FusedKMeans(n_clusters=10, init=init, tol=1e-4).fit(Xc.persist() if persist else Xc)
            results.append((model.labels_.compute(), model.inertia_, model.n_iter_))
    base_labels, base_inertia, base_iter = results[0]
    for labels, inertia, n_iter in results[1:]:
        np.testing.assert_array_equal(labels, base_labels)
        assert inertia == pytest.approx(base_inertia, rel=1e-6)
        assert n_iter == base_iter


def test_streamed_step_equals_persisted_step(client, mnist_sample):
    X, X_np = mnist_sample
    centers = _init_centers(X_np)
    streamed = lloyd_step(X, centers)
    persisted = lloyd_step(X.persist(), centers)
    np.testing.assert_allclose(streamed[0], persisted[0], rtol=1e-9)
    np.testing.assert_array_equal(streamed[1], persisted[1])
    assert streamed[2] == pytest.approx(persisted[2], rel=1e-9)


def test_fit_rejects_nan_and_too_few_samples(client):
    X = np.ones((50, 4), dtype=np.float32)
    X[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        FusedKMeans(n_clusters=2).fit(da.from_array(X, chunks=10))
    with pytest.raises(ValueError, match="n_clusters"):
        FusedKMeans(n_clusters=5).fit(da.from_array(np.ones((3, 4)), chunks=2))


@pytest.mark.slow
def test_n_init_keeps_the_best_of_its_starts(client, mnist_store):
    """Plain Lloyd (sample_size=None): n_init full fits, the lowest inertia kept."""
    X = to_features(open_dataset(mnist_store, "test").images).persist()
    singles = [
        FusedKMeans(n_clusters=10, random_state=20 + i, sample_size=None).fit(X).inertia_ for i in range(3)
    ]
    model = FusedKMeans(n_clusters=10, random_state=20, n_init=3, sample_size=None).fit(X)
    assert [s["seed"] for s in model.starts_] == [20, 21, 22]
    assert [s["inertia"] for s in model.starts_] == pytest.approx(singles, rel=1e-9)
    assert model.inertia_ == pytest.approx(min(singles), rel=1e-9)
    assert model.inertia_ <= min(singles) * (1 + 1e-9)


def test_the_default_fit_continues_the_best_of_its_starts(client, mnist_store):
    """The default (sampled) strategy: n_init starts on a subsample, each a single task; the one with the
    lowest subsample inertia is the one Lloyd continues: its centers, recomputed here from the same rows
    and seed, are the fit's init_centers_."""
    from job.kmeans.in_memory import local_fit
    from job.kmeans.passes import relative_tol
    from job.kmeans.sampling import START_MAX_ITER, sample_rows

    X = flat_pixels(open_dataset(mnist_store, "test").images).persist()
    model = FusedKMeans(n_clusters=10, random_state=20, n_init=3, sample_size=5_000).fit(X)
    assert [s["seed"] for s in model.starts_] == [20, 21, 22]
    best = min(model.starts_, key=lambda s: s["inertia"])
    sample = sample_rows(X, 5_000, 20).compute()  # 5,000 rows < 50,000: the subsample is the sample
    assert model.sample_["subsample_rows"] == model.sample_["rows"] == len(sample)
    rows = sample.astype(np.float64)
    tol = relative_tol(1e-4, len(rows), rows.sum(axis=0), (rows**2).sum(axis=0))
    again = local_fit(sample, 10, best["seed"], tol, START_MAX_ITER)
    assert again["inertia"] == pytest.approx(best["inertia"], rel=1e-12)
    np.testing.assert_allclose(model.init_centers_, again["centers"], rtol=1e-12)
    assert len(FusedKMeans(n_clusters=10, random_state=20, sample_size=5_000).fit(X).starts_) == 4  # auto


def test_an_empty_cluster_takes_a_far_point_out_of_its_old_cluster(client):
    """As scikit-learn relocates empty clusters: each takes one of the points farthest from their centers,
    that point leaves its old cluster, and two empty clusters never get two copies of one point."""
    rng = np.random.default_rng(1)
    blob = rng.normal(0.0, 0.1, (300, 2))
    outlier = np.array([[6.0, 0.0]])
    points = np.concatenate([blob, outlier, outlier, [[0.0, 5.0]]]).astype(np.float64)  # a duplicated outlier
    init = np.array([[0.0, 0.0], [50.0, 50.0], [-50.0, 50.0]])  # two centers attract nothing
    model = FusedKMeans(n_clusters=3, init=init, max_iter=1, tol=0).fit(da.from_array(points, chunks=100))
    centers = model.cluster_centers_
    assert {tuple(c) for c in centers[1:]} == {(6.0, 0.0), (0.0, 5.0)}  # distinct points, not the copy twice
    moved = [6.0, 0.0], [0.0, 5.0]
    expected_first = (points.sum(axis=0) - np.sum(moved, axis=0)) / (len(points) - 2)
    np.testing.assert_allclose(centers[0], expected_first, rtol=1e-12)
