"""The sampled fit and compact data: a sample drawn by global row index (the same rows whatever the
chunking or the workers), uint8 pixels clustered as float32 would be, and the default cluster sized to
the machine the job runs on."""

import numpy as np
import pytest
from distributed import Client, LocalCluster

from job.dataset import PIXEL_SCALE, flat_pixels, open_dataset, to_features
from job.engine.persist import persist_balanced
from job.kmeans.estimator import FusedKMeans
from job.kmeans.sampling import auto_sample_size, auto_starts, sample_rows


@pytest.fixture(scope="module")
def pixels(mnist_store):
    return flat_pixels(open_dataset(mnist_store, "all").images)


@pytest.mark.slow
def test_the_sample_and_the_sampled_fit_do_not_depend_on_chunks_or_workers(pixels):
    results = []
    for n_workers, rows in [(1, 4096), (2, 8192), (2, 30_000)]:
        with (
            LocalCluster(
                n_workers=n_workers, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0"
            ) as cluster,
            Client(cluster) as client,
        ):
            X = persist_balanced(client, pixels, rows)
            sample = sample_rows(X, 10_000, seed=7).compute()
            model = FusedKMeans(n_clusters=10, random_state=7, sample_size=10_000).fit(X)
            results.append((sample, model.labels_.compute(), model.inertia_, model.sample_))
    first_sample, first_labels, first_inertia, record = results[0]
    assert 9_000 < len(first_sample) < 11_000 and first_sample.dtype == np.uint8
    assert record["rows"] == len(first_sample) and record["full_passes"] >= 1
    for sample, labels, inertia, _ in results[1:]:
        np.testing.assert_array_equal(sample, first_sample)
        np.testing.assert_array_equal(labels, first_labels)
        assert inertia == pytest.approx(first_inertia, rel=1e-9)


def test_uint8_pixels_cluster_as_float32_features_do(client, mnist_store):
    images = open_dataset(mnist_store, "test").images
    init = to_features(images)[:10].compute().astype(np.float64)
    floats = FusedKMeans(n_clusters=10, init=init, sample_size=None).fit(to_features(images).persist())
    compact = FusedKMeans(n_clusters=10, init=init / PIXEL_SCALE, sample_size=None).fit(
        flat_pixels(images).persist()
    )
    assert compact.cluster_centers_.dtype == np.float32 and compact.n_iter_ == floats.n_iter_
    np.testing.assert_allclose(compact.cluster_centers_ * PIXEL_SCALE, floats.cluster_centers_, atol=2e-5)
    assert compact.inertia_ * PIXEL_SCALE**2 == pytest.approx(floats.inertia_, rel=1e-6)
    agree = (compact.labels_.compute() == floats.labels_.compute()).mean()
    assert agree > 0.9995  # rounding can flip a point that is equally far from two centers


@pytest.mark.slow
def test_sampled_fit_reaches_the_full_fits_quality_on_mnist(client, pixels):
    X = pixels.persist()
    full = FusedKMeans(n_clusters=10, random_state=0, sample_size=None).fit(X)
    sampled = FusedKMeans(n_clusters=10, random_state=0, sample_size=15_000).fit(X)
    assert sampled.sample_["rows"] < 16_000
    assert sampled.inertia_ <= full.inertia_ * 1.003
    assert sampled.sample_["inertia_all_rows_final"] <= sampled.sample_["inertia_all_rows_after_sample"]
    # Far fewer passes over all rows: the draw, the Lloyd passes from the sample's centers, the final one.
    assert sampled.passes_over_all_rows_ == sampled.sample_["full_passes"] + 2
    assert sampled.passes_over_all_rows_ < full.passes_over_all_rows_ / 10


def test_the_default_sample_is_everything_at_mnist_size():
    assert auto_sample_size(70_000, 10) == 70_000
    assert auto_sample_size(8_100_000, 10) == 200_000
    assert auto_sample_size(8_100_000, 256) == 256_000
    assert auto_sample_size(1_000_000, 1024) == 1_000_000


@pytest.mark.slow
def test_many_clusters_get_one_start_that_only_seeds():
    """n_init="auto" with many clusters: one start, its greedy k-means++ only (Lloyd then runs over the
    workers, not single-threaded in the start's task); few clusters keep the 4 starts."""
    assert auto_starts(60_000, 10) == auto_starts(60_000, 32) == 4 and auto_starts(60_000, 64) == 1
    X = np.random.default_rng(0).normal(size=(8_000, 8))
    model = FusedKMeans(n_clusters=150, random_state=0).fit(X)
    assert len(model.starts_) == 1 and model.starts_[0]["n_iter"] == 0
    assert model.n_iter_ > 1 and model.strategy_ == "starts on a subsample"
