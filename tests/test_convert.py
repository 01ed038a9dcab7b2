"""IDX to Zarr: bit-exact, atomic, idempotent, and strict about what it accepts."""

import os

import numpy as np
import pytest
import zarr

from data_prep import PrepConfig, prepare_dataset, validate_store
from data_prep.errors import IdxFormatError, StoreError
from data_prep.idx import read_idx, write_idx
from data_prep.registry import STANDARD_STEMS

from .synthetic import synthetic_arrays, write_dataset


def _leftovers(folder):
    """Hidden staging or trash folders, or lock files, left beside a store."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_real_mnist_round_trips_bit_exactly(mnist_dir, mnist_store):
    root = zarr.open_group(str(mnist_store), mode="r")
    for (split, kind), stem in STANDARD_STEMS.items():
        original = read_idx(mnist_dir / f"{stem}.gz")
        stored = root[f"{split}/{kind}"]
        assert stored.dtype == np.uint8
        np.testing.assert_array_equal(stored[:], original)
    info = validate_store(mnist_store)
    assert info["train"].n == 60_000 and info["test"].n == 10_000
    assert root["train/images"].chunks == (8192, 28, 28)
    assert root["train/images"].metadata.dimension_names == ("sample", "y", "x")
    assert root["train/labels"].metadata.dimension_names == ("sample",)
    provenance = root.attrs["provenance"]
    assert provenance["dataset"] == "mnist" and "zstd" in provenance["codec"]
    assert all(f["verified"] for f in provenance["files"].values())
    assert {"zarr", "numpy", "python"} <= set(provenance["versions"])


@pytest.mark.parametrize("chunk_size", [7, 64, 1000])
def test_tiny_dataset_round_trips_for_any_chunk_size(tiny_dir, tmp_path, chunk_size):
    arrays = synthetic_arrays()
    out = prepare_dataset(
        PrepConfig(out=tmp_path / "t.zarr", source=str(tiny_dir), name="tiny", chunk_size=chunk_size)
    )
    root = zarr.open_group(str(out), mode="r")
    for split, (images, labels) in arrays.items():
        np.testing.assert_array_equal(root[f"{split}/images"][:], images)
        np.testing.assert_array_equal(root[f"{split}/labels"][:], labels)
        assert root[f"{split}/images"].chunks[0] == chunk_size
    assert _leftovers(tmp_path) == []


def test_existing_store_is_reused_then_overwritten(tiny_dir, tmp_path):
    config = PrepConfig(out=tmp_path / "t.zarr", source=str(tiny_dir), name="tiny")
    prepare_dataset(config)
    marker = tmp_path / "t.zarr" / "zarr.json"
    stamp = marker.stat().st_mtime_ns
    prepare_dataset(config)
    assert marker.stat().st_mtime_ns == stamp  # reused, not rewritten
    prepare_dataset(PrepConfig(out=config.out, source=str(tiny_dir), name="tiny", overwrite=True))
    assert marker.stat().st_mtime_ns != stamp
    assert _leftovers(tmp_path) == []


def test_store_from_other_data_is_not_reused_silently(tiny_dir, tmp_path):
    out = tmp_path / "t.zarr"
    prepare_dataset(PrepConfig(out=out, source=str(tiny_dir), name="tiny"))
    other = write_dataset(tmp_path / "other", synthetic_arrays(seed=1))
    with pytest.raises(StoreError, match="holds other data; pass --overwrite"):
        prepare_dataset(PrepConfig(out=out, source=str(other), name="tiny"))


def _break(folder, stem, array):
    write_idx(folder / f"{stem}.gz", array, compress=True)


@pytest.mark.parametrize(
    "stem, array, message",
    [
        ("t10k-labels-idx1-ubyte", np.zeros(99, np.uint8), "100 images but .* 99 labels"),
        ("train-labels-idx1-ubyte", np.full(300, 10, np.uint8), "label 10 is outside 0-9"),
        ("train-images-idx3-ubyte", np.zeros((300, 28), np.uint8), "expected uint8 images"),
        ("train-images-idx3-ubyte", np.zeros((300, 28, 28), np.float32), "expected uint8 images"),
        ("t10k-images-idx3-ubyte", np.zeros((100, 14, 14), np.uint8), "differ in size"),
    ],
)
def test_inconsistent_files_are_refused_and_nothing_is_written(tiny_dir, tmp_path, stem, array, message):
    _break(tiny_dir, stem, array)
    out = tmp_path / "out" / "t.zarr"
    with pytest.raises(IdxFormatError, match=message):
        prepare_dataset(PrepConfig(out=out, source=str(tiny_dir), name="tiny"))
    assert not out.exists()
    assert _leftovers(out.parent) == [] if out.parent.exists() else True


def test_empty_dataset_is_refused(tmp_path):
    arrays = {s: (np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8)) for s in ("train", "test")}
    folder = write_dataset(tmp_path / "empty", arrays)
    with pytest.raises(IdxFormatError, match="empty"):
        prepare_dataset(PrepConfig(out=tmp_path / "e.zarr", source=str(folder), name="empty"))


def test_truncated_images_midway_leave_no_store(tiny_dir, tmp_path):
    path = tiny_dir / "train-images-idx3-ubyte.gz"
    import gzip

    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) - 5000]))
    out = tmp_path / "t.zarr"
    with pytest.raises(IdxFormatError, match="truncated"):
        prepare_dataset(PrepConfig(out=out, source=str(tiny_dir), name="tiny", chunk_size=50))
    assert not out.exists() and _leftovers(tmp_path) == []


def test_validate_store_finds_missing_chunks_and_wrong_arrays(tiny_dir, tmp_path):
    out = prepare_dataset(
        PrepConfig(out=tmp_path / "t.zarr", source=str(tiny_dir), name="tiny", chunk_size=50)
    )
    chunk = out / "train" / "images" / "c" / "1" / "0" / "0"
    assert chunk.exists()
    os.remove(chunk)
    with pytest.raises(StoreError, match="1 of 6 chunks are missing"):
        validate_store(out)
    with pytest.raises(StoreError, match="store not found"):
        validate_store(tmp_path / "nothing.zarr")
    root = zarr.open_group(str(tmp_path / "bad.zarr"), mode="w")
    root.attrs["complete"] = True
    train = root.create_group("train")
    train.create_array("images", shape=(5, 4), dtype="float32")
    train.create_array("labels", shape=(5,), dtype="uint8")
    with pytest.raises(StoreError, match="expected uint8"):
        validate_store(tmp_path / "bad.zarr", ("train",))
