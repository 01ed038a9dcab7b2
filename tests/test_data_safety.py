"""User data is never destroyed, and damaged data is never trusted: ownership checks on every entry point
that can replace something, damaged stores, and secrets kept out of what we write."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import dask
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_prep import PrepConfig, prepare_dataset
from data_prep.atomic import NotOursError, atomic_directory
from data_prep.errors import DataPrepError
from data_prep.redact import redact, redact_text
from data_prep.zarr_store import verify_store
from job.dataset import open_dataset, to_features
from job.errors import JobError

from . import run_module
from .synthetic import synthetic_arrays, write_dataset

CHUNK = 64  # the tiny store: train 300 images in 5 chunks, test 100 in 2
ARRAYS = ["train/images", "train/labels", "test/images", "test/labels"]


def _one_line_error(proc) -> str:
    """The CLI's promise for bad input: exit 1, no traceback, the last line an `error:` sentence."""
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), proc.stderr[-3000:]
    return last


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("idx") / "tiny", synthetic_arrays())


@pytest.fixture(scope="module")
def tiny_store(tiny_source, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("store") / "tiny.zarr"
    return prepare_dataset(PrepConfig(out=out, source=str(tiny_source), name="tiny", chunk_size=CHUNK))


@pytest.fixture
def users_folder(tmp_path) -> Path:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("three years of work")
    (folder / "data").mkdir()
    (folder / "data" / "results.csv").write_text("1,2,3\n")
    return folder


def _untouched(folder: Path) -> None:
    assert (folder / "thesis.tex").read_text() == "three years of work"
    assert (folder / "data" / "results.csv").read_text() == "1,2,3\n"
    assert sorted(p.name for p in folder.iterdir()) == ["data", "thesis.tex"]


# --- no entry point replaces what it did not create ---------------------------------------------------


def test_job_overwrite_refuses_a_folder_that_is_not_a_run(tiny_store, users_folder):
    line = _one_line_error(
        run_module("job", "--data", str(tiny_store), "--out", str(users_folder), "--overwrite")
    )
    assert str(users_folder) in line and "is not a run folder of this job" in line
    _untouched(users_folder)


def test_sweep_overwrite_refuses_a_folder_that_is_not_a_run(tiny_store, users_folder):
    line = _one_line_error(
        run_module("job", "--data", str(tiny_store), "--k", "2,3", "--out", str(users_folder), "--overwrite")
    )
    assert "is not a run folder of this job" in line
    _untouched(users_folder)


@pytest.mark.skipif(
    os.geteuid() != 0 and os.environ.get("CI") != "true",
    reason="mounting a small tmpfs needs root; under CI=true it always runs (and fails without root)",
)
@pytest.mark.parametrize("k", ["3", "2,3"], ids=["run", "sweep"])
def test_a_full_disk_while_writing_the_run_folder_is_one_line_and_leaves_no_half_folder(
    tiny_store, tmp_path, k
):
    """A run and a sweep share the session's atomic write: either way a full disk is one sentence."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], check=True)
    try:
        line = _one_line_error(
            run_module(
                "job",
                "--data",
                str(tiny_store),
                "--k",
                k,
                "--out",
                str(disk / "run"),
                "--dashboard-address",
                "127.0.0.1:0",
                "--silhouette-sample",
                "50",
            )
        )
        assert "cannot write the run folder (No space left on device); nothing was kept" in line
        left = sorted(p.name for p in disk.iterdir())
        assert "run" not in left and not [name for name in left if ".tmp-" in name], left
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_data_prep_overwrite_refuses_a_folder_that_is_not_a_store(tiny_source, users_folder):
    line = _one_line_error(
        run_module(
            "data_prep",
            "--source",
            str(tiny_source),
            "--name",
            "tiny",
            "--out",
            str(users_folder),
            "--overwrite",
        )
    )
    assert "not part of a dataset store" in line and "left untouched" in line
    _untouched(users_folder)
    # Without --overwrite it is not mistaken for a damaged store of ours either.
    line = _one_line_error(
        run_module("data_prep", "--source", str(tiny_source), "--name", "tiny", "--out", str(users_folder))
    )
    assert "left untouched" in line and "--overwrite" not in line
    _untouched(users_folder)


def test_generate_overwrite_refuses_a_folder_that_is_not_a_store(tiny_store, users_folder):
    line = _one_line_error(
        run_module(
            "job.generate",
            "--n",
            "100",
            "--mnist",
            str(tiny_store),
            "--out",
            str(users_folder),
            "--overwrite",
            "--n-workers",
            "1",
            "--memory-limit",
            "1GiB",
        )
    )
    assert "not part of a dataset store" in line
    _untouched(users_folder)


def test_predict_never_replaces_a_file_it_did_not_write(tiny_store, users_folder, tmp_path):
    run = tmp_path / "run"
    proc = run_module(
        "job",
        "--data",
        str(tiny_store),
        "--k",
        "3",
        "--silhouette-sample",
        "50",
        "--out",
        str(run),
        "--dashboard-address",
        "127.0.0.1:0",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    test_split = str(tiny_store / "test")
    line = _one_line_error(
        run_module("job.predict", str(run), test_split, "--out", str(users_folder / "thesis.tex"))
    )
    assert "is not a predictions file written by job.predict" in line
    _one_line_error(run_module("job.predict", str(run), test_split, "--out", str(users_folder)))
    _untouched(users_folder)
    # Its own output is replaced on a second run (that is the default place, inside the run folder).
    for _ in range(2):
        assert run_module("job.predict", str(run), test_split).returncode == 0
    assert (run / "predictions.csv").read_text().startswith("row,source,cluster,digit,squared_distance")


@pytest.mark.slow
def test_a_run_folder_of_ours_is_replaced_but_not_one_the_user_added_files_to(tiny_store, tmp_path):
    run = tmp_path / "run"
    args = [
        "--data",
        str(tiny_store),
        "--k",
        "3",
        "--silhouette-sample",
        "50",
        "--out",
        str(run),
        "--dashboard-address",
        "127.0.0.1:0",
    ]
    assert run_module("job", *args).returncode == 0
    first = json.loads((run / "metrics.json").read_text())["started"]
    proc = run_module("job", *args, "--overwrite", "--seed", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["config"]["seed"] == 1 and first
    (run / "my-notes.txt").write_text("mine")
    line = _one_line_error(run_module("job", *args, "--overwrite"))
    assert "also holds files the job did not write (my-notes.txt)" in line
    assert (run / "my-notes.txt").read_text() == "mine"


def test_the_guard_is_checked_again_when_the_folder_is_replaced(tmp_path):
    """A target that turned into something else while we worked is still not replaced."""
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(NotOursError):
        with atomic_directory(target, overwrite=True, why_not_ours=lambda p: "not ours") as tmp:
            (tmp / "result").write_text("new")
            (target / "users-file").write_text("arrived meanwhile")
    assert (target / "users-file").read_text() == "arrived meanwhile"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # our staging folder is gone
    with pytest.raises(ValueError, match="ownership check"), atomic_directory(target, overwrite=True):
        pass


# --- damaged stores ----------------------------------------------------------------------------------


def _chunk_files(store: Path, array: str) -> list[Path]:
    return sorted(p for p in (store / array / "c").rglob("*") if p.is_file())


def damage(store: Path, kind: str, array: str, which: int, where: float) -> str:
    """Damage one file of `store` in place; return a description."""
    files = _chunk_files(store, array)
    chunk = files[which % len(files)]
    meta = store / array / "zarr.json"
    if kind == "flip":
        data = bytearray(chunk.read_bytes())
        data[int(where * (len(data) - 1))] ^= 0xFF
        chunk.write_bytes(bytes(data))
    elif kind == "truncate":
        data = chunk.read_bytes()
        chunk.write_bytes(data[: int(where * (len(data) - 1))])
    elif kind == "delete":
        chunk.unlink()
    elif kind == "extra":
        shutil.copy(chunk, chunk.with_name(str(99 + which)))
    elif kind in ("shape", "dtype", "chunks", "garbage"):
        doc = json.loads(meta.read_text())
        if kind == "shape":
            doc["shape"][0 if where < 0.5 else -1] += 1 + which
        elif kind == "dtype":
            doc["data_type"] = ["int8", "uint16", "float32", "int64"][which % 4]
        elif kind == "chunks":
            doc["chunk_grid"]["configuration"]["chunk_shape"][0] += 1 + which
        meta.write_text(json.dumps(doc) if kind != "garbage" else json.dumps(doc)[: int(where * 50)])
    return f"{kind} {array} #{which} at {where:.2f}"


KINDS = ["flip", "truncate", "delete", "extra", "shape", "dtype", "chunks", "garbage"]


def _read_like_the_job(store: Path, chunks_per_block: int = 1) -> None:
    data = open_dataset(store, "all")
    images = data.in_blocks(chunks_per_block).images
    dask.compute(to_features(images).sum(), data.labels.astype(np.int64).sum(), scheduler="sync")


def test_blocks_of_several_chunks_read_the_same_rows(tiny_store):
    """A persisted X is read in blocks of several stored chunks (the last one short): the same rows, and
    the labels in the same blocks as the images."""
    data = open_dataset(tiny_store, "all")
    for per in (2, 3):
        merged = data.in_blocks(per)
        assert merged.images.numblocks[0] < data.images.numblocks[0]
        assert merged.labels.chunks[0] == merged.images.chunks[0]
        for name in ("images", "labels"):
            assert np.array_equal(
                getattr(merged, name).compute(scheduler="sync"), getattr(data, name).compute(scheduler="sync")
            )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(KINDS),
    array=st.sampled_from(ARRAYS),
    which=st.integers(0, 6),
    where=st.floats(0.0, 1.0),
)
def test_any_store_damage_is_our_one_line_error(tiny_store, tmp_path_factory, kind, array, which, where):
    store = tmp_path_factory.mktemp("damaged") / "tiny.zarr"
    shutil.copytree(tiny_store, store)
    what = damage(store, kind, array, which, where)
    for chunks_per_block in (1, 3):  # as stored, and as a persisted X reads it (job.dataset.lazy_array)
        with pytest.raises((DataPrepError, JobError)) as caught:
            _read_like_the_job(store, chunks_per_block)
        message = str(caught.value)
        assert str(store) in message and "\n" not in message, (what, message)
    problems = verify_store(store).problems
    assert problems and all(str(store) in p for p in problems), what


@pytest.mark.parametrize(
    "kind, array",
    [
        ("flip", "train/images"),
        ("truncate", "test/images"),
        ("delete", "train/labels"),
        ("extra", "train/images"),
        ("shape", "test/labels"),
        ("garbage", "train/images"),
    ],
)
def test_the_job_on_a_damaged_store_is_one_line_and_writes_nothing(tiny_store, tmp_path, kind, array):
    store = tmp_path / "tiny.zarr"
    shutil.copytree(tiny_store, store)
    damage(store, kind, array, 1, 0.5)
    run = tmp_path / "run"
    line = _one_line_error(
        run_module(
            "job",
            "--data",
            str(store),
            "--k",
            "3",
            "--silhouette-sample",
            "50",
            "--out",
            str(run),
            "--dashboard-address",
            "127.0.0.1:0",
        )
    )
    assert str(store) in line
    if kind in ("flip", "truncate"):
        assert f"{store}/{array}: chunk 1 (rows 64-" in line and "is damaged" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.zarr"]


def test_verify_reads_every_chunk_and_names_the_damaged_one(tiny_store, tmp_path):
    proc = run_module("data_prep", "verify", str(tiny_store))
    assert proc.returncode == 0 and "every chunk is present" in proc.stdout, proc.stderr
    store = tmp_path / "tiny.zarr"
    shutil.copytree(tiny_store, store)
    damage(store, "flip", "test/images", 1, 0.7)
    proc = run_module("data_prep", "verify", str(store))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert (
        f"error: {store}/test/images: chunk 1 (rows 64-99, file c/1/0/0) is damaged: its CRC32C checksum "
        "does not match"
    ) in proc.stderr


# --- secrets -----------------------------------------------------------------------------------------


def test_secrets_are_masked_in_urls_and_settings():
    assert redact_text("s3://AKIA:wJal/rXUtn@bucket/mnist.zarr") == "s3://AKIA:***@bucket/mnist.zarr"
    assert (
        redact_text("https://h/x.zarr?X-Amz-Signature=abc&part=1&token=t")
        == "https://h/x.zarr?X-Amz-Signature=***&part=1&token=***"
    )
    assert redact_text("tcp://10.0.0.5:8786") == "tcp://10.0.0.5:8786"
    config = {
        "connect_options": {"password": "hunter2", "passphrase": "x", "username": "me", "port": 22},
        "security": {"key": "/etc/dask/node.key"},
        "data": "gs://u:pw@b/s.zarr",
    }
    assert redact(config) == {
        "connect_options": {"password": "***", "passphrase": "***", "username": "me", "port": 22},
        "security": {"key": "/etc/dask/node.key"},
        "data": "gs://u:***@b/s.zarr",
    }


def test_a_url_password_never_reaches_the_log_or_the_error_line(tmp_path):
    proc = run_module(
        "job", "--data", "http://reader:hunter2@127.0.0.1:9/mnist.zarr", "--out", str(tmp_path / "run")
    )
    _one_line_error(proc)
    assert "hunter2" not in proc.stderr + proc.stdout and "reader:***@127.0.0.1" in proc.stderr
