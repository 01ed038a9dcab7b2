"""The MNIST-derived generator: deterministic whatever the workers and chunking, written straight into the
job's Zarr layout; and the job's streaming fit on it equals its persisted fit."""

import json

import numpy as np
import pytest
import zarr
from distributed import Client, LocalCluster

from data_prep import validate_store
from data_prep.augment import Deformation, deform, deformation_draws, draws_per_image
from data_prep.errors import DataPrepError, StoreError
from data_prep.generate import GenerateConfig, generate_dataset
from job.config import JobConfig
from job.deploy.scheduler import SchedulerConfig
from job.pipeline import run_job

N = 61_000  # wraps past the 60,000 training images, so row 60,000 reuses image 0 with other draws


def _arrays(store):
    root = zarr.open_group(str(store), mode="r")
    return root["train/images"][:], root["train/labels"][:]


@pytest.fixture(scope="module")
def generated(mnist_store, tmp_path_factory, dask_cluster):
    """The same recipe made twice: on 1 worker in chunks of 3,000 and on 2 workers in chunks of 8,192."""
    folder = tmp_path_factory.mktemp("generated")
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            memory_limit="2GiB",
        ) as one,
        Client(one) as client,
    ):
        a = generate_dataset(
            GenerateConfig(out=folder / "a.zarr", source=mnist_store, n=N, seed=5, chunk_size=3000), client
        )
    with Client(dask_cluster) as client:
        b = generate_dataset(
            GenerateConfig(out=folder / "b.zarr", source=mnist_store, n=N, seed=5, chunk_size=8192), client
        )
    return a, b


@pytest.mark.slow
def test_same_seed_same_bytes_whatever_the_workers_and_chunks(generated):
    (images_a, labels_a), (images_b, labels_b) = _arrays(generated[0]), _arrays(generated[1])
    np.testing.assert_array_equal(images_a, images_b)
    np.testing.assert_array_equal(labels_a, labels_b)
    assert zarr.open_group(str(generated[0]), mode="r")["train/images"].chunks[0] == 3000


def test_images_are_deformed_training_images_with_their_labels(generated, mnist_store):
    images, labels = _arrays(generated[0])
    source = zarr.open_group(str(mnist_store), mode="r")
    src_images, src_labels = source["train/images"][:], source["train/labels"][:]
    rows = np.arange(N) % 60_000
    np.testing.assert_array_equal(labels, src_labels[rows])
    assert not np.array_equal(images[:1000], src_images[:1000])
    assert not np.array_equal(images[60_000], images[0])  # the same source, other draws

    # Deformed, but centred as MNIST centres its digits: each one's center of mass where its source's is.
    def centre(batch):
        ys, xs = np.indices(batch.shape[1:])
        mass = batch.sum(axis=(1, 2)).astype(np.float64)
        return np.stack([(batch * ys).sum(axis=(1, 2)) / mass, (batch * xs).sum(axis=(1, 2)) / mass], axis=1)

    moved = np.linalg.norm(centre(images[:5000]) - centre(src_images[:5000]), axis=1)
    assert np.quantile(moved, 0.99) < 0.1, np.quantile(moved, 0.99)
    changed = (images[:5000].astype(np.int16) - src_images[:5000]).__abs__().mean(axis=(1, 2))
    assert np.quantile(changed, 0.05) > 2.0  # every digit is really deformed (grey levels, per pixel)
    uncentred = deform(
        src_images[:5000], deformation_draws(5, 0, 5000, (28, 28)), Deformation(center_of_mass=False)
    )
    assert np.median(np.linalg.norm(centre(uncentred) - centre(src_images[:5000]), axis=1)) > 0.3
    # The ink is kept: mean intensity within 10% of the sources'.
    assert abs(images.mean() / src_images[rows].mean() - 1) < 0.1
    info = validate_store(generated[0])
    assert info["train"].n == N and info["test"].n == 10_000
    np.testing.assert_array_equal(
        zarr.open_group(str(generated[0]), mode="r")["test/labels"][:], source["test/labels"][:]
    )
    attrs = zarr.open_group(str(generated[0]), mode="r").attrs["provenance"]
    assert attrs["recipe"]["seed"] == 5 and sum(attrs["label_counts"]) == N


def test_draws_depend_only_on_seed_and_row():
    shape = (28, 28)
    whole = deformation_draws(9, 0, 10, shape)
    np.testing.assert_array_equal(deformation_draws(9, 7, 3, shape), whole[7:])
    assert not np.array_equal(deformation_draws(10, 0, 10, shape), whole)
    images = np.random.default_rng(0).integers(0, 256, (10, *shape), dtype=np.uint8)
    np.testing.assert_array_equal(deform(images, whole)[4:], deform(images[4:], whole[4:]))
    with pytest.raises(ValueError, match="draws must be"):
        deform(images, whole[:, : draws_per_image(shape) - 4])
    # No deformation at all gives the images back.
    still = Deformation(max_rotation_deg=0, scale_range=(1, 1), max_shear=0, max_shift=0, elastic_alpha=0)
    np.testing.assert_array_equal(deform(images, whole, still), images)


def test_an_existing_store_is_reused_or_refused(generated, mnist_store, client):
    again = GenerateConfig(out=generated[0], source=mnist_store, n=N, seed=5, chunk_size=3000)
    assert generate_dataset(again, client) == generated[0]  # same recipe: reused, not regenerated
    with pytest.raises(StoreError, match="holds other data; pass --overwrite"):
        generate_dataset(GenerateConfig(out=generated[0], source=mnist_store, n=N, seed=6), client)
    with pytest.raises(DataPrepError, match="--n must be at least 1"):
        GenerateConfig(out=generated[0], source=mnist_store, n=0)


@pytest.mark.slow
def test_streaming_fit_equals_persisted_fit(generated, dask_cluster, tmp_path):
    cluster = SchedulerConfig(address=dask_cluster.scheduler_address)
    runs = {}
    for persist in ("always", "never"):
        config = JobConfig(
            data=generated[1],
            split="train",
            k=10,
            seed=1,
            persist=persist,
            silhouette_sample=1000,
            out=tmp_path / persist,
            cluster=cluster,
        )
        runs[persist] = run_job(config)
    labels = {p: zarr.open_array(str(r.run_dir / "labels.zarr"), mode="r")[:] for p, r in runs.items()}
    np.testing.assert_array_equal(labels["always"], labels["never"])
    fits = {p: r.metrics["fit"] for p, r in runs.items()}
    assert fits["always"]["inertia"] == pytest.approx(fits["never"]["inertia"], rel=1e-9)
    assert fits["always"]["n_iter"] == fits["never"]["n_iter"]
    decision = {
        p: json.loads((r.run_dir / "metrics.json").read_text())["fit"]["persisted"] for p, r in runs.items()
    }
    assert decision == {"always": True, "never": False}


def test_the_resume_fingerprint_follows_the_content_not_the_chunking(
    generated, mnist_store, dask_cluster, tmp_path
):
    """Generated stores have no source files of their own: the fingerprint must still tell them apart."""
    from job import checkpoint
    from job.errors import JobError

    a, b = generated  # the same recipe in other chunks
    assert checkpoint.data_fingerprint(a, "train") == checkpoint.data_fingerprint(b, "train")
    with Client(dask_cluster) as client:
        small = [
            generate_dataset(
                GenerateConfig(out=tmp_path / f"{n}-{seed}.zarr", source=mnist_store, n=n, seed=seed), client
            )
            for n, seed in ((1000, 5), (1000, 6), (1001, 5))
        ]
    prints = {checkpoint.data_fingerprint(s, "train") for s in (a, *small)}
    assert len(prints) == 4
    run = tmp_path / "run"
    checkpoint.start(JobConfig(data=small[0], split="train", out=run, k=3), run)
    with pytest.raises(JobError, match="cannot resume on other data"):
        checkpoint.load_for_resume(
            JobConfig(data=small[2], split="train", out=run, k=3, resume=True), run, 784
        )
