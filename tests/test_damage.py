"""A hostile disk and careless hands: every damage of a store or a run folder we could think of, given to
the real command line (`python -m job`, run in this process so that 40 cases cost seconds, not minutes,
with its LocalCluster's worker processes' output captured too), ends in one `error:` line that names
the file and the problem, a non-zero exit, no traceback, nothing half-written and the damaged input
untouched; or, where carrying on is right (a file browser's .DS_Store), in the same result as the
undamaged store."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import zarr
from distributed.diagnostics.plugin import WorkerPlugin

from data_prep import PrepConfig, prepare_dataset
from data_prep.zarr_store import DIGEST_ATTR, chunk_digest
from job import checkpoint
from job.cli import build_parser, config_from_args, main
from job.errors import JobError

from . import run_module
from .synthetic import synthetic_arrays, write_dataset

CHUNK = 64  # train: 300 images in 5 chunks; test: 100 in 2
QUICK = [
    "--k",
    "3",
    "--silhouette-sample",
    "50",
    "--dashboard-address",
    "127.0.0.1:0",
    "--n-workers",
    "1",
    "--memory-limit",
    "1GiB",
]


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory) -> Path:
    source = write_dataset(tmp_path_factory.mktemp("idx") / "tiny", synthetic_arrays())
    out = tmp_path_factory.mktemp("store") / "tiny.zarr"
    return prepare_dataset(PrepConfig(out=out, source=str(source), name="tiny", chunk_size=CHUNK))


def run_job_cli(capfd, *args: str) -> tuple[int, str]:
    """`python -m job ARGS` in this process: (exit status, everything written to stdout and stderr, worker
    processes included)."""
    capfd.readouterr()
    code = main([*args, *QUICK])
    out, err = capfd.readouterr()
    return code, out + err


def snapshot(path: Path) -> dict[str, str]:
    """Every entry under `path` (itself included) with what it is: a file's SHA-256, a link's target."""
    entries = {}
    for entry in [path, *sorted(path.rglob("*"))] if path.is_dir() and not path.is_symlink() else [path]:
        key = str(entry.relative_to(path)) if entry != path else "."
        if entry.is_symlink():
            entries[key] = "-> " + os.readlink(entry)
        elif entry.is_file():
            entries[key] = hashlib.sha256(entry.read_bytes()).hexdigest()
        else:
            entries[key] = "dir"
    return entries


# --- ways to damage a store (each returns the --data to give and the path the error must name) -------


def _chunk_file(store: Path, array: str, index: int) -> Path:
    path = store / array / "c" / str(index)
    return path / "0" / "0" if array.endswith("images") else path


def _swap(a: Path, b: Path) -> None:
    tmp = a.with_name(a.name + ".swap")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _write_labels(store: Path, split: str, index: int, value: int, keep_digest: bool) -> None:
    """Rewrite one labels chunk through zarr (valid codecs, valid CRC32C) so that one label is `value`;
    with keep_digest=False the chunk's recorded SHA-256 is updated too, as a store written by a version
    that recorded none, or a careful forger, would have it."""
    array = zarr.open_array(store=str(store / split / "labels"), mode="r+", zarr_format=3)
    rows = array[index * CHUNK : (index + 1) * CHUNK]
    rows[3] = value
    array[index * CHUNK : index * CHUNK + len(rows)] = rows
    if not keep_digest:

        def update(doc):
            doc["attributes"][DIGEST_ATTR][index] = chunk_digest(rows)

        _edit_json(store / split / "labels" / "zarr.json", update)


@dataclass(frozen=True)
class Damage:
    name: str
    apply: Callable[[Path, Path], Path]  # (copy of the store, the test's folder) -> the --data to give
    expect: str  # a fragment of the one error line (None: the run must succeed)


def _rewritten_labels(split, index, value, keep_digest):
    def apply(store, tmp):
        _write_labels(store, split, index, value, keep_digest)
        return store

    return apply


def _swapped(array, a, b):
    def apply(store, tmp):
        _swap(_chunk_file(store, array, a), _chunk_file(store, array, b))
        return store

    return apply


def _copied_over(array, a, b):
    def apply(store, tmp):
        shutil.copy(_chunk_file(store, array, a), _chunk_file(store, array, b))
        return store

    return apply


def _bytes(array, index, change):
    def apply(store, tmp):
        path = _chunk_file(store, array, index)
        path.write_bytes(change(path.read_bytes()))
        return store

    return apply


def _flip(data: bytes) -> bytes:
    out = bytearray(data)
    out[len(out) // 2] ^= 0xFF
    return bytes(out)


def _meta(component, edit):
    def apply(store, tmp):
        _edit_json(store / component / "zarr.json", edit)
        return store

    return apply


def _replace_file(relative, content: bytes):
    def apply(store, tmp):
        (store / relative).write_bytes(content)
        return store

    return apply


def _remove(relative):
    def apply(store, tmp):
        target = store / relative
        shutil.rmtree(target) if target.is_dir() else target.unlink()
        return store

    return apply


def _dangling(store, tmp):
    link = tmp / "link.zarr"
    link.symlink_to(tmp / "moved-away.zarr")
    return link


def _loop(store, tmp):
    a, b = tmp / "a.zarr", tmp / "b.zarr"
    a.symlink_to(b)
    b.symlink_to(a)
    return a


def _tarred(store, tmp):
    archive = tmp / "tiny.zarr.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(store, arcname="tiny.zarr")
    return archive


def _v2(store, tmp):
    v2 = tmp / "v2.zarr"
    v2.mkdir()
    (v2 / ".zgroup").write_text('{"zarr_format": 2}')
    (v2 / "train").mkdir()
    (v2 / "train" / ".zgroup").write_text('{"zarr_format": 2}')
    return v2


def _stray(store, tmp):
    for folder in (store / "train/images/c", store / "train/images/c/1", store / "test/labels/c"):
        (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (store / "train/images/c/._0").write_bytes(b"AppleDouble")
    return store


def _extra_chunk(store, tmp):
    shutil.copy(_chunk_file(store, "train/labels", 0), store / "train/labels/c/9")
    return store


def _chunk_as_folder(store, tmp):
    path = _chunk_file(store, "test/images", 1)
    path.unlink()
    path.mkdir()
    return store


def _symlinked_chunk(store, tmp):
    path = _chunk_file(store, "train/images", 2)
    path.unlink()
    path.symlink_to(_chunk_file(store, "train/images", 3))
    return store


def _foreign_labels(store, tmp):
    other = write_dataset(tmp / "other-idx", synthetic_arrays(seed=7))
    other_store = prepare_dataset(
        PrepConfig(out=tmp / "other.zarr", source=str(other), name="tiny", chunk_size=CHUNK)
    )
    shutil.copy(_chunk_file(other_store, "train/labels", 1), _chunk_file(store, "train/labels", 1))
    shutil.rmtree(other_store)
    return store


def _images_folder_is_a_file(store, tmp):
    shutil.rmtree(store / "test/images")
    (store / "test/images").write_bytes(b"not a folder")
    return store


STORE_DAMAGE = [
    Damage(
        "train label 255 (digest updated)",
        _rewritten_labels("train", 2, 255, False),
        "train/labels: chunk 2 (rows 128-191) holds label 255, outside 0-9",
    ),
    Damage(
        "test label 11 (digest updated)",
        _rewritten_labels("test", 1, 11, False),
        "test/labels: chunk 1 (rows 64-99) holds label 11, outside 0-9",
    ),
    Damage(
        "train label 255 (digest kept)",
        _rewritten_labels("train", 0, 255, True),
        "train/labels: chunk 0 (rows 0-63, file c/0) is damaged: it decodes, but its rows are not the ones",
    ),
    Damage(
        "two image chunks swapped",
        _swapped("train/images", 1, 3),  # whichever of the two is read first
        "is damaged: it decodes, but its rows are not the ones written there (their SHA-256 differs from the "
        "one "
        "recorded when the store was made); it holds the rows of chunk ",
    ),
    Damage("two label chunks swapped", _swapped("train/labels", 0, 2), "(chunk files moved or swapped)"),
    Damage(
        "an image chunk copied over another",
        _copied_over("train/images", 0, 1),
        "train/images: chunk 1 (rows 64-127, file c/1/0/0) is damaged: it decodes, but its rows are not the "
        "ones "
        "written there (their SHA-256 differs from the one recorded when the store was made); it holds the "
        "rows "
        "of chunk 0 (chunk files moved or swapped)",
    ),
    Damage("a chunk that is a symlink to another", _symlinked_chunk, "it holds the rows of chunk 3"),
    Damage("labels chunk from another store", _foreign_labels, "train/labels: chunk 1 (rows 64-127"),
    Damage(
        "0-byte labels chunk",
        _bytes("train/labels", 1, lambda data: b""),
        "the chunk file is empty (0 bytes)",
    ),
    Damage(
        "0-byte images chunk", _bytes("test/images", 0, lambda data: b""), "the chunk file is empty (0 bytes)"
    ),
    Damage(
        "a flipped byte in an images chunk",
        _bytes("train/images", 2, _flip),
        "its CRC32C checksum does not match",
    ),
    Damage("a flipped byte in a labels chunk", _bytes("test/labels", 0, _flip), "test/labels: chunk 0"),
    Damage(
        "a truncated images chunk", _bytes("train/images", 4, lambda data: data[: len(data) // 3]), "chunk 4"
    ),
    Damage("a zero-filled images chunk", _bytes("train/images", 1, lambda data: bytes(len(data))), "chunk 1"),
    Damage("a deleted labels chunk", _remove("train/labels/c/3"), "1 of 5 chunks are missing (first: c/3)"),
    Damage("a deleted images chunk", _remove("test/images/c/1/0/0"), "1 of 2 chunks are missing"),
    Damage(
        "an extra chunk file",
        _extra_chunk,
        "1 unexpected chunk file(s) outside the array's shape (first: c/9)",
    ),
    Damage("a chunk file that is a folder", _chunk_as_folder, "test/images"),
    Damage("no root zarr.json", _remove("zarr.json"), "is a folder without a zarr.json at its top"),
    Damage(
        "a truncated root zarr.json",
        lambda store, tmp: _replace_file("zarr.json", (store / "zarr.json").read_bytes()[:40])(store, tmp),
        "not a Zarr v3 group",
    ),
    Damage(
        "a NUL-filled root zarr.json",
        lambda store, tmp: _replace_file("zarr.json", bytes(len((store / "zarr.json").read_bytes())))(
            store, tmp
        ),
        "not a Zarr v3 group",
    ),
    Damage(
        "wiped attributes", _meta(".", lambda doc: doc.update(attributes={})), "store is not marked complete"
    ),
    Damage(
        "images of another dtype",
        _meta("train/images", lambda doc: doc.update(data_type="float32")),
        "train/images: expected uint8 [n, h, w], found float32",
    ),
    Damage(
        "images of another shape",
        _meta("test/images", lambda doc: doc["shape"].__setitem__(0, 90)),
        "test: 90 images but 100 labels",
    ),
    Damage(
        "labels shorter than images",
        _meta("train/labels", lambda doc: doc["shape"].__setitem__(0, 299)),
        "train: 300 images but 299 labels",
    ),
    Damage(
        "another chunk shape",
        _meta(
            "train/images", lambda doc: doc["chunk_grid"]["configuration"]["chunk_shape"].__setitem__(0, 65)
        ),
        "train/images",
    ),
    Damage(
        "an array zarr.json that is not JSON",
        _replace_file("test/labels/zarr.json", b'{"zarr_format": 3, '),
        "test/labels: its zarr.json is damaged or not Zarr v3 metadata",
    ),
    Damage("a missing test split", _remove("test"), "missing array test/images"),
    Damage("an images folder that is a file", _images_folder_is_a_file, "test/images"),
    Damage("a dangling symlink as --data", _dangling, "is a symlink to"),
    Damage("a symlink loop as --data", _loop, "is a symlink loop"),
    Damage("a tar file as --data", _tarred, "is a tar archive, not a store folder"),
    Damage("a Zarr v2 store", _v2, "is a Zarr v2 store; this job reads Zarr v3 stores"),
    Damage("stray files in the chunk folders", _stray, None),
]


@pytest.fixture(scope="module")
def clean_result(tiny_store, tmp_path_factory):
    run = tmp_path_factory.mktemp("clean") / "run"
    assert main(["--data", str(tiny_store), "--out", str(run), *QUICK]) == 0
    return json.loads((run / "metrics.json").read_text())


@pytest.mark.parametrize("damage", STORE_DAMAGE, ids=[d.name for d in STORE_DAMAGE])
def test_a_damaged_store_is_one_line_and_nothing_is_written(
    damage, tiny_store, tmp_path, capfd, clean_result
):
    store = tmp_path / "tiny.zarr"
    shutil.copytree(tiny_store, store, symlinks=True)
    data = damage.apply(store, tmp_path)
    before = snapshot(tmp_path)
    run = tmp_path / "run"
    code, output = run_job_cli(capfd, "--data", str(data), "--out", str(run))
    assert "Traceback" not in output, output[-4000:]
    if damage.expect is None:  # carrying on is right: the same result as the undamaged store
        assert code == 0, output[-3000:]
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["fit"]["inertia"] == pytest.approx(clean_result["fit"]["inertia"], rel=1e-12)
        assert metrics["evaluation"]["ari"] == clean_result["evaluation"]["ari"]
        return
    assert code == 1, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and output.strip().splitlines()[-1] == errors[0], output[-3000:]
    assert str(data) in errors[0] and damage.expect in errors[0], errors[0]
    after = snapshot(tmp_path)
    assert after == before  # nothing written (no lock file either), input untouched


# --- run folders ------------------------------------------------------------------------------------


def _config(store: Path, run: Path):
    return config_from_args(build_parser().parse_args(["--data", str(store), "--out", str(run), *QUICK]))


def _stopped_run(store: Path, run: Path) -> Path:
    """The partial folder a killed run leaves: its job.json and a checkpoint after iteration 2."""
    config = _config(store, run)
    partial = checkpoint.start(config, run)
    centers = np.random.default_rng(0).random((3, 784)) * 255
    checkpoint.save(partial, {"centers": centers, "n_iter": 2, "inertia": 1.0, "converged": False})
    return partial


def _orphan_checkpoint(store, run):
    (_stopped_run(store, run) / "job.json").unlink()


def _garbage_checkpoint(store, run):
    (_stopped_run(store, run) / "checkpoint.npz").write_bytes(b"PK\x03\x04 not a zip")


def _garbage_job_record(store, run):
    (_stopped_run(store, run) / "job.json").write_text("{not json")


def _wrong_centers(store, run):
    partial = _stopped_run(store, run)
    checkpoint.save(partial, {"centers": np.zeros((4, 784)), "n_iter": 2, "inertia": 1.0, "converged": False})


def _foreign_file_in_partial(store, run):
    partial = checkpoint.partial_dir(run)
    partial.mkdir()
    (partial / "notes.txt").write_text("mine")


def _garbage_metrics(store, run):
    run.mkdir()
    (run / "metrics.json").write_text("[1, 2")


def _a_file(store, run):
    run.write_text("a file of the user's")


def _dangling_out(store, run):
    run.symlink_to(run.with_name("elsewhere"))


def _complete(store, run):
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"config": {}, "versions": {}}))


RUN_DAMAGE = [
    (
        "a checkpoint whose job.json is gone, resumed",
        _orphan_checkpoint,
        ["--resume"],
        "holds a checkpoint without its job.json",
    ),
    (
        "a checkpoint whose job.json is gone, run anew",
        _orphan_checkpoint,
        [],
        "holds a checkpoint without its job.json",
    ),
    (
        "a checkpoint that is not a zip",
        _garbage_checkpoint,
        ["--resume"],
        "checkpoint.npz: the checkpoint is damaged",
    ),
    ("a job.json that is not JSON", _garbage_job_record, ["--resume"], "job.json: damaged"),
    ("a checkpoint of other centers", _wrong_centers, ["--resume"], "holds centers of shape (4, 784)"),
    (
        "a partial folder with a file of the user's",
        _foreign_file_in_partial,
        [],
        "exists and holds files this job did not write (notes.txt)",
    ),
    (
        "--overwrite on a folder with a damaged metrics.json",
        _garbage_metrics,
        ["--overwrite"],
        "is not a run folder of this job",
    ),
    ("--out naming a file", _a_file, [], "output folder exists"),
    (
        "--out naming a file, --overwrite",
        _a_file,
        ["--overwrite"],
        "exists and is not a folder; it was left untouched",
    ),
    (
        "--out a dangling symlink, --overwrite",
        _dangling_out,
        ["--overwrite"],
        "exists and is not a plain file",
    ),
    (
        "--resume on a complete run",
        _complete,
        ["--resume"],
        "this run is already complete; nothing to resume",
    ),
]


@pytest.mark.parametrize("name, apply, flags, expect", RUN_DAMAGE, ids=[case[0] for case in RUN_DAMAGE])
def test_a_damaged_run_folder_is_one_line_and_left_as_it_is(
    name, apply, flags, expect, tiny_store, tmp_path, capfd
):
    run = tmp_path / "run"
    apply(tiny_store, run)
    before = snapshot(tmp_path)
    args = ["--data", str(tiny_store)] + (
        ["--resume", str(run)] if "--resume" in flags else ["--out", str(run)]
    )
    code, output = run_job_cli(capfd, *args, *[f for f in flags if f != "--resume"])
    assert code == 1 and "Traceback" not in output, output[-3000:]
    last = output.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(run) in last and expect in last, last
    assert snapshot(tmp_path) == before


def test_the_fuzz_covers_at_least_thirty_distinct_cases():
    assert len({d.name for d in STORE_DAMAGE}) + len({case[0] for case in RUN_DAMAGE}) >= 30


# --- the cases above, one by one, where a line is not all there is to check ------------------------------


def test_verify_proves_a_store_is_its_source_and_locates_moved_chunks_and_bad_labels(tiny_store, tmp_path):
    proc = run_module("data_prep", "verify", str(tiny_store))
    assert proc.returncode == 0, proc.stderr[-2000:]
    for component in ("train/images", "train/labels", "test/images", "test/labels"):
        assert f"{component}: identical to the IDX file it was made from" in proc.stdout
        assert f"{component}: every chunk holds the rows recorded when the store was made" in proc.stdout
    store = tmp_path / "tiny.zarr"
    shutil.copytree(tiny_store, store)
    _swap(_chunk_file(store, "train/images", 1), _chunk_file(store, "train/images", 2))
    _write_labels(store, "test", 0, 200, keep_digest=False)
    proc = run_module("data_prep", "verify", str(store))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: {store}/train/images: chunk 1 (rows 64-127, file c/1/0/0) is damaged: it decodes, but its "
        f"rows are "
        "not the ones written there (their SHA-256 differs from the one recorded when the store was made); "
        "it "
        "holds the rows of chunk 2 (chunk files moved or swapped)",
        f"error: {store}/train/images: chunk 2 (rows 128-191, file c/2/0/0) is damaged: it decodes, but its "
        f"rows "
        "are not the ones written there (their SHA-256 differs from the one recorded when the store was "
        "made); it "
        "holds the rows of chunk 1 (chunk files moved or swapped)",
        f"error: {store}/test/labels: chunk 0 holds label 200 (first at row 3), outside 0-9",
        f"error: {store}/test/labels: its rows differ from the IDX file it was made from (SHA-256 "
        f"{errors[3].split('(SHA-256 ')[1]}",
    ], errors
    assert "the provenance records" in errors[3]


def test_a_store_written_before_chunk_digests_still_verifies_against_its_source(tiny_store, tmp_path):
    """An older store records no chunk digests: a moved chunk is still found, by the whole array's SHA-256
    against its source file's, but cannot be located."""
    store = tmp_path / "tiny.zarr"
    shutil.copytree(tiny_store, store)
    for component in ("train/images", "train/labels", "test/images", "test/labels"):
        _edit_json(store / component / "zarr.json", lambda doc: doc["attributes"].pop(DIGEST_ATTR))
    proc = run_module("data_prep", "verify", str(store))
    assert (
        proc.returncode == 0
        and "identical to the IDX file" in proc.stdout
        and "every chunk holds" not in proc.stdout
    )
    _swap(_chunk_file(store, "train/images", 0), _chunk_file(store, "train/images", 3))
    proc = run_module("data_prep", "verify", str(store))
    assert proc.returncode == 1, proc.stdout
    assert f"error: {store}/train/images: its rows differ from the IDX file it was made from" in proc.stderr


def _bomb(path: Path) -> Path:
    from PIL import Image

    Image.new("1", (20_000, 20_000)).save(path)  # 400 M pixels in a ~50 KB file
    return path


def test_predict_refuses_a_decompression_bomb_without_decoding_it(tiny_store, tmp_path, capfd):
    run = tmp_path / "run"
    assert run_job_cli(capfd, "--data", str(tiny_store), "--out", str(run))[0] == 0
    bomb = _bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 200_000
    proc = run_module("job.predict", str(run), str(bomb))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {bomb}: declares 400000000 pixels, more than the 89,478,485 an image may have here "
        "(a decompression bomb?); it was not decoded"
    )
    assert not (run / "predictions.csv").exists()


def test_predict_on_a_store_with_a_group_where_the_images_belong_is_one_line(tiny_store, tmp_path, capfd):
    import zarr

    run = tmp_path / "run"
    assert run_job_cli(capfd, "--data", str(tiny_store), "--out", str(run))[0] == 0
    odd = tmp_path / "odd.zarr"
    zarr.open_group(str(odd), mode="w").create_group("images")
    proc = run_module("job.predict", str(run), str(odd))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {odd}/images: a Zarr group where an array was expected"
    )
    assert not (run / "predictions.csv").exists()


@pytest.mark.skipif(
    os.geteuid() != 0 and os.environ.get("CI") != "true",
    reason="mounting a small tmpfs needs root; under CI=true it always runs (and fails without root)",
)
def test_predict_on_a_full_disk_is_one_line_and_leaves_no_file(tiny_store, tmp_path, capfd):
    run = tmp_path / "run"
    assert run_job_cli(capfd, "--data", str(tiny_store), "--out", str(run))[0] == 0
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(disk)], check=True)
    try:
        proc = run_module(
            "job.predict", str(run), str(tiny_store / "train"), "--out", str(disk / "predictions.csv")
        )
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert proc.stderr.strip().splitlines()[-1] == (
            f"error: {disk / 'predictions.csv'}: cannot write the predictions (No space left on device); "
            "nothing was kept"
        )
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.parametrize(
    "flags",
    [["--memory-limit", "150MiB"], ["--memory-limit", "250MiB", "--persist", "always"]],
    ids=["too-small-to-start", "too-small-to-fit"],
)
def test_workers_out_of_memory_is_one_line_that_says_so(mnist_store, tmp_path, flags):
    """Real workers, really killed by their nannies for passing 95% of their memory limit. (With 250MiB
    they used to pause at 80% instead, holding persisted X, and the job waited forever: the LocalCluster's
    workers now never pause.) Which of distributed's errors surfaces first, a KilledWorker or a closed
    comm, depends on timing: the sentence says the same either way."""
    run = tmp_path / "run"
    proc = run_module(
        "job",
        "--data",
        str(mnist_store),
        "--out",
        str(run),
        "--dashboard-address",
        "127.0.0.1:0",
        "--silhouette-sample",
        "100",
        *flags,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-4000:]
    last = proc.stderr.strip().splitlines()[-1]
    limit = flags[1].replace("MiB", " MiB")
    assert (
        last.startswith("error: the workers ran out of memory ") and f"more than 95% of {limit} each" in last
    )
    assert "give each worker more memory (--memory-limit" in last, last
    assert list(tmp_path.iterdir()) == []  # no run folder, no partial, no lock file


def test_a_mirror_password_reaches_no_file_and_no_console(http_server, tmp_path):
    """The password is used (the server refuses requests without it) and written nowhere: not in the log
    (pooch's own logger included, shown with --debug), not in the store's provenance, the cache, the run."""
    source = write_dataset(tmp_path / "served", synthetic_arrays())
    mirror = http_server(source, auth="reader:hunter2").replace("http://", "http://reader:hunter2@")
    prep = run_module(
        "data_prep",
        "--source",
        "download",
        "--mirror",
        mirror,
        "--name",
        "tiny",
        "--chunk-size",
        "64",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(tmp_path / "prep.zarr"),
        "--debug",
    )
    assert prep.returncode == 0, prep.stderr[-3000:]
    assert "Downloading file" in prep.stderr  # pooch's own line, masked
    job = run_module(
        "job",
        "--data",
        str(tmp_path / "job.zarr"),
        "--source",
        "download",
        "--mirror",
        mirror,
        "--name",
        "tiny",
        "--chunk-size",
        "64",
        "--cache-dir",
        str(tmp_path / "cache2"),
        "--out",
        str(tmp_path / "run"),
        "--k",
        "3",
        "--silhouette-sample",
        "50",
        "--dashboard-address",
        "127.0.0.1:0",
    )
    assert job.returncode == 0, job.stderr[-3000:]
    assert any(hits for path, hits in http_server.hits.items() if path.endswith(".gz"))
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "served" not in p.parts]
    assert len(written) > 20
    leaks = [str(p) for p in written if b"hunter2" in p.read_bytes()]
    assert leaks == []
    for proc in (prep, job):
        assert "hunter2" not in proc.stdout + proc.stderr
    assert "reader:***@127.0.0.1" in prep.stderr
    provenance = json.loads((tmp_path / "prep.zarr" / "zarr.json").read_text())["attributes"]["provenance"]
    assert {meta["origin"] for meta in provenance["files"].values()} == {
        mirror.replace("hunter2", "***") + stem + ".gz" for stem in provenance["files"]
    }


def test_a_tls_key_open_to_others_is_refused(tmp_path):
    from job.deploy.base import SecurityConfig
    from job.errors import ConfigError

    files = {name: tmp_path / f"{name}.pem" for name in ("ca_file", "cert", "key")}
    for path in files.values():
        path.write_text("-----BEGIN-----\n")
    for mode, who in ((0o644, "everyone"), (0o640, "its group")):
        files["key"].chmod(mode)
        with pytest.raises(ConfigError) as caught:
            SecurityConfig(**{name: str(path) for name, path in files.items()})
        assert str(caught.value) == (
            f"security.key: {files['key']} is open to {who} (mode {mode:04o}); a private key "
            f"must be readable by its owner only: chmod 600 {files['key']}"
        )
    files["key"].chmod(0o600)
    SecurityConfig(**{name: str(path) for name, path in files.items()})


class HoldAtLabelCheck(WorkerPlugin):
    """Hold the first label-check task of the job (read while the job holds its lock on the store) until
    the test has done what it must meanwhile: `<folder>/entered` appears when it is held, and it goes on
    when `<folder>/released` exists (at most 120 s). Deterministic: no race with the clock."""

    def __init__(self, folder: str):
        self.folder = folder

    def transition(self, key, start, finish, **kwargs):
        name = key[0] if isinstance(key, tuple) else str(key)
        if finish != "executing" or not name.startswith("_label_maxima-"):
            return
        try:
            os.close(os.open(os.path.join(self.folder, "entered"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        deadline = time.monotonic() + 120
        while not os.path.exists(os.path.join(self.folder, "released")) and time.monotonic() < deadline:
            time.sleep(0.05)


def test_a_store_is_not_replaced_while_a_job_reads_it(tmp_path):
    from distributed import Client, LocalCluster

    from job import JobConfig, run_job

    source = write_dataset(tmp_path / "idx", synthetic_arrays())
    store = prepare_dataset(
        PrepConfig(out=tmp_path / "tiny.zarr", source=str(source), name="tiny", chunk_size=CHUNK)
    )
    before = snapshot(store)
    overwrite = ["data_prep", "--source", str(source), "--name", "tiny", "--out", str(store), "--overwrite"]
    results = []
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, dashboard_address="127.0.0.1:0", host="127.0.0.1"
        ) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(HoldAtLabelCheck(str(tmp_path)))
        config = JobConfig(data=store, out=tmp_path / "run", k=3, silhouette_sample=50)
        job = threading.Thread(target=lambda: results.append(run_job(config, client=client)))
        job.start()
        deadline = time.monotonic() + 120
        while not (tmp_path / "entered").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (tmp_path / "entered").exists()
        proc = run_module(*overwrite)
        (tmp_path / "released").touch()
        job.join(timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {store}: a job is reading this store; replace it once the job has finished"
    )
    assert snapshot(store) == before
    assert results and (tmp_path / "run" / "metrics.json").exists()
    assert run_module(*overwrite).returncode == 0  # once the job is done, --overwrite replaces it


def test_two_runs_with_default_names_never_share_a_folder(tmp_path):
    from job.run_folder import exclusive

    base = tmp_path / "runs" / "20261202-153000"
    with exclusive(base, pick_free=True) as first, exclusive(base, pick_free=True) as second:
        assert (first, second) == (base, base.with_name(base.name + "-2"))
        assert {p.name for p in base.parent.iterdir()} == {".20261202-153000.lock", ".20261202-153000-2.lock"}
    assert list(base.parent.iterdir()) == []  # both locks removed on the way out
    base.mkdir()  # a finished run of that second
    with exclusive(base, pick_free=True) as third:
        assert third == base.with_name(base.name + "-2")
    with pytest.raises(JobError, match="another job is writing this run folder"):
        with exclusive(base) as mine, exclusive(mine):
            pass


def test_a_broken_symlink_as_the_output_store_converts_nothing(tiny_store, tmp_path):
    source = write_dataset(tmp_path / "idx", synthetic_arrays())
    link = tmp_path / "new.zarr"
    link.symlink_to(tmp_path / "gone" / "new.zarr")
    proc = run_module("data_prep", "--source", str(source), "--name", "tiny", "--out", str(link))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {link}: is a symlink to {tmp_path / 'gone' / 'new.zarr'}, which does not exist; it was left "
        "untouched (give the store's real path)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx", "new.zarr"] and link.is_symlink()


def _pause_fraction(dask_worker):
    return dask_worker.memory_manager.memory_pause_fraction


def test_the_local_clusters_workers_never_pause_so_memory_faults_end(tmp_path):
    """What the job's LocalCluster workers really use: no pause threshold (a paused worker holding
    persisted X waited forever), also for a worker its nanny restarted."""
    from contextlib import ExitStack

    from job.deploy.local import LocalConfig

    with ExitStack() as stack:
        client = LocalConfig(n_workers=1, memory_limit="1GiB", dashboard_address="127.0.0.1:0").start(stack)
        client.wait_for_workers(1)
        assert list(client.run(_pause_fraction).values()) == [False]
        client.restart()
        assert list(client.run(_pause_fraction).values()) == [False]


def test_a_local_cluster_left_without_workers_fails_with_a_sentence(monkeypatch):
    """A task of the job's LocalCluster that no worker is left to run fails after NO_WORKERS_TIMEOUT
    instead of waiting forever (every worker gone after repeated memory restarts left the job waiting on
    a loaded machine), and the job says so in one sentence."""
    from contextlib import ExitStack

    from distributed import wait

    from job.deploy import faults, local

    monkeypatch.setattr(local, "NO_WORKERS_TIMEOUT", "1s")
    with ExitStack() as stack:
        client = local.LocalConfig(n_workers=1, memory_limit="1GiB", dashboard_address="127.0.0.1:0").start(
            stack
        )
        client.wait_for_workers(1)
        watch = faults.Watch.start(client)
        client.cluster.scale(0)
        deadline = time.monotonic() + 30
        while client.nthreads() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not client.nthreads()
        future = client.submit(sum, [1, 2], pure=False)
        wait(future, timeout=30)  # distributed's TimeoutError here: still waiting, as before the fix
        with pytest.raises(faults.NO_WORKER_ERRORS) as caught:
            future.result()
        error = faults.explain(client, caught.value, watch)
    assert str(error) == (
        "no worker was left while running sum for 1 s (their nannies did not bring them back); their logs "
        "say why"
    )


def _fail_chunk(block):
    raise MemoryError("a chunk that never fits")


def test_a_persist_that_fails_raises_at_once_and_logs_nothing_persisted(client, caplog):
    """persist_balanced raises a chunk's error as soon as it fails: it used to wait for every other chunk,
    then log "X persisted" over failed chunks and hand them to the fit."""
    import dask.array as da

    from job.engine.persist import persist_balanced

    X = da.zeros((4_000, 10), chunks=(1_000, 10), dtype=np.uint8)
    X = X.map_blocks(_fail_chunk, dtype=np.uint8)
    with caplog.at_level("INFO", logger="job"), pytest.raises(MemoryError, match="never fits"):
        persist_balanced(client, X)
    assert "X persisted" not in caplog.text
