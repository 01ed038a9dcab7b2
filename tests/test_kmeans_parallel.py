"""Our k-means||: seeded, weighted, and independent of chunking, worker count and persistence."""

import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster
from sklearn.exceptions import ConvergenceWarning

from job.dataset import open_dataset, to_features
from job.engine.persist import persist_balanced
from job.engine.rng import uniforms
from job.kmeans.estimator import FusedKMeans
from job.kmeans.kmeans_parallel import kmeans_parallel


@pytest.fixture(scope="module")
def mnist_x(mnist_store):
    return to_features(open_dataset(mnist_store).images)


@pytest.mark.slow
def test_same_seed_same_centers_and_labels_whatever_the_chunks_and_workers(mnist_x):
    results = []
    for n_workers, rows in [(2, 4096), (2, 8192), (2, 35_000), (1, 8192)]:
        with (
            LocalCluster(
                n_workers=n_workers, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0"
            ) as cluster,
            Client(cluster) as client,
        ):
            X = persist_balanced(client, mnist_x, rows)
            model = FusedKMeans(n_clusters=10, random_state=11).fit(X)
            init, _ = kmeans_parallel(X, 10, seed=11)
            results.append((init, model.labels_.compute(), model.inertia_, model.init_info_))
    first_init, first_labels, first_inertia, _info = results[0]
    assert len(np.unique(first_init, axis=0)) == 10
    for init, labels, inertia, _ in results[1:]:
        np.testing.assert_array_equal(init, first_init)
        np.testing.assert_array_equal(labels, first_labels)
        assert inertia == pytest.approx(first_inertia, rel=1e-9)


def test_streamed_and_persisted_give_the_same_centers(client, mnist_x):
    X = mnist_x[:20_000]
    streamed, info = kmeans_parallel(X, 10, seed=3)
    persisted, _ = kmeans_parallel(X.persist(), 10, seed=3)
    np.testing.assert_array_equal(streamed, persisted)
    assert info["passes"] == info["rounds"] + 1


def test_reads_of_x_are_counted_where_they_happen(mnist_x):
    """Every chunk of X that k-means|| reads, counted by the task that reads it (the synchronous scheduler
    runs them in this process), equals what it reports; and the full passes are rounds + 1."""
    import dask

    reads = []

    def counted(block, block_info=None):
        reads.append(block_info[0]["chunk-location"][0])
        return block

    X = mnist_x[:20_000].map_blocks(counted, dtype=mnist_x.dtype)
    with dask.config.set(scheduler="sync"):
        _, info = kmeans_parallel(X, 10, seed=3, rounds=4)
    assert info["passes"] == info["rounds"] + 1
    assert len(reads) == info["chunk_reads"]
    assert info["chunk_reads"] > info["passes"] * X.numblocks[0]  # the drawn rows cost reads too
    assert info["chunk_reads"] <= (2 * info["rounds"] + 1) * X.numblocks[0] + 1


def test_different_seeds_draw_different_first_centers():
    firsts = {int(uniforms([0], seed, 0)[0] * 70_000) for seed in range(20)}
    assert len(firsts) == 20


def test_different_seeds_give_different_centers(client, mnist_x):
    X = mnist_x[:10_000].persist()
    a, info_a = kmeans_parallel(X, 10, seed=1)
    b, info_b = kmeans_parallel(X, 10, seed=2)
    assert info_a["first_index"] != info_b["first_index"]
    assert not np.allclose(a, b)


def test_duplicated_data_still_gives_k_distinct_centers(client):
    points = np.repeat(np.eye(4, 6, dtype=np.float32), [500, 300, 150, 50], axis=0)
    X = da.from_array(points, chunks=250)
    centers, info = kmeans_parallel(X, 4, seed=0)
    assert len(np.unique(centers.round(6), axis=0)) == 4
    assert info["candidates"] >= 4
    with pytest.warns(
        ConvergenceWarning, match=r"distinct clusters \(4\) found smaller than n_clusters \(5\)"
    ):
        centers, _ = kmeans_parallel(X, 5, seed=0)  # as scikit-learn: a warning, two centers coincide
    assert centers.shape == (5, 6) and len(np.unique(centers.round(6), axis=0)) == 4


def test_empty_cluster_is_reseeded_not_collapsed_to_the_origin(client):
    rng = np.random.default_rng(0)
    blobs = np.concatenate([rng.normal(c, 0.1, (200, 2)) for c in (0.0, 5.0, 10.0)]).astype(np.float32)
    init = np.array([[0.0, 0.0], [5.0, 5.0], [10.0, 10.0], [100.0, 100.0]])  # the last attracts nothing
    model = FusedKMeans(n_clusters=4, init=init, tol=0).fit(da.from_array(blobs, chunks=150))
    assert (model.counts_ > 0).all()
    assert not np.any(np.all(np.abs(model.cluster_centers_) < 1e-9, axis=1))
    assert np.abs(model.cluster_centers_).max() < 20
